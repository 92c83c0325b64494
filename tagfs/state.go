package tagfs

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"os"
	"path"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"upgradectl/host"
)

// RecordFile is the name of the record of the tagged set in the state
// directory.
const RecordFile = "tags.json"

// recordFormat is the format version of the record; a newer one is refused.
const recordFormat = 1

// Record is the tagged set of this host and the version lookup switch.
type Record struct {
	Format  int    `json:"format"`
	Version string `json:"version,omitempty"` // the version the tagged copies carry
	// Complete is false while a create is under way (or was interrupted):
	// entries without Type were planned and may not exist yet.
	Complete bool      `json:"complete"`
	Lookup   bool      `json:"lookup"` // this member runs on tagged files
	Bind     bool      `json:"bind"`   // ... through read-only bind mounts
	Updated  time.Time `json:"updated"`
	Files    []Entry   `json:"files"`
}

// Entry is one tagged file.
type Entry struct {
	Path   string `json:"path"`           // host path of the original
	Type   string `json:"type,omitempty"` // "file" or "symlink"; empty: planned, not yet created
	Size   int64  `json:"size,omitempty"`
	Mode   uint32 `json:"mode,omitempty"` // st_mode
	UID    uint32 `json:"uid"`
	GID    uint32 `json:"gid"`
	Mtime  int64  `json:"mtime_ns,omitempty"`
	Digest string `json:"digest,omitempty"` // of the content (a symlink: its target), "xxh64:HEX"
	// The tagged copy's inode and change time once in place: any change
	// to it through the filesystem moves them.
	Ino     uint64 `json:"ino,omitempty"`
	Ctime   int64  `json:"ctime_ns,omitempty"`
	Cloned  bool   `json:"cloned,omitempty"` // a reflink clone, no new data
	Created bool   `json:"-"`                // made by this run (not in the file)
}

// A file name is bytes; JSON strings are UTF-8. A path that is not valid
// UTF-8 is kept byte for byte in path_bytes (base64), beside a readable
// "path" with the bad bytes replaced.
type entryJSON struct {
	entryFields
	PathBytes []byte `json:"path_bytes,omitempty"`
}

type entryFields Entry // Entry's fields without its JSON methods

// MarshalJSON writes the entry, its path byte for byte.
func (e Entry) MarshalJSON() ([]byte, error) {
	return e.appendJSON(nil), nil
}

// appendJSON appends the entry as encoding/json writes an entryJSON (the
// same fields, order and escaping), without reflection: the record of a
// large set is written twice by every create.
func (e Entry) appendJSON(b []byte) []byte {
	b = append(b, `{"path":`...)
	b = appendJSONString(b, e.Path)
	if e.Type != "" {
		b = append(b, `,"type":`...)
		b = appendJSONString(b, e.Type)
	}
	if e.Size != 0 {
		b = strconv.AppendInt(append(b, `,"size":`...), e.Size, 10)
	}
	if e.Mode != 0 {
		b = strconv.AppendUint(append(b, `,"mode":`...), uint64(e.Mode), 10)
	}
	b = strconv.AppendUint(append(b, `,"uid":`...), uint64(e.UID), 10)
	b = strconv.AppendUint(append(b, `,"gid":`...), uint64(e.GID), 10)
	if e.Mtime != 0 {
		b = strconv.AppendInt(append(b, `,"mtime_ns":`...), e.Mtime, 10)
	}
	if e.Digest != "" {
		b = append(b, `,"digest":`...)
		b = appendJSONString(b, e.Digest)
	}
	if e.Ino != 0 {
		b = strconv.AppendUint(append(b, `,"ino":`...), e.Ino, 10)
	}
	if e.Ctime != 0 {
		b = strconv.AppendInt(append(b, `,"ctime_ns":`...), e.Ctime, 10)
	}
	if e.Cloned {
		b = append(b, `,"cloned":true`...)
	}
	if !utf8.ValidString(e.Path) {
		b = append(b, `,"path_bytes":"`...)
		b = base64.StdEncoding.AppendEncode(b, []byte(e.Path))
		b = append(b, '"')
	}
	return append(b, '}')
}

// appendJSONString appends s quoted as encoding/json quotes it: printable
// ASCII that needs no escape as it is, anything else through the encoder.
func appendJSONString(b []byte, s string) []byte {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < 0x20 || c > 0x7e || c == '"' || c == '\\' || c == '<' || c == '>' || c == '&' {
			q, _ := json.Marshal(s)
			return append(b, q...)
		}
	}
	b = append(b, '"')
	b = append(b, s...)
	return append(b, '"')
}

// UnmarshalJSON reads an entry, taking the path from path_bytes if there.
func (e *Entry) UnmarshalJSON(b []byte) error {
	var v entryJSON
	if err := json.Unmarshal(b, &v); err != nil {
		return err
	}
	*e = Entry(v.entryFields)
	if v.PathBytes != nil {
		e.Path = string(v.PathBytes)
	}
	return nil
}

