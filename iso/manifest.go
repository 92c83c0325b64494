package iso

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"maps"
	"path"
	"regexp"
	"slices"
	"strings"

	"github.com/BurntSushi/toml"

	"upgradectl/host"
)

// ManifestName is the product manifest at the root of an image.
const ManifestName = "upgradectl.toml"

// maxManifest bounds what is read of a manifest: it comes from the image,
// which is outside input.
const maxManifest = 64 << 10

// Manifest is the product identity an image carries in ManifestName:
//
//	product = "policy"
//	type = "cmp"
//	version = "12.1.2.0.0_22.1.0"
//	arch = "x86_64"
//	install = "upgrade/install.sh"
//	files = ["/opt/camiant/bin/qp.pl"]
//	upgrades_from = ["12.1.1.*", "12.1.0.0.0_20.1.0"]
//
//	[sha256]
//	"/opt/camiant/bin/qp.pl" = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"
type Manifest struct {
	Product string `toml:"product" json:"product,omitempty"`
	Type    string `toml:"type" json:"type"`
	Version string `toml:"version" json:"version"`
	Arch    string `toml:"arch" json:"arch,omitempty"`
	// Install is the install command, a path relative to the image root.
	Install string `toml:"install" json:"install,omitempty"`
	// Files are the absolute host paths the install replaces.
	Files []string `toml:"files" json:"files,omitempty"`
	// UpgradesFrom are the versions this image can upgrade: exact versions
	// or shell patterns ("12.1.*"). Empty: not declared.
	UpgradesFrom []string `toml:"upgrades_from" json:"upgrades_from,omitempty"`
	// SHA256 is the SHA-256 of the content of files the install puts in
	// place, by path (each one of Files, a regular file): postinstall
	// checks that what is installed is the new version.
	SHA256 map[string]string `toml:"sha256" json:"sha256,omitempty"`
}

// Identity is what an image is: from its manifest when it has one, from its
// file name otherwise.
type Identity struct {
	Product string `json:"product,omitempty"`
	Type    string `json:"type"`
	Version string `json:"version"`
	Arch    string `json:"arch,omitempty"`
	// Source is "manifest" or "file name".
	Source   string    `json:"source"`
	Manifest *Manifest `json:"manifest,omitempty"`
}

// Identity sources.
const (
	FromManifest = "manifest"
	FromFileName = "file name"
)

