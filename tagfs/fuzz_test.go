package tagfs

import (
	"encoding/json"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"unicode/utf8"

	"upgradectl/host"
)

// FuzzLoadRecord: the record is read back from disk, where anything may
// have happened to it. Load must not panic, must refuse what it cannot
// read, and what it reads must survive a save and load unchanged.
func FuzzLoadRecord(f *testing.F) {
	f.Add([]byte(`{"format":1,"version":"1.0","complete":true,"lookup":false,"bind":false,"files":[{"path":"/usr/bin/ls","type":"file","size":3,"mode":33261,"uid":0,"gid":0,"mtime_ns":1,"digest":"xxh64:ab"}]}`))
	f.Add([]byte(`{"format":1,"version":"2","complete":false,"lookup":true,"files":[{"path":"/a"},{"path":"/b","type":"symlink"}]}`))
	f.Add([]byte(`{"format":2}`))
	f.Add([]byte(`{"format":0}`))
	f.Add([]byte(`{"format":1,"files":null}`))
	f.Add([]byte(`[]`))
	f.Add([]byte("{\"format\":1,\"files\":[{\"path\":\"\\u0000\"}]"))
	f.Add([]byte(``))
	f.Add([]byte(`{"format":1,"complete":true,"files":[{"path":"/opt/x\ufffd","path_bytes":"L29wdC94/w==","type":"file"},{"path":"/a","path_bytes":"AA=="}]}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		dir := t.TempDir()
		root, err := host.NewRoot(dir)
		if err != nil {
			t.Fatal(err)
		}
		state := filepath.Join(dir, "state")
		os.Mkdir(state, 0o755)
		if err := os.WriteFile(filepath.Join(state, RecordFile), data, 0o644); err != nil {
			t.Fatal(err)
		}
		tg := New(root, nil, state)
		defer tg.Close()
		rec, err := tg.Load()
		if err != nil {
			if k := host.KindOf(err); k != host.KindBad {
				t.Fatalf("error of kind %d: %v", k, err)
			}
			return
		}
		if rec.Format != recordFormat {
			t.Fatalf("format %d accepted", rec.Format)
		}
		if err := tg.save(rec); err != nil {
			t.Fatal(err)
		}
		again, err := tg.Load()
		if err != nil {
			t.Fatalf("saved record does not load: %v", err)
		}
		// An empty set is saved by removing the record: [] and null are
		// the same set.
		a, _ := json.Marshal(append([]Entry{}, rec.Files...))
		b, _ := json.Marshal(append([]Entry{}, again.Files...))
		if string(a) != string(b) || rec.Version != again.Version && len(rec.Files) > 0 {
			t.Fatalf("record changed in a save: %s != %s", a, b)
		}
		// Status and check never panic on what was read.
		tg.State()
		tg.Check(false)
	})
}

// FuzzNames: the names of tagged copies and temporaries never mix up.
func FuzzNames(f *testing.F) {
	for _, s := range []string{"ls", ".Old..ls", "x.upgradectl-tmp", strings.Repeat("a", 255), ".", "a b", "\xff"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, name string) {
		if name == "" || name == "." || name == ".." || strings.ContainsAny(name, "/\x00") || len(name) > 255 {
			return
		}
		tmp := tmpName(name)
		if !IsTemp(tmp) || len(tmp) > 255 || isTagged(tmp) {
			t.Fatalf("tmpName(%q) = %q", name, tmp)
		}
		p := "/d/" + name
		if d, n := splitHost(p); d != "/d" || n != name {
			t.Fatalf("splitHost(%q) = %q %q", p, d, n)
		}
		if d, n := splitHost("/" + name); d != "/" || n != name {
			t.Fatalf("splitHost(/%q) = %q %q", name, d, n)
		}
		if strings.HasSuffix(name, tmpSuffix) || strings.HasPrefix(name, Prefix) {
			return // refused by create
		}
		tagged := TaggedPath(p)
		if IsTemp(filepath.Base(tagged)) || OriginalPath(tagged) != p || OriginalPath(p) != "" {
			t.Fatalf("%q: tagged %q, original of it %q", p, tagged, OriginalPath(tagged))
		}
		if !reflect.DeepEqual(Entry{Path: p}.Tagged(), tagged) {
			t.Fatal("Entry.Tagged differs")
		}
	})
}

// FuzzEntryJSON: the record's entries are written without reflection;
// the bytes are the ones encoding/json writes for the same fields.
func FuzzEntryJSON(f *testing.F) {
	f.Add("/usr/bin/ls", "file", "xxh64:00ff", int64(3), uint32(0o100755), uint32(0), uint32(0), int64(1), uint64(7), int64(-2), true)
	f.Add("/a", "", "", int64(0), uint32(0), uint32(1), uint32(2), int64(0), uint64(0), int64(0), false)
	f.Add("/opt/x\xff", "symlink", "", int64(-1), uint32(0o120777), uint32(1<<31), uint32(5), int64(1<<62), uint64(1<<63), int64(9), false)
	f.Add("/q\"\\<>&\u2028\x01\x7f/é", "file\n", "<>", int64(1), uint32(1), uint32(1), uint32(1), int64(1), uint64(1), int64(1), true)
	f.Fuzz(func(t *testing.T, p, typ, digest string, size int64, mode, uid, gid uint32, mtime int64, ino uint64, ctime int64, cloned bool) {
		e := Entry{Path: p, Type: typ, Digest: digest, Size: size, Mode: mode, UID: uid, GID: gid, Mtime: mtime, Ino: ino, Ctime: ctime, Cloned: cloned, Created: true}
		v := entryJSON{entryFields: entryFields(e)}
		if !utf8.ValidString(p) {
			v.PathBytes = []byte(p)
		}
		want, err := json.Marshal(v)
		if err != nil {
			t.Fatal(err)
		}
		if got := e.appendJSON(nil); string(got) != string(want) {
			t.Fatalf("got  %s\nwant %s", got, want)
		}
	})
}
