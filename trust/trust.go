// Package trust verifies OpenPGP signatures over checksum files with the
// vendor's public keys, using github.com/ProtonMail/go-crypto: detached
// signatures (armored or binary) beside a file, and clearsigned files. It
// adds to the library's checks (bad signature, unknown key, expired or
// revoked key or subkey, expired signature) the refusals of weak
// algorithms: SHA-1, MD5 and RIPEMD-160 signature hashes, and RSA, DSA and
// ElGamal keys under 2048 bits.
package trust

import (
	"bytes"
	"crypto"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/ProtonMail/go-crypto/openpgp"
	"github.com/ProtonMail/go-crypto/openpgp/armor"
	"github.com/ProtonMail/go-crypto/openpgp/clearsign"
	pgperrors "github.com/ProtonMail/go-crypto/openpgp/errors"
	"github.com/ProtonMail/go-crypto/openpgp/packet"

	"upgradectl/host"
)

// SignatureSuffixes are the names of a detached signature beside a file,
// in the order they are looked for.
var SignatureSuffixes = []string{".sig", ".asc", ".gpg", ".sign"}

// MinKeyBits is the smallest RSA, DSA or ElGamal key accepted.
const MinKeyBits = 2048

// Signer is who signed a file.
type Signer struct {
	Fingerprint string    `json:"fingerprint"`
	UserID      string    `json:"user_id,omitempty"`
	KeyFile     string    `json:"key_file,omitempty"`
	SignedAt    time.Time `json:"signed_at"`
	// Signature is the signature file, or "clearsigned".
	Signature string `json:"signature"`
}

func (s *Signer) String() string {
	who := s.Fingerprint
	if s.UserID != "" {
		who = s.UserID + " (" + s.Fingerprint + ")"
	}
	return who
}

// Keyring holds the trusted public keys.
type Keyring struct {
	list   openpgp.EntityList
	fileOf map[*openpgp.Entity]string
	now    func() time.Time
}

// Key describes one loaded key, for the iso.keys check.
type Key struct {
	File        string    `json:"file"`
	Fingerprint string    `json:"fingerprint"`
	UserID      string    `json:"user_id,omitempty"`
	Expires     time.Time `json:"expires,omitempty"` // zero: never
	Revoked     bool      `json:"revoked,omitempty"`
}

// maxKeyFile bounds a key file.
const maxKeyFile = 1 << 20

// LoadKeys reads every regular file in dir (a path on the running system)
// as armored or binary public keys, one or several a file. Files that do
// not parse are reported together; an absent directory is an empty
// keyring.
func LoadKeys(dir string) (*Keyring, error) {
	k := &Keyring{fileOf: map[*openpgp.Entity]string{}, now: time.Now}
	ents, err := os.ReadDir(dir)
	if errors.Is(err, os.ErrNotExist) {
		return k, nil
	}
	if err != nil {
		return nil, host.CannotRun("cannot read keys directory %s: %v", dir, errors.Unwrap(err))
	}
	var problems []string
	for _, e := range ents {
		if !e.Type().IsRegular() && e.Type()&os.ModeSymlink == 0 {
			continue
		}
		p := filepath.Join(dir, e.Name())
		b, err := host.ReadSmallFile(p)
		if err == nil && len(b) > maxKeyFile {
			err = fmt.Errorf("larger than %s", host.FormatSize(maxKeyFile))
		}
		if err != nil {
			problems = append(problems, fmt.Sprintf("%s: %v", e.Name(), unwrap(err)))
			continue
		}
		list, err := parseKeys(b)
		if err != nil {
			problems = append(problems, fmt.Sprintf("%s: %v", e.Name(), err))
			continue
		}
		for _, ent := range list {
			k.fileOf[ent] = e.Name()
		}
		k.list = append(k.list, list...)
	}
	if len(problems) > 0 {
		return k, host.Bad("keys directory %s: %s", dir, strings.Join(problems, "; "))
	}
	return k, nil
}

func parseKeys(b []byte) (openpgp.EntityList, error) {
	var list openpgp.EntityList
	var err error
	if bytes.Contains(b, []byte("-----BEGIN PGP")) {
		list, err = openpgp.ReadArmoredKeyRing(bytes.NewReader(b))
	} else {
		list, err = openpgp.ReadKeyRing(bytes.NewReader(b))
	}
	if err != nil {
		return nil, fmt.Errorf("not OpenPGP public keys: %v", err)
	}
	if len(list) == 0 {
		return nil, errors.New("no key in it")
	}
	return list, nil
}

// Keys lists the loaded keys, by file.
func (k *Keyring) Keys() []Key {
	var out []Key
	now := k.clock()
	for _, e := range k.list {
		key := Key{File: k.fileOf[e], Fingerprint: fmt.Sprintf("%X", e.PrimaryKey.Fingerprint), Revoked: e.Revoked(now)}
		if sig, id := e.PrimarySelfSignature(); sig != nil {
			if id != nil {
				key.UserID = id.Name
			}
			if sig.KeyLifetimeSecs != nil && *sig.KeyLifetimeSecs != 0 {
				key.Expires = e.PrimaryKey.CreationTime.Add(time.Duration(*sig.KeyLifetimeSecs) * time.Second)
			}
		}
		out = append(out, key)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].File < out[j].File })
	return out
}

// clock is the time keys and signatures are judged at.
func (k *Keyring) clock() time.Time {
	if k.now == nil {
		return time.Now()
	}
	return k.now()
}

// Len is the number of keys.
func (k *Keyring) Len() int { return len(k.list) }