// Tagged is the host path of the entry's tagged copy.
func (e Entry) Tagged() string { return TaggedPath(e.Path) }

const (
	typeFile    = "file"
	typeSymlink = "symlink"
)

func (t *Tags) recordPath() string { return filepath.Join(t.stateDir, RecordFile) }

// Load reads the record; an absent record is an empty one.
func (t *Tags) Load() (*Record, error) {
	b, err := host.ReadRegularFile(t.recordPath())
	if errors.Is(err, os.ErrNotExist) {
		return &Record{Format: recordFormat, Complete: true}, nil
	}
	if err != nil {
		return nil, host.CannotRun("cannot read %s: %v", t.recordPath(), errors.Unwrap(err))
	}
	r := &Record{}
	if err := json.Unmarshal(b, r); err != nil {
		return nil, host.WithHint(host.Bad("cannot read %s: %v", t.recordPath(), err),
			"find the tagged files with 'upgradectl tag list --scan DIR'")
	}
	if r.Format > recordFormat || r.Format < 1 {
		return nil, host.Bad("cannot read %s: format %d, this upgradectl knows format %d", t.recordPath(), r.Format, recordFormat)
	}
	for i, e := range r.Files {
		if !validPath(e.Path) {
			return nil, host.WithHint(host.Bad("cannot read %s: file %d has the invalid path %q", t.recordPath(), i+1, e.Path),
				"find the tagged files with 'upgradectl tag list --scan DIR'")
		}
	}
	return r, nil
}

// save writes the record durably; an empty record with lookup off is
// removed.
func (t *Tags) save(r *Record) error {
	if len(r.Files) == 0 && !r.Lookup && !r.Bind {
		if err := host.RemoveDurable(t.recordPath()); err != nil {
			return host.CannotRun("cannot remove %s: %v", t.recordPath(), err)
		}
		return nil
	}
	r.Format = recordFormat
	r.Updated = time.Now().UTC()
	sort.Slice(r.Files, func(i, j int) bool { return r.Files[i].Path < r.Files[j].Path })
	b, err := marshalRecord(r)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(t.stateDir, 0o755); err != nil {
		return host.CannotRun("cannot create state directory %s: %v", t.stateDir, errors.Unwrap(err))
	}
	if err := host.WriteFileAtomic(t.recordPath(), append(b, '\n'), 0o644); err != nil {
		return host.CannotRun("%w", err)
	}
	return nil
}

// validPath: an entry's path is absolute, clean, not the root, and not
// itself the name of a tagged copy or a temporary.
func validPath(p string) bool {
	if p == "" || p[0] != '/' || p == "/" || path.Clean(p) != p || strings.ContainsRune(p, 0) {
		return false
	}
	name := path.Base(p)
	return !strings.HasPrefix(name, Prefix) && !strings.HasSuffix(name, tmpSuffix)
}

// index maps original paths to their position in r.Files.
func (r *Record) index() map[string]int {
	m := make(map[string]int, len(r.Files))
	for i, e := range r.Files {
		m[e.Path] = i
	}
	return m
}

// drop removes the entries whose paths are in gone.
func (r *Record) drop(gone map[string]bool) {
	if len(gone) == 0 {
		return
	}
	kept := r.Files[:0]
	for _, e := range r.Files {
		if !gone[e.Path] {
			kept = append(kept, e)
		}
	}
	r.Files = kept
	if len(r.Files) == 0 {
		r.Version = ""
		r.Complete = true
	}
}

// marshalRecord writes the record as JSON with one file a line: compact
// for large sets, still readable and diffable.
func marshalRecord(r *Record) ([]byte, error) {
	files := r.Files
	head := *r
	head.Files = nil
	b, err := json.Marshal(head)
	if err != nil {
		return nil, err
	}
	// Replace the trailing "files":null} with the list.
	b = bytes.TrimSuffix(b, []byte(`"files":null}`))
	b = slices.Grow(b, 16+len(files)*192) // an entry with a digest is about 170 bytes
	b = append(b, `"files":[`...)
	for i, e := range files {
		if i > 0 {
			b = append(b, ',')
		}
		b = e.appendJSON(append(b, "\n "...))
	}
	return append(b, "\n]}"...), nil
}

// MarshalJSON writes an empty list as [], never null, so that programs can
// always iterate over it.
func (r Report) MarshalJSON() ([]byte, error) {
	type plain Report
	if r.Done == nil {
		r.Done = []string{}
	}
	return json.Marshal(plain(r))
}

// MarshalJSON writes no problems as [], never null.
func (r CheckReport) MarshalJSON() ([]byte, error) {
	type plain CheckReport
	if r.Problems == nil {
		r.Problems = []Problem{}
	}
	return json.Marshal(plain(r))
}
