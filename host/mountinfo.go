package host

import (
	"bufio"
	"errors"
	"io"
	"os"
	"strconv"
	"strings"
)

// MountInfo is one line of /proc/self/mountinfo.
type MountInfo struct {
	// Root is the path inside its filesystem that is mounted: the file
	// itself for a bind mount of a file, with " //deleted" appended once
	// that file is removed.
	Root   string
	Dir    string // the mount point
	FSType string
	Source string
}

// ReadMountInfo reads this process's mount table, in mount order.
func ReadMountInfo() ([]MountInfo, error) {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return nil, CannotRun("cannot read the mount table: %v", errors.Unwrap(err))
	}
	defer f.Close()
	return ParseMountInfo(f)
}

// ParseMountInfo reads mountinfo lines; lines it cannot read are skipped.
func ParseMountInfo(r io.Reader) ([]MountInfo, error) {
	var out []MountInfo
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		sep := -1
		for i, x := range f {
			if x == "-" && i >= 6 {
				sep = i
				break
			}
		}
		if sep < 0 || len(f) < sep+3 {
			continue
		}
		out = append(out, MountInfo{Root: unescapeMount(f[3]), Dir: unescapeMount(f[4]), FSType: f[sep+1], Source: unescapeMount(f[sep+2])})
	}
	if err := sc.Err(); err != nil {
		return nil, CannotRun("cannot read the mount table: %v", err)
	}
	return out, nil
}

// unescapeMount undoes mountinfo's octal escapes (\040 for a blank).
func unescapeMount(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) {
			if n, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(n))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}
