package check

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"slices"
	"strings"
)

// accountData is one checked account: its hash scheme, never the hash.
type accountData struct {
	Account string `json:"account"`
	Scheme  string `json:"scheme"`
	Locked  bool   `json:"locked,omitempty"`
	MD5     bool   `json:"md5"`
}

// shadowEntry is what the check keeps of an /etc/shadow line.
type shadowEntry struct {
	scheme string
	locked bool
}

// parseShadow reads /etc/shadow and keeps, per account, the scheme of its
// password hash: never the hash itself.
func parseShadow(data []byte) map[string]shadowEntry {
	out := map[string]shadowEntry{}
	sc := bufio.NewScanner(bytes.NewReader(data))
	sc.Buffer(make([]byte, 0, 4096), maxLine)
	for sc.Scan() {
		name, rest, ok := strings.Cut(sc.Text(), ":")
		if !ok || name == "" || strings.HasPrefix(name, "#") {
			continue
		}
		hash, _, _ := strings.Cut(rest, ":")
		out[name] = hashScheme(hash)
	}
	return out
}

// hashScheme names the crypt(3) scheme of a shadow password field.
func hashScheme(h string) shadowEntry {
	e := shadowEntry{}
	for strings.HasPrefix(h, "!") {
		e.locked = true
		h = h[1:]
	}
	switch {
	case h == "":
		e.scheme = "no password"
		if e.locked {
			e.scheme = "locked, no password"
		}
	case h == "*" || h == "x":
		e.scheme = "no password login"
	case strings.HasPrefix(h, "$"):
		id, _, _ := strings.Cut(h[1:], "$")
		e.scheme = map[string]string{
			"1": "md5", "2a": "bcrypt", "2b": "bcrypt", "2y": "bcrypt", "5": "sha256", "6": "sha512",
			"y": "yescrypt", "gy": "gost-yescrypt", "7": "scrypt", "sha1": "sha1crypt", "md5": "sun-md5",
		}[id]
		if e.scheme == "" {
			e.scheme = "unknown"
		}
	case len(h) == 13:
		e.scheme = "des"
	default:
		e.scheme = "unknown"
	}
	return e
}

// checkPasswordHash fails when root or a configured account has an MD5
// ($1$) password hash in /etc/shadow: the upgrade expires such passwords.
// Locked accounts count too (unlocking them brings the hash back).
func checkPasswordHash(ctx context.Context, e *env) Result {
	accounts := []string{"root"}
	for _, a := range e.cfg.Checks.Auth.Accounts {
		if !slices.Contains(accounts, a) {
			accounts = append(accounts, a)
		}
	}
	data, err := e.readFile("/etc/shadow")
	if errors.Is(err, fs.ErrNotExist) {
		return Result{Status: Skip, Message: "no /etc/shadow under the root"}
	}
	if err != nil {
		return unreadable("/etc/shadow", err)
	}
	shadow := parseShadow(data)
	out := []accountData{}
	var md5, missing []string
	for _, a := range accounts {
		s, ok := shadow[a]
		if !ok {
			missing = append(missing, a)
			continue
		}
		d := accountData{Account: a, Scheme: s.scheme, Locked: s.locked, MD5: s.scheme == "md5"}
		out = append(out, d)
		if d.MD5 {
			md5 = append(md5, a)
		}
	}
	var notes []string
	if len(missing) > 0 {
		notes = append(notes, "not in /etc/shadow: "+strings.Join(missing, ", "))
	}
	switch {
	case len(md5) > 0:
		msg := fmt.Sprintf("MD5 password hash (expires during the upgrade) for %s", strings.Join(md5, ", "))
		return Result{Status: Fail, Data: out, Message: strings.Join(append([]string{msg}, notes...), "; ")}
	case len(missing) > 0:
		return Result{Status: Warn, Data: out, Message: strings.Join(notes, "; ")}
	}
	var s []string
	for _, d := range out {
		s = append(s, d.Account+" "+d.Scheme)
	}
	return Result{Status: Pass, Data: out, Message: "no MD5 password hashes: " + strings.Join(s, ", ")}
}
