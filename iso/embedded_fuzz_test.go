package iso

import (
	"bytes"
	"encoding/binary"
	"strings"
	"testing"
)

// FuzzEmbeddedMD5 feeds arbitrary application-use areas and volume sizes to
// ReadEmbeddedMD5 and checks what it accepts over a small image: it must
// never panic, divide by zero or read past the data.
func FuzzEmbeddedMD5(f *testing.F) {
	md5 := strings.Repeat("0", 32)
	f.Add("ISO MD5SUM = "+md5+";SKIPSECTORS = 15;RHLISOSTATUS=0;FRAGMENT SUMS = "+strings.Repeat("1", 60)+";FRAGMENT COUNT = 20;", uint32(40))
	f.Add("ISO MD5SUM = "+md5+";SKIPSECTORS = -3;FRAGMENT COUNT = -1;FRAGMENT SUMS = x", uint32(20))
	f.Add("SKIPSECTORS = ;ISO MD5SUM = "+md5+";FRAGMENT COUNT = 60;FRAGMENT SUMS = "+strings.Repeat("f", 60), uint32(1<<31))
	f.Add("ISO MD5SUM = "+md5+";SKIPSECTORS =  +17;FRAGMENT COUNT = 99999999999999999999;", uint32(0))
	f.Fuzz(func(t *testing.T, app string, sectors uint32) {
		img := make([]byte, 40*embSector)
		pvd := img[embSystemArea:]
		pvd[0] = 1
		copy(pvd[1:], "CD001")
		binary.BigEndian.PutUint32(pvd[84:], sectors)
		area := pvd[embAppDataOffset : embAppDataOffset+embAppDataSize]
		copy(area, bytes.Repeat([]byte{' '}, embAppDataSize))
		copy(area, app)
		m, err := ReadEmbeddedMD5(bytes.NewReader(img))
		if err != nil {
			return
		}
		if m.hashedSize() < 0 || m.FragmentCount < 0 {
			t.Fatalf("accepted unusable values %+v", m)
		}
		c := newEmbeddedChecker(m)
		data := img
		if int64(len(data)) > c.total {
			data = data[:c.total]
		}
		for len(data) > 0 {
			n := min(len(data), 3000)
			if c.write(data[:n]) != nil {
				break
			}
			data = data[n:]
		}
		c.result(nil)
	})
}
