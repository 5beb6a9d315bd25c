// Package keyring keeps the ledger's rotating keys: the access-token
// signing keys, the refresh-token keys, the event-tag keys and the checkpoint
// keys. Generation 0 of each kind is the one in keys.json (or
// SESSIONLEDGER_KEYS); later generations are records in a bucket beside the
// stream (eventstore.KeyBucket), each encrypted with AES-256-GCM under a key
// derived from keys.json, which NATS never holds: whoever can read the
// bucket, without keys.json, learns when keys changed and their public ids,
// nothing more. A record is created once and never changed, so instances
// that race to create one agree on the winner (a create fails when the key
// exists), and every instance applies the same schedule.
package keyring

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"
)

// Kinds of keys.
const (
	Signing    = "signing"    // signs access tokens (accesstoken.Key, PKCS #8)
	Token      = "token"      // refresh-token digest and successor keys (domain.TokenKeys)
	Tag        = "tag"        // tags appended events, seals snapshots (integrity.TagKeys)
	Checkpoint = "checkpoint" // signs checkpoints (Ed25519 seed)
	// SET signs the Security Event Tokens of the SSF transmitter (RS256,
	// PKCS #8), a key of its own whatever signs access tokens. It has no
	// generation 0: the first is made in the bucket at start (EnsureSET).
	SET = "set"
)

// Kinds lists the kinds, in the order they are shown.
var Kinds = []string{Signing, Token, Tag, Checkpoint, SET}

// SETAlg is the algorithm of SET keys, the one the CAEP Interoperability
// Profile requires.
const SETAlg = "RS256"

// Record is one generation of one kind of key.
type Record struct {
	Kind string `json:"kind"`
	Gen  uint32 `json:"gen"`
	// ID names the key where it is used: the JWKS kid, the digest key id in
	// events, the tag key id in tags, the checkpoint key id.
	ID  string `json:"id"`
	Alg string `json:"alg,omitempty"` // signing keys: EdDSA, ES256 or RS256
	// Created is when the record was written (the writer's clock); a
	// signing key is published from then on.
	Created time.Time `json:"created"`
	// ActivateAt is when the key takes over: it signs, digests, tags from
	// then on. Generation 0 is active from the start.
	ActivateAt time.Time `json:"activate_at"`
	// RetireAfter (signing keys) is how long a signing key stays in the JWKS
	// after it last signed, as the writer's --max-access-token-ttl and
	// leeway made it: every instance retires keys after the longest of
	// these and its own, so an instance with a shorter setting never drops
	// a key whose tokens another instance made to last longer.
	RetireAfter time.Duration `json:"retire_after,omitempty"`
	// Secret is the key material (never marshalled in the clear): PKCS #8
	// for signing, the digest and successor keys in JSON for token, at
	// least 32 bytes for tag, an Ed25519 seed for checkpoint.
	Secret []byte `json:"-"`
}

// Name is the record's key in the bucket: kind.generation, the generation
// zero-padded so that names sort by generation.
func (r Record) Name() string { return fmt.Sprintf("%s.%010d", r.Kind, r.Gen) }

// parseName splits a bucket key into kind and generation.
func parseName(name string) (kind string, gen uint32, ok bool) {
	kind, g, ok := strings.Cut(name, ".")
	if !ok || len(g) != 10 {
		return "", 0, false
	}
	n, err := strconv.ParseUint(g, 10, 32)
	if err != nil || n == 0 {
		return "", 0, false // generation 0 lives in keys.json, never in the bucket
	}
	for _, k := range Kinds {
		if k == kind {
			return kind, uint32(n), true
		}
	}
	return "", 0, false
}

// sealed is a record as stored: the metadata in the clear, the secret
// encrypted; the metadata and the record's name are the AEAD's additional
// data, so neither can be changed without the record failing to open.
type sealed struct {
	Record
	Nonce  []byte `json:"nonce"`
	Sealed []byte `json:"sealed"`
}

// Cipher encrypts and decrypts records.
type Cipher struct{ aead cipher.AEAD }

// NewCipher returns the record cipher for the keyring key in keys.json: the
// AES-256 key is derived from it with HMAC-SHA256 under a label of its own.
func NewCipher(keyringKey []byte) (*Cipher, error) {
	if len(keyringKey) < 32 {
		return nil, errors.New("keyring: the keyring key must be at least 32 bytes")
	}
	m := hmac.New(sha256.New, keyringKey)
	m.Write([]byte("sessionledger keyring record key v1"))
	block, err := aes.NewCipher(m.Sum(nil))
	if err != nil {
		return nil, err
	}
	aead, err := cipher.NewGCM(block)
	if err != nil {
		return nil, err
	}
	return &Cipher{aead: aead}, nil
}

func additionalData(r Record) ([]byte, error) {
	meta, err := json.Marshal(r) // Secret is not marshalled
	if err != nil {
		return nil, err
	}
	return append([]byte("sessionledger keyring v1\x00"+r.Name()+"\x00"), meta...), nil
}

// Seal encodes r for the bucket.
func (c *Cipher) Seal(r Record) ([]byte, error) {
	r.Created, r.ActivateAt = r.Created.UTC().Round(0), r.ActivateAt.UTC().Round(0) // as they read back
	ad, err := additionalData(r)
	if err != nil {
		return nil, err
	}
	s := sealed{Record: r, Nonce: make([]byte, c.aead.NonceSize())}
	_, _ = rand.Read(s.Nonce)
	s.Sealed = c.aead.Seal(nil, s.Nonce, r.Secret, ad)
	return json.Marshal(s)
}

// Open decodes a record read from the bucket under name. A record that was
// altered, moved to another name, or sealed with another keyring key does
// not open.
func (c *Cipher) Open(name string, b []byte) (Record, error) {
	kind, gen, ok := parseName(name)
	if !ok {
		return Record{}, fmt.Errorf("keyring: %q is not a record name", name)
	}
	var s sealed
	if err := json.Unmarshal(b, &s); err != nil {
		return Record{}, fmt.Errorf("keyring: record %s: %v", name, err)
	}
	if s.Kind != kind || s.Gen != gen || s.ID == "" || len(s.Nonce) != c.aead.NonceSize() {
		return Record{}, fmt.Errorf("keyring: record %s is malformed", name)
	}
	ad, err := additionalData(s.Record)
	if err != nil {
		return Record{}, err
	}
	secret, err := c.aead.Open(nil, s.Nonce, s.Sealed, ad)
	if err != nil {
		return Record{}, fmt.Errorf("keyring: record %s does not open with this ledger's keyring key (altered, or another ledger's)", name)
	}
	r := s.Record
	r.Secret = secret
	return r, nil
}
