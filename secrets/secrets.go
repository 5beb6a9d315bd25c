// Package secrets keeps the ledger's keys in its data directory: generated on
// first start with mode 0600, created atomically so that instances starting at
// once on an empty directory end up with the same keys.
package secrets

import (
	"crypto/ed25519"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
)

// File names inside the data directory.
const (
	KeysFile       = "keys.json"
	AdminTokenFile = "admin-token"
)

// AdminTokenPrefix marks admin tokens, for secret scanners.
const AdminTokenPrefix = "slat_"

// Set holds the ledger's keys.
type Set struct {
	SigningKey   ed25519.PrivateKey // signs access tokens
	DigestKeyID  string             // names DigestKey in events
	DigestKey    []byte             // keyed digests of refresh tokens
	SuccessorKey []byte             // derives refresh-token successors
	SubjectKey   []byte             // keyed digest of user ids in subjects
	// TagKeyID names TagKey, which tags every appended event and seals
	// snapshots (integrity.TagKeys).
	TagKeyID string
	TagKey   []byte
	// CheckpointKeyID names CheckpointKey, which signs checkpoints; its
	// public half is published for auditors.
	CheckpointKeyID string
	CheckpointKey   ed25519.PrivateKey
	// KeyringKey encrypts the records of rotated keys (package keyring),
	// which are kept in NATS: NATS never holds it.
	KeyringKey []byte
}

type keysFile struct {
	Version      int    `json:"version"`
	SigningSeed  []byte `json:"ed25519_signing_seed"`
	DigestKeyID  string `json:"digest_key_id"`
	DigestKey    []byte `json:"digest_key"`
	SuccessorKey []byte `json:"successor_key"`
	SubjectKey   []byte `json:"subject_key"`
	// Since version 2. A version 1 file gets them derived from its digest
	// key (deriveV1), so that instances sharing it agree without rewriting it.
	TagKeyID        string `json:"tag_key_id,omitempty"`
	TagKey          []byte `json:"tag_key,omitempty"`
	CheckpointKeyID string `json:"checkpoint_key_id,omitempty"`
	CheckpointSeed  []byte `json:"ed25519_checkpoint_seed,omitempty"`
	// Since keys rotate. A file without it gets one derived from its
	// subject key (which never rotates), so that instances sharing it agree
	// without rewriting it.
	KeyringKey []byte `json:"keyring_key,omitempty"`
}

// Parse reads keys in the form of keys.json, for instances that get their keys
// from the environment (SESSIONLEDGER_KEYS) rather than a shared data dir.
func Parse(b []byte) (*Set, error) { return parse(b, "SESSIONLEDGER_KEYS") }

// LoadOrCreate reads the keys in dir, generating them first if there are none.
func LoadOrCreate(dir string) (*Set, error) {
	b, err := ReadOrCreate(dir, KeysFile, func() ([]byte, error) {
		f := keysFile{
			Version:         2,
			SigningSeed:     random(ed25519.SeedSize),
			DigestKeyID:     keyID("d"),
			DigestKey:       random(32),
			SuccessorKey:    random(32),
			SubjectKey:      random(32),
			TagKeyID:        keyID("t"),
			TagKey:          random(32),
			CheckpointKeyID: keyID("c"),
			CheckpointSeed:  random(ed25519.SeedSize),
			KeyringKey:      random(32),
		}
		return json.MarshalIndent(f, "", "  ")
	})
	if err != nil {
		return nil, err
	}
	return parse(b, filepath.Join(dir, KeysFile))
}

func parse(b []byte, source string) (*Set, error) {
	var f keysFile
	if err := json.Unmarshal(b, &f); err != nil {
		return nil, fmt.Errorf("secrets: %s is not valid keys JSON", source)
	}
	if f.Version == 1 && f.TagKey == nil && f.CheckpointSeed == nil {
		f.deriveV1()
	}
	if f.KeyringKey == nil && len(f.SubjectKey) >= 32 {
		m := hmac.New(sha256.New, f.SubjectKey)
		m.Write([]byte("sessionledger derived key v1\x00keyring"))
		f.KeyringKey = m.Sum(nil)
	}
	if (f.Version != 1 && f.Version != 2) || len(f.SigningSeed) != ed25519.SeedSize || f.DigestKeyID == "" ||
		len(f.DigestKey) < 32 || len(f.SuccessorKey) < 32 || len(f.SubjectKey) < 32 ||
		f.TagKeyID == "" || len(f.TagKey) < 32 || f.CheckpointKeyID == "" || len(f.CheckpointSeed) != ed25519.SeedSize || len(f.KeyringKey) < 32 {
		return nil, fmt.Errorf("secrets: %s is incomplete or of an unknown version", source)
	}
	return &Set{
		SigningKey:      ed25519.NewKeyFromSeed(f.SigningSeed),
		DigestKeyID:     f.DigestKeyID,
		DigestKey:       f.DigestKey,
		SuccessorKey:    f.SuccessorKey,
		SubjectKey:      f.SubjectKey,
		TagKeyID:        f.TagKeyID,
		TagKey:          f.TagKey,
		CheckpointKeyID: f.CheckpointKeyID,
		CheckpointKey:   ed25519.NewKeyFromSeed(f.CheckpointSeed),
		KeyringKey:      f.KeyringKey,
	}, nil
}