var (
	// typeRe is a product type: lower-case words joined by "-" ("cmp",
	// "mpe-li"), none starting with a digit.
	typeRe = regexp.MustCompile(`^[a-z][a-z0-9_]*(-[a-z][a-z0-9_]*)*$`)
	// versionRe is a version: starts with a digit, no "-", no blanks.
	versionRe = regexp.MustCompile(`^[0-9][0-9A-Za-z._+~]*$`)
	archRe    = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_]*$`)
)

// ParseManifest reads a manifest and checks every field, reporting every
// problem in one error, not just the first.
func ParseManifest(data []byte) (*Manifest, error) {
	if len(data) > maxManifest {
		return nil, fmt.Errorf("invalid manifest %s: larger than %d bytes", ManifestName, maxManifest)
	}
	data = bytes.TrimPrefix(data, []byte("\xef\xbb\xbf"))
	if err := host.CheckTOMLShape(data); err != nil {
		return nil, fmt.Errorf("invalid manifest %s: %s", ManifestName, err)
	}
	var m Manifest
	md, err := toml.Decode(string(data), &m)
	if err != nil {
		var pe toml.ParseError
		if errors.As(err, &pe) {
			return nil, fmt.Errorf("invalid manifest %s: line %d: %s", ManifestName, pe.Position.Line, pe.Message)
		}
		return nil, fmt.Errorf("invalid manifest %s: %s", ManifestName, strings.ReplaceAll(err.Error(), "\n", " "))
	}
	var p []string
	for _, k := range md.Undecoded() {
		p = append(p, fmt.Sprintf("unknown key %q", k.String()))
	}
	p = append(p, m.validate()...)
	if len(p) > 0 {
		return nil, fmt.Errorf("invalid manifest %s: %s", ManifestName, strings.Join(p, "; "))
	}
	return &m, nil
}

func (m *Manifest) validate() []string {
	var p []string
	switch {
	case m.Type == "":
		p = append(p, "type is missing")
	case !typeRe.MatchString(m.Type):
		p = append(p, fmt.Sprintf("type %q is not lower-case words joined by '-' (like cmp, mpe-li)", m.Type))
	}
	switch {
	case m.Version == "":
		p = append(p, "version is missing")
	case !versionRe.MatchString(m.Version):
		p = append(p, fmt.Sprintf("version %q does not start with a digit or holds '-' or blanks", m.Version))
	}
	if m.Arch != "" && !archRe.MatchString(m.Arch) {
		p = append(p, fmt.Sprintf("arch %q is not a word (like x86_64)", m.Arch))
	}
	if strings.ContainsAny(m.Product, "\x00\n\r") {
		p = append(p, "product holds control characters")
	}
	if m.Install != "" {
		if strings.HasPrefix(m.Install, "/") || !fs.ValidPath(m.Install) {
			p = append(p, fmt.Sprintf("install %q is not a clean path relative to the image root", m.Install))
		}
	}
	for i, f := range m.Files {
		if !strings.HasPrefix(f, "/") || path.Clean(f) != f || f == "/" || strings.ContainsRune(f, 0) {
			p = append(p, fmt.Sprintf("files[%d] %q is not a clean absolute path", i, f))
		}
	}
	for _, f := range slices.Sorted(maps.Keys(m.SHA256)) {
		if !slices.Contains(m.Files, f) {
			p = append(p, fmt.Sprintf("sha256 names %q, which is not one of files", f))
		}
		if d := m.SHA256[f]; len(d) != 64 || strings.Trim(strings.ToLower(d), "0123456789abcdef") != "" {
			p = append(p, fmt.Sprintf("sha256 of %q is not 64 hex digits", f))
		}
	}
	for i, v := range m.UpgradesFrom {
		if v == "" || strings.ContainsAny(v, " \t\n\r\x00") {
			p = append(p, fmt.Sprintf("upgrades_from[%d] %q is not a version", i, v))
		} else if _, err := path.Match(v, ""); err != nil {
			p = append(p, fmt.Sprintf("upgrades_from[%d] %q is not a valid pattern", i, v))
		}
	}
	return p
}

// UpgradesFromVersion reports whether the image declares that it can
// upgrade version v. declared is false when upgrades_from is empty (the
// image says nothing, so nothing can be checked).
func (m *Manifest) UpgradesFromVersion(v string) (ok, declared bool) {
	if m == nil || len(m.UpgradesFrom) == 0 {
		return false, false
	}
	for _, p := range m.UpgradesFrom {
		if p == v {
			return true, true
		}
		if match, err := path.Match(p, v); err == nil && match {
			return true, true
		}
	}
	return false, true
}

// ReadManifest reads ManifestName at the root of an image. An image without
// one gives an error that is fs.ErrNotExist.
func ReadManifest(img fs.FS) (*Manifest, error) {
	f, err := img.Open(ManifestName)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil, err
		}
		return nil, fmt.Errorf("cannot read manifest %s: %w", ManifestName, err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("cannot read manifest %s: %w", ManifestName, err)
	}
	if !fi.Mode().IsRegular() {
		return nil, fmt.Errorf("invalid manifest %s: not a regular file", ManifestName)
	}
	data, err := io.ReadAll(io.LimitReader(f, maxManifest+1))
	if err != nil {
		return nil, fmt.Errorf("cannot read manifest %s: %w", ManifestName, err)
	}
	return ParseManifest(data)
}

// ParseImageName reads the identity from an image file name of the form
// TYPE-VERSION-ARCH.iso, the pattern of the vendor's images
// ("cmp-12.1.2.0.0_22.1.0-x86_64.iso", "mpe-li-12.1.2.0.0_22.1.0-x86_64.iso"):
//
//   - the name ends in ".iso" (any case) and is split at "-";
//   - ARCH is the last field (letters, digits, "_");
//   - VERSION is the field before it and starts with a digit;
//   - TYPE is every field before VERSION, joined by "-"; none of them may
//     start with a digit, and TYPE is lower-cased ("Mpe" is "mpe").
//
// A directory part is ignored.
func ParseImageName(name string) (Identity, error) {
	base := path.Base(strings.ReplaceAll(name, "\\", "/"))
	bad := func(why string) (Identity, error) {
		return Identity{}, fmt.Errorf("cannot tell the product of %s: %s; expected TYPE-VERSION-ARCH.iso (like cmp-12.1.2.0.0_22.1.0-x86_64.iso) or a %s in the image", base, why, ManifestName)
	}
	if len(base) < 4 || !strings.EqualFold(base[len(base)-4:], ".iso") {
		return bad("the name does not end in .iso")
	}
	fields := strings.Split(base[:len(base)-4], "-")
	if len(fields) < 3 {
		return bad("the name has fewer than three '-' separated fields")
	}
	arch := fields[len(fields)-1]
	version := fields[len(fields)-2]
	typ := strings.ToLower(strings.Join(fields[:len(fields)-2], "-"))
	switch {
	case !archRe.MatchString(arch):
		return bad(fmt.Sprintf("arch %q is not a word", arch))
	case !versionRe.MatchString(version):
		return bad(fmt.Sprintf("version %q does not start with a digit", version))
	case !typeRe.MatchString(typ):
		return bad(fmt.Sprintf("type %q is not words that start with a letter", typ))
	}
	return Identity{Type: typ, Version: version, Arch: arch, Source: FromFileName}, nil
}

// IdentityOf is the identity of the image img whose file is named name: its
// manifest when it has one (an invalid manifest is an error, never a reason
// to fall back to the name), else the file name.
func IdentityOf(img fs.FS, name string) (Identity, error) {
	m, err := ReadManifest(img)
	switch {
	case err == nil:
		return Identity{Product: m.Product, Type: m.Type, Version: m.Version, Arch: m.Arch, Source: FromManifest, Manifest: m}, nil
	case errors.Is(err, fs.ErrNotExist):
		return ParseImageName(name)
	default:
		return Identity{}, err
	}
}

// SameType reports whether two product types are the same (case does not
// matter: a configuration may say "CMP").
func SameType(a, b string) bool { return strings.EqualFold(a, b) }
