package check

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"path"
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
		if _, dup := out[name]; dup {
			continue // getspnam and pam_unix use the first entry of a name
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

// authData is the structured result of auth.password-hash.
type authData struct {
	Accounts []accountData `json:"accounts"`
	// MD5Config lists the settings that give new passwords MD5 hashes.
	MD5Config []string `json:"md5_config,omitempty"`
}

// md5Settings reads the settings that choose the hash of new passwords
// (design 002, 4.6.5): ENCRYPT_METHOD and MD5_CRYPT_ENAB in login.defs,
// pam_unix's md5 option, libuser's crypt_style. It returns "FILE:LINE: TEXT"
// for each that asks for MD5.
func md5Settings(e *env) []string {
	var out []string
	for _, f := range []struct {
		file  string
		parse func(data []byte, file string) []string
	}{
		{"/etc/login.defs", md5LoginDefs},
		{"/etc/pam.d/common-password", md5PAM},
		{"/etc/pam.d/system-auth", md5PAM},
		{"/etc/pam.d/password-auth", md5PAM},
		{"/etc/libuser.conf", md5Libuser},
	} {
		if data, err := e.readFile(f.file); err == nil {
			out = append(out, f.parse(data, f.file)...)
		}
	}
	return out
}

// md5LoginDefs: ENCRYPT_METHOD MD5, or MD5_CRYPT_ENAB yes without an
// ENCRYPT_METHOD (which takes precedence).
func md5LoginDefs(data []byte, file string) []string {
	method, methodLine, md5Enab, md5Line := "", 0, false, 0
	lines(data, "#", func(n int, f []string) {
		if len(f) < 2 {
			return
		}
		switch f[0] {
		case "ENCRYPT_METHOD":
			method, methodLine = strings.ToUpper(f[1]), n
		case "MD5_CRYPT_ENAB":
			md5Enab, md5Line = strings.EqualFold(f[1], "yes"), n
		}
	})
	switch {
	case method == "MD5":
		return []string{fmt.Sprintf("%s:%d: ENCRYPT_METHOD MD5", file, methodLine)}
	case method == "" && md5Enab:
		return []string{fmt.Sprintf("%s:%d: MD5_CRYPT_ENAB yes", file, md5Line)}
	}
	return nil
}

// md5PAM: a password line of pam_unix.so with the md5 option.
func md5PAM(data []byte, file string) []string {
	var out []string
	lines(data, "#", func(n int, fs []string) {
		if len(fs) < 3 || strings.TrimPrefix(fs[0], "-") != "password" {
			return
		}
		// password CONTROL MODULE ARGS...; CONTROL may be [a=b c=d].
		i := 1
		if strings.HasPrefix(fs[1], "[") {
			for i < len(fs) && !strings.HasSuffix(fs[i], "]") {
				i++
			}
		}
		i++
		if i >= len(fs) || path.Base(fs[i]) != "pam_unix.so" {
			return
		}
		if slices.Contains(fs[i+1:], "md5") {
			out = append(out, fmt.Sprintf("%s:%d: pam_unix.so md5", file, n))
		}
	})
	return out
}

// md5Libuser: crypt_style = md5 in the [defaults] section.
func md5Libuser(data []byte, file string) []string {
	var out []string
	section := ""
	lines(data, "#", func(n int, f []string) {
		l := strings.Join(f, " ")
		if strings.HasPrefix(l, "[") {
			section = strings.Trim(l, "[] ")
			return
		}
		k, v, ok := strings.Cut(l, "=")
		if ok && section == "defaults" && strings.TrimSpace(k) == "crypt_style" && strings.EqualFold(strings.TrimSpace(v), "md5") {
			out = append(out, fmt.Sprintf("%s:%d: crypt_style = md5", file, n))
		}
	})
	return out
}

// checkPasswordHash fails when root or a configured account has an MD5
// ($1$) password hash in /etc/shadow: the upgrade expires such passwords.
// Locked accounts count too (unlocking them brings the hash back). It
// warns when login.defs, PAM or libuser would give new passwords MD5
// hashes, so that a fixed password would not stay fixed.
func checkPasswordHash(ctx context.Context, e *env) Result {
	accounts := []string{"root"}
	for _, a := range e.cfg.Checks.Auth.Accounts {
		if !slices.Contains(accounts, a) {
			accounts = append(accounts, a)
		}
	}
	d := authData{Accounts: []accountData{}, MD5Config: md5Settings(e)}
	var notes []string
	if len(d.MD5Config) > 0 {
		notes = append(notes, "new passwords would get MD5 hashes ("+strings.Join(d.MD5Config, "; ")+")")
	}
	data, err := e.readFile("/etc/shadow")
	if err != nil {
		r := Result{Status: Skip, Data: d, Message: "no /etc/shadow under the root"}
		if !errors.Is(err, fs.ErrNotExist) {
			r = unreadable("/etc/shadow", err)
			r.Data = d
		}
		if r.Status == Skip && len(notes) > 0 {
			r.Status, r.Message = Warn, strings.Join(append(notes, r.Message), "; ")
		}
		return r
	}
	shadow := parseShadow(data)
	var md5, missing []string
	for _, a := range accounts {
		s, ok := shadow[a]
		if !ok {
			missing = append(missing, a)
			continue
		}
		ad := accountData{Account: a, Scheme: s.scheme, Locked: s.locked, MD5: s.scheme == "md5"}
		d.Accounts = append(d.Accounts, ad)
		if ad.MD5 {
			md5 = append(md5, a)
		}
	}
	if len(missing) > 0 {
		notes = append(notes, "not in /etc/shadow: "+strings.Join(missing, ", "))
	}
	switch {
	case len(md5) > 0:
		msg := fmt.Sprintf("MD5 password hash (expires during the upgrade) for %s", strings.Join(md5, ", "))
		return Result{Status: Fail, Data: d, Message: strings.Join(append([]string{msg}, notes...), "; ")}
	case len(notes) > 0:
		return Result{Status: Warn, Data: d, Message: strings.Join(notes, "; ")}
	}
	var s []string
	for _, a := range d.Accounts {
		s = append(s, a.Account+" "+a.Scheme)
	}
	return Result{Status: Pass, Data: d, Message: "no MD5 password hashes: " + strings.Join(s, ", ")}
}