// deriveV1 gives a version 1 file (written before events were tagged) its
// tag and checkpoint keys, derived from its digest key with HMAC-SHA256 under
// labels of their own: every instance sharing the file derives the same keys,
// and the file is not rewritten.
func (f *keysFile) deriveV1() {
	derive := func(label string) []byte {
		m := hmac.New(sha256.New, f.DigestKey)
		m.Write([]byte("sessionledger derived key v1\x00" + label))
		return m.Sum(nil)
	}
	f.TagKeyID, f.TagKey = "t"+f.DigestKeyID, derive("event tag")
	f.CheckpointKeyID, f.CheckpointSeed = "c"+f.DigestKeyID, derive("checkpoint signing seed")
}

// keyID returns a fresh key id: prefix and 8 random base64url characters.
func keyID(prefix string) string {
	return prefix + base64.RawURLEncoding.EncodeToString(random(6))
}

// AdminToken reads the admin token from dir, generating one first if there is
// none. It returns the token and the file's path.
func AdminToken(dir string) (token, path string, err error) {
	b, err := ReadOrCreate(dir, AdminTokenFile, func() ([]byte, error) {
		return []byte(AdminTokenPrefix + base64.RawURLEncoding.EncodeToString(random(32)) + "\n"), nil
	})
	if err != nil {
		return "", "", err
	}
	token = strings.TrimSpace(string(b))
	if len(token) < 16 {
		return "", "", fmt.Errorf("secrets: %s holds no usable admin token", filepath.Join(dir, AdminTokenFile))
	}
	return token, filepath.Join(dir, AdminTokenFile), nil
}

// ReadAdminToken reads the admin token in dir without generating one.
func ReadAdminToken(dir string) (string, error) {
	path := filepath.Join(dir, AdminTokenFile)
	b, err := readPrivate(path)
	if err != nil {
		return "", fmt.Errorf("secrets: admin token: %w", err)
	}
	token := strings.TrimSpace(string(b))
	if len(token) < 16 {
		return "", fmt.Errorf("secrets: %s holds no usable admin token", path)
	}
	return token, nil
}

func random(n int) []byte {
	b := make([]byte, n)
	_, _ = rand.Read(b) // crypto/rand.Read never fails (Go ≥ 1.24)
	return b
}

// ReadOrCreate returns the contents of dir/name, first creating it with the
// output of gen if it does not exist. Creation writes a private temporary file
// and hard-links it into place, which fails if another process got there first;
// then that process's file is read instead. Besides the keys, serve keeps the
// data dir's stream record this way, so instances sharing the dir agree.
func ReadOrCreate(dir, name string, gen func() ([]byte, error)) ([]byte, error) {
	path := filepath.Join(dir, name)
	b, err := readPrivate(path)
	if !errors.Is(err, fs.ErrNotExist) {
		return b, err
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("secrets: %w", err)
	}
	content, err := gen()
	if err != nil {
		return nil, fmt.Errorf("secrets: generate %s: %w", name, err)
	}
	tmp, err := writeTemp(dir, name, content, nil)
	if err != nil {
		return nil, err
	}
	defer os.Remove(tmp)
	if err := os.Link(tmp, path); err != nil && !errors.Is(err, fs.ErrExist) {
		return nil, fmt.Errorf("secrets: create %s: %w", path, err)
	}
	return readPrivate(path)
}

// writeTemp writes content to a new private (0600) file in dir, synced,
// named after name, and returns its path for the caller to link or rename
// into place and then remove. prepare, if set, runs on the file first.
func writeTemp(dir, name string, content []byte, prepare func(*os.File) error) (string, error) {
	tmp, err := os.CreateTemp(dir, "."+name+".*")
	if err != nil {
		return "", fmt.Errorf("secrets: %w", err)
	}
	err = tmp.Chmod(0o600)
	if err == nil && prepare != nil {
		err = prepare(tmp)
	}
	if err == nil {
		_, err = tmp.Write(content)
	}
	if err == nil {
		err = tmp.Sync()
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		os.Remove(tmp.Name())
		return "", fmt.Errorf("secrets: write %s: %w", name, err)
	}
	return tmp.Name(), nil
}

// readPrivate reads path, refusing a file that others can read.
func readPrivate(path string) ([]byte, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return nil, err
	}
	if fi.Mode().Perm()&0o077 != 0 {
		return nil, fmt.Errorf("secrets: %s is accessible by group or others (mode %v); chmod 600 it", path, fi.Mode().Perm())
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("secrets: %w", err)
	}
	return b, nil
}