// ErrUnsigned says that a file has no signature beside it and is not
// clearsigned.
var ErrUnsigned = errors.New("not signed")

// ErrUnknownKey says that the signature's key is not in the keys
// directory.
var ErrUnknownKey = errors.New("signed by a key that is not in the keys directory")

// IsClearsigned reports whether data is a clearsigned message.
func IsClearsigned(data []byte) bool {
	return bytes.HasPrefix(bytes.TrimLeft(data, "\ufeff\r\n\t "), []byte("-----BEGIN PGP SIGNED MESSAGE-----"))
}

// Verify checks the signature over data, the whole content of the file at
// path as it was read (what is verified is what will be parsed): when data
// is clearsigned, its signature, and the signed text is returned; else a
// detached signature beside path. The error is ErrUnsigned, ErrUnknownKey
// (both wrapped) or a refusal naming what is wrong.
func (k *Keyring) Verify(path string, data []byte) (signed []byte, s *Signer, err error) {
	if IsClearsigned(data) {
		block, rest := clearsign.Decode(data)
		if block == nil {
			return nil, nil, fmt.Errorf("%s: a clearsigned message that does not parse", path)
		}
		if len(bytes.TrimSpace(rest)) > 0 {
			return nil, nil, fmt.Errorf("%s: text after the clearsigned message (not covered by the signature)", path)
		}
		sig, err := k.check(bytes.NewReader(block.Bytes), block.ArmoredSignature.Body, path)
		if err != nil {
			return nil, nil, err
		}
		sig.Signature = "clearsigned"
		return block.Plaintext, sig, nil
	}
	for _, suf := range SignatureSuffixes {
		sp := path + suf
		b, err := host.ReadSmallFile(sp)
		if errors.Is(err, os.ErrNotExist) {
			continue
		}
		if err != nil {
			return nil, nil, fmt.Errorf("cannot read signature %s: %v", sp, unwrap(err))
		}
		body := bytes.NewReader(b)
		var sigReader = (interface{ Read([]byte) (int, error) })(body)
		if bytes.Contains(b, []byte("-----BEGIN PGP SIGNATURE-----")) {
			blk, err := armor.Decode(bytes.NewReader(b))
			if err != nil {
				return nil, nil, fmt.Errorf("signature %s: not an armored signature: %v", sp, err)
			}
			sigReader = blk.Body
		}
		s, err := k.check(bytes.NewReader(data), sigReader, sp)
		if err != nil {
			return nil, nil, err
		}
		s.Signature = sp
		return data, s, nil
	}
	return nil, nil, fmt.Errorf("%s: %w (no %s beside it, not clearsigned)", path, ErrUnsigned, strings.Join(SignatureSuffixes, ", "))
}

func (k *Keyring) check(signed, sig interface{ Read([]byte) (int, error) }, name string) (*Signer, error) {
	cfg := &packet.Config{Time: k.clock, MinRSABits: MinKeyBits}
	s, ent, err := openpgp.VerifyDetachedSignature(k.list, signed, sig, cfg)
	switch {
	case errors.Is(err, pgperrors.ErrUnknownIssuer):
		return nil, fmt.Errorf("%s: %w", name, ErrUnknownKey)
	case errors.Is(err, pgperrors.ErrKeyExpired):
		return nil, fmt.Errorf("%s: the signing key has expired", name)
	case errors.Is(err, pgperrors.ErrKeyRevoked):
		return nil, fmt.Errorf("%s: the signing key is revoked", name)
	case errors.Is(err, pgperrors.ErrSignatureExpired):
		return nil, fmt.Errorf("%s: the signature has expired", name)
	case err != nil:
		return nil, fmt.Errorf("%s: bad signature: %v", name, err)
	}
	// The library accepts these; a vendor's signature must not use them.
	switch s.Hash {
	case crypto.SHA1, crypto.MD5, crypto.RIPEMD160:
		return nil, fmt.Errorf("%s: refused: the signature uses the weak hash %v", name, s.Hash)
	}
	signing := ent.PrimaryKey
	if s.IssuerKeyId != nil {
		for _, sub := range ent.Subkeys {
			if sub.PublicKey.KeyId == *s.IssuerKeyId {
				signing = sub.PublicKey
			}
		}
	}
	switch signing.PubKeyAlgo {
	case packet.PubKeyAlgoRSA, packet.PubKeyAlgoRSASignOnly, packet.PubKeyAlgoDSA, packet.PubKeyAlgoElGamal:
		if bits, err := signing.BitLength(); err != nil || bits < MinKeyBits {
			return nil, fmt.Errorf("%s: refused: the signing key has %d bits, under %d", name, bits, MinKeyBits)
		}
	}
	// A signature made after its key expired (the library looks at the
	// key only as of now).
	if sig, _ := ent.PrimarySelfSignature(); sig != nil && sig.KeyLifetimeSecs != nil && *sig.KeyLifetimeSecs != 0 {
		if s.CreationTime.After(ent.PrimaryKey.CreationTime.Add(time.Duration(*sig.KeyLifetimeSecs) * time.Second)) {
			return nil, fmt.Errorf("%s: the signature was made after its key expired", name)
		}
	}
	out := &Signer{Fingerprint: fmt.Sprintf("%X", ent.PrimaryKey.Fingerprint), KeyFile: k.fileOf[ent], SignedAt: s.CreationTime}
	if _, id := ent.PrimarySelfSignature(); id != nil {
		out.UserID = id.Name
	}
	return out, nil
}

func unwrap(err error) error {
	var pe *os.PathError
	if errors.As(err, &pe) {
		return pe.Err
	}
	return err
}
