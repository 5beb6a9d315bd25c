// Package secrets keeps the ledger's keys in its data directory: generated on
// first start with mode 0600, created atomically so that instances starting at
// once on an empty directory end up with the same keys.
package secrets

import (
	"crypto/ed25519"
	"crypto/rand"
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
}

type keysFile struct {
	Version      int    `json:"version"`
	SigningSeed  []byte `json:"ed25519_signing_seed"`
	DigestKeyID  string `json:"digest_key_id"`
	DigestKey    []byte `json:"digest_key"`
	SuccessorKey []byte `json:"successor_key"`
	SubjectKey   []byte `json:"subject_key"`
}

// Parse reads keys in the form of keys.json, for instances that get their keys
// from the environment (SESSIONLEDGER_KEYS) rather than a shared data dir.
func Parse(b []byte) (*Set, error) { return parse(b, "SESSIONLEDGER_KEYS") }

// LoadOrCreate reads the keys in dir, generating them first if there are none.
func LoadOrCreate(dir string) (*Set, error) {
	b, err := readOrCreate(dir, KeysFile, func() ([]byte, error) {
		kid := make([]byte, 6)
		f := keysFile{
			Version:      1,
			SigningSeed:  random(ed25519.SeedSize),
			DigestKey:    random(32),
			SuccessorKey: random(32),
			SubjectKey:   random(32),
		}
		_, _ = rand.Read(kid)
		f.DigestKeyID = "d" + base64.RawURLEncoding.EncodeToString(kid)
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
	if f.Version != 1 || len(f.SigningSeed) != ed25519.SeedSize || f.DigestKeyID == "" ||
		len(f.DigestKey) < 32 || len(f.SuccessorKey) < 32 || len(f.SubjectKey) < 32 {
		return nil, fmt.Errorf("secrets: %s is incomplete or of an unknown version", source)
	}
	return &Set{
		SigningKey:   ed25519.NewKeyFromSeed(f.SigningSeed),
		DigestKeyID:  f.DigestKeyID,
		DigestKey:    f.DigestKey,
		SuccessorKey: f.SuccessorKey,
		SubjectKey:   f.SubjectKey,
	}, nil
}

// AdminToken reads the admin token from dir, generating one first if there is
// none. It returns the token and the file's path.
func AdminToken(dir string) (token, path string, err error) {
	b, err := readOrCreate(dir, AdminTokenFile, func() ([]byte, error) {
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

func random(n int) []byte {
	b := make([]byte, n)
	_, _ = rand.Read(b) // crypto/rand.Read never fails (Go ≥ 1.24)
	return b
}

// readOrCreate returns the contents of dir/name, first creating it with the
// output of gen if it does not exist. Creation writes a private temporary file
// and hard-links it into place, which fails if another process got there first;
// then that process's file is read instead.
func readOrCreate(dir, name string, gen func() ([]byte, error)) ([]byte, error) {
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
	tmp, err := os.CreateTemp(dir, "."+name+".*")
	if err != nil {
		return nil, fmt.Errorf("secrets: %w", err)
	}
	defer os.Remove(tmp.Name())
	if err := tmp.Chmod(0o600); err != nil {
		tmp.Close()
		return nil, fmt.Errorf("secrets: %w", err)
	}
	if _, err := tmp.Write(content); err != nil {
		tmp.Close()
		return nil, fmt.Errorf("secrets: write %s: %w", name, err)
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return nil, fmt.Errorf("secrets: sync %s: %w", name, err)
	}
	if err := tmp.Close(); err != nil {
		return nil, fmt.Errorf("secrets: %w", err)
	}
	if err := os.Link(tmp.Name(), path); err != nil && !errors.Is(err, fs.ErrExist) {
		return nil, fmt.Errorf("secrets: create %s: %w", path, err)
	}
	return readPrivate(path)
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
