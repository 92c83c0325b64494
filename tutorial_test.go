package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"upgradectl/host"
	"upgradectl/host/hosttest"
)

// TestTutorial runs the command blocks of docs/tutorial.md in order, in an
// empty directory with the built binary on PATH, as a reader would, and
// checks that each output shown after a block is what the block prints
// ("…" stands for times, dates and paths): the tutorial cannot rot.
func TestTutorial(t *testing.T) {
	hosttest.RequireRoot(t)
	hosttest.RequireCommand(t, "bash", "xorriso", "sha256sum", "md5sum")
	bin := hosttest.Bin(t)
	doc, err := os.ReadFile("docs/tutorial.md")
	if err != nil {
		t.Fatal(err)
	}
	blocks := tutorialBlocks(string(doc))
	if len(blocks) < 8 {
		t.Fatalf("%d command blocks in the tutorial", len(blocks))
	}
	dir := t.TempDir()
	env := filepath.Join(dir, ".env")
	os.WriteFile(env, nil, 0o644)
	path := filepath.Dir(bin) + ":" + os.Getenv("PATH")
	for i, b := range blocks {
		script := "set -e\n. " + env + "\n" + b.cmd + "\nexport -p > " + env + "\n"
		cmd := exec.Command("bash", "-c", script)
		cmd.Dir = dir
		cmd.Env = append(os.Environ(), "PATH="+path)
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("block %d failed: %v\n%s\n--- output:\n%s", i+1, err, b.cmd, out)
		}
		got := strings.Split(string(out), "\n")
		for _, want := range b.want {
			if !slices.ContainsFunc(got, func(l string) bool { return tutorialMatch(strings.TrimRight(l, " "), want) }) {
				t.Errorf("block %d does not print %q:\n%s", i+1, want, out)
			}
		}
	}
}

type tutorialBlock struct {
	cmd  string
	want []string
}

// tutorialBlocks are the ```sh blocks of a page, each with the lines of
// the ```text block that follows it, if any.
func tutorialBlocks(doc string) []tutorialBlock {
	var blocks []tutorialBlock
	lines := strings.Split(doc, "\n")
	for i := 0; i < len(lines); i++ {
		fence := strings.TrimSpace(lines[i])
		if fence != "```sh" && fence != "```text" {
			continue
		}
		j := i + 1
		for j < len(lines) && strings.TrimSpace(lines[j]) != "```" {
			j++
		}
		body := lines[i+1 : j]
		if fence == "```sh" {
			blocks = append(blocks, tutorialBlock{cmd: strings.Join(body, "\n")})
		} else if len(blocks) > 0 {
			for _, l := range body {
				if l = strings.TrimRight(l, " "); l != "" {
					blocks[len(blocks)-1].want = append(blocks[len(blocks)-1].want, l)
				}
			}
		}
		i = j
	}
	return blocks
}

// tutorialMatch: line is want, where each "…" in want stands for any text.
func tutorialMatch(line, want string) bool {
	parts := strings.Split(want, "…")
	if !strings.HasPrefix(line, parts[0]) {
		return false
	}
	rest := line[len(parts[0]):]
	for _, p := range parts[1:] {
		k := strings.Index(rest, p)
		if k < 0 {
			return false
		}
		rest = rest[k+len(p):]
	}
	return len(parts) > 1 && strings.HasSuffix(want, "…") || rest == "" || strings.HasSuffix(line, parts[len(parts)-1])
}

// TestConfigurationDoc: the commented default in docs/configuration.md is
// the one embedded in the binary.
func TestConfigurationDoc(t *testing.T) {
	doc, err := os.ReadFile("docs/configuration.md")
	if err != nil {
		t.Fatal(err)
	}
	_, block, ok := strings.Cut(string(doc), "```toml\n")
	block, _, _ = strings.Cut(block, "```")
	if !ok || strings.TrimSpace(block) != strings.TrimSpace(host.DefaultConfigText()) {
		t.Error("docs/configuration.md's commented default is not host/default.toml: copy it again")
	}
}
