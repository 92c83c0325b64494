package stage

import (
	"os"
	"path/filepath"
	"testing"
	"time"
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
		}
		nextText(st)
		st.RunningVersion()
	})
}
