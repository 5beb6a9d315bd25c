package transmit

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"strings"
)

// ErrSealBroken: a sealed value does not open (malformed, altered, or
// sealed under another name or key).
var ErrSealBroken = errors.New("transmit: a sealed secret does not open")

// Sealer encrypts the secrets kept in the delivery bucket (webhook signing
// secrets, receivers' Authorization headers) with a key derived from the
// keyring key: readable by the ledger only, and bound to the record they
// belong to.
type Sealer struct {
	aead   cipher.AEAD
	macKey []byte // tags receivers' access tokens
}

const sealPrefix = "v1."

// NewSealer derives the sealing key from key (at least 32 bytes).
func NewSealer(key []byte) (*Sealer, error) {
	if len(key) < 32 {
		return nil, errors.New("transmit: the sealing key must be at least 32 bytes")
	}
	mac := hmac.New(sha256.New, key)
	mac.Write([]byte("sessionledger delivery secrets v1"))
	block, err := aes.NewCipher(mac.Sum(nil))
	if err != nil {
		return nil, err
	}
	aead, err := cipher.NewGCM(block)
	if err != nil {
		return nil, err
	}
	mac = hmac.New(sha256.New, key)
	mac.Write([]byte("sessionledger receiver access tokens v1"))
	return &Sealer{aead: aead, macKey: mac.Sum(nil)}, nil
}

// tag is the HMAC-SHA256 of data under the access-token key.
func (s *Sealer) tag(data string) []byte {
	mac := hmac.New(sha256.New, s.macKey)
	mac.Write([]byte(data))
	return mac.Sum(nil)
}

// Seal encrypts plaintext for the record name (AES-256-GCM, name as
// additional data): "v1." and base64url of nonce and ciphertext.
func (s *Sealer) Seal(name string, plaintext []byte) (string, error) {
	nonce := make([]byte, s.aead.NonceSize())
	if _, err := rand.Read(nonce); err != nil {
		return "", err
	}
	out := s.aead.Seal(nonce, nonce, plaintext, []byte(name))
	return sealPrefix + base64.RawURLEncoding.EncodeToString(out), nil
}

// Open decrypts what Seal made for name; ErrSealBroken otherwise.
func (s *Sealer) Open(name, sealed string) ([]byte, error) {
	rest, ok := strings.CutPrefix(sealed, sealPrefix)
	if !ok {
		return nil, ErrSealBroken
	}
	b, err := base64.RawURLEncoding.DecodeString(rest)
	if err != nil || len(b) < s.aead.NonceSize()+s.aead.Overhead() {
		return nil, ErrSealBroken
	}
	n := s.aead.NonceSize()
	pt, err := s.aead.Open(nil, b[:n], b[n:], []byte(name))
	if err != nil {
		return nil, ErrSealBroken
	}
	return pt, nil
}
