package stage

import (
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"upgradectl/host"
)

// FuzzLoadState: a state file changed by hand, cut short or written by
// another program is an error, never a panic, and what loads has every
// stage in order.
func FuzzLoadState(f *testing.F) {
	good := newState(time.Unix(0, 0))
	good.Stages[0].Status = Done
	good.Stages[1].Status = Running
	good.Stages[1].Data = map[string]string{"k": "v"}
	dir := f.TempDir()
	if err := saveState(dir, good); err != nil {
		f.Fatal(err)
	}
	b, _ := os.ReadFile(filepath.Join(dir, StateFile))
	f.Add(b)
	f.Add(b[:len(b)/2])
	f.Add([]byte(`{"format":1}`))
	f.Add([]byte(`{"format":1,"stages":[{"name":"clean"}]}`))
	f.Add([]byte(`{"format":2}`))
	f.Add([]byte(`[]`))
	f.Fuzz(func(t *testing.T, data []byte) {
		d := t.TempDir()
		if err := os.WriteFile(filepath.Join(d, StateFile), data, 0o644); err != nil {
			t.Fatal(err)
		}
		st, err := loadState(d)
		if err != nil {
			return
		}
		for i, n := range Order {
			if st.Stage(n) == nil || st.Stages[i].Name != n {
				t.Fatalf("loaded state lacks stage %s", n)
			}
			if !slices.Contains([]Status{NotStarted, Running, Done, Failed, Undoing, UndoFailed, Undone}, st.Stages[i].Status) {
				t.Fatalf("stage %s loaded with the status %q", n, st.Stages[i].Status)
			}
		}
		nextText(st)
		st.RunningVersion()
	})
}

func TestLoadStateRefuses(t *testing.T) {
	good, err := json.Marshal(newState(time.Now()))
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		data string
		kind host.Kind
		msg  string
	}{
		{`{}`, host.KindBad, "it has no format number"},
		{`null`, host.KindBad, "it has no format number"},
		{`{"format":2}`, host.KindCannotRun, "format 2, this upgradectl reads format 1"},
		{strings.Replace(string(good), `"not started"`, `"sideways"`, 1), host.KindBad, `stage setup has the unknown status "sideways"`},
	} {
		d := t.TempDir()
		if err := os.WriteFile(filepath.Join(d, StateFile), []byte(c.data), 0o644); err != nil {
			t.Fatal(err)
		}
		_, err := loadState(d)
		if host.KindOf(err) != c.kind || err == nil || !strings.Contains(err.Error(), c.msg) {
			t.Errorf("%s: %v (kind %d), want kind %d with %q", c.data, err, host.KindOf(err), c.kind, c.msg)
		}
	}
}
