package trust

import (
	"os"
	"path/filepath"
	"testing"
)

// FuzzVerify feeds what comes from outside through the entry points: a
// checksum file (clearsigned or not), a signature beside it and a key
// file. Never a panic, and nothing is ever reported signed.
func FuzzVerify(f *testing.F) {
	f.Add([]byte("-----BEGIN PGP SIGNED MESSAGE-----\nHash: SHA256\n\nx  a.iso\n-----BEGIN PGP SIGNATURE-----\n\niQ==\n-----END PGP SIGNATURE-----\n"), []byte("\x88\x00"), []byte("-----BEGIN PGP PUBLIC KEY BLOCK-----\n\nmQ==\n-----END PGP PUBLIC KEY BLOCK-----\n"))
	f.Add([]byte("d41d8cd98f00b204e9800998ecf8427e  a.iso\n"), []byte("-----BEGIN PGP SIGNATURE-----\n\niQ==\n-----END PGP SIGNATURE-----\n"), []byte{0x99, 0x00, 0x01})
	f.Fuzz(func(t *testing.T, data, sig, key []byte) {
		dir := t.TempDir()
		p := filepath.Join(dir, "md5sum.out")
		os.WriteFile(p+".sig", sig, 0o644)
		keys := filepath.Join(dir, "keys.d")
		os.Mkdir(keys, 0o755)
		os.WriteFile(filepath.Join(keys, "k"), key, 0o644)
		k, _ := LoadKeys(keys)
		if k == nil {
			return
		}
		k.Keys()
		if _, s, err := k.Verify(p, data); err == nil || s != nil {
			t.Fatalf("verified with fuzzed keys: %v %v", s, err)
		}
	})
}
