package domain

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
)

// Refresh-token wire format:
//
//	slrt_ base64url( session id (26 bytes, ULID text) | generation (4 bytes, big endian) | secret (32 bytes) )
//
// The prefix lets secret scanners and a cheap syntax check reject garbage
// before any lookup. Generation 0's secret comes from crypto/rand; every later
// secret is derived from the previous token with a server-side key (see
// TokenKeys.Successor), so a retried refresh recomputes the same successor and
// no token is ever stored, only its keyed digest.
const (
	RefreshTokenPrefix = "slrt_"
	SessionIDLen       = 26
	SecretLen          = 32
	tokenRawLen        = SessionIDLen + 4 + SecretLen
)

// RefreshTokenLen is the length of an encoded refresh token.
var RefreshTokenLen = len(RefreshTokenPrefix) + base64.RawURLEncoding.EncodedLen(tokenRawLen)

// RefreshToken is a parsed refresh token. Its String method never shows the
// secret; Encode does.
type RefreshToken struct {
	SessionID  string
	Generation uint32
	Secret     [SecretLen]byte
}

// Encode returns the token as handed to the client. Never log it.
func (t RefreshToken) Encode() string {
	raw := t.raw()
	buf := make([]byte, len(RefreshTokenPrefix)+base64.RawURLEncoding.EncodedLen(len(raw)))
	copy(buf, RefreshTokenPrefix)
	base64.RawURLEncoding.Encode(buf[len(RefreshTokenPrefix):], raw[:])
	return string(buf)
}

// String redacts the secret, so a token that reaches a log by mistake leaks nothing.
func (t RefreshToken) String() string { return RefreshTokenPrefix + "[redacted]" }

// GoString redacts like String, for %#v.
func (t RefreshToken) GoString() string { return t.String() }

func (t RefreshToken) raw() [tokenRawLen]byte {
	var raw [tokenRawLen]byte
	copy(raw[:SessionIDLen], t.SessionID)
	binary.BigEndian.PutUint32(raw[SessionIDLen:], t.Generation)
	copy(raw[SessionIDLen+4:], t.Secret[:])
	return raw
}

// ParseRefreshToken checks the syntax of s and splits it. It does not say
// whether the token is genuine; only a digest comparison does.
func ParseRefreshToken(s string) (RefreshToken, error) {
	if len(s) != RefreshTokenLen || s[:len(RefreshTokenPrefix)] != RefreshTokenPrefix {
		return RefreshToken{}, ErrTokenMalformed
	}
	var raw [tokenRawLen]byte
	n, err := base64.RawURLEncoding.Strict().Decode(raw[:], []byte(s[len(RefreshTokenPrefix):]))
	if err != nil || n != tokenRawLen {
		return RefreshToken{}, ErrTokenMalformed
	}
	sid := string(raw[:SessionIDLen])
	if !ValidSessionID(sid) {
		return RefreshToken{}, ErrTokenMalformed
	}
	t := RefreshToken{SessionID: sid, Generation: binary.BigEndian.Uint32(raw[SessionIDLen:])}
	copy(t.Secret[:], raw[SessionIDLen+4:])
	return t, nil
}

// ValidSessionID reports whether s has the form of a session id: a ULID in
// Crockford base32 (upper case). Session ids appear in NATS subjects, so this
// also guarantees they are subject-safe.
func ValidSessionID(s string) bool {
	if len(s) != SessionIDLen || s[0] > '7' {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c >= '0' && c <= '9':
		case c >= 'A' && c <= 'Z' && c != 'I' && c != 'L' && c != 'O' && c != 'U':
		default:
			return false
		}
	}
	return true
}

// TokenKeys are the server-side keys for refresh tokens.
type TokenKeys struct {
	DigestKeyID  string // names DigestKey in recorded digests
	DigestKey    []byte // keys the digest recorded in events
	SuccessorKey []byte // derives each token's successor
}

// Digest returns the keyed digest of t that events record.
func (k TokenKeys) Digest(t RefreshToken) Digest {
	return Digest{KeyID: k.DigestKeyID, Value: k.digest(t)}
}

func (k TokenKeys) digest(t RefreshToken) (sum [32]byte) {
	raw := t.raw()
	m := hmac.New(sha256.New, k.DigestKey)
	m.Write([]byte("sessionledger refresh digest v1\x00"))
	m.Write(raw[:])
	m.Sum(sum[:0])
	return sum
}

// Matches reports, in constant time, whether t is the token whose digest is d.
func (k TokenKeys) Matches(t RefreshToken, d Digest) bool {
	sum := k.digest(t)
	return d.KeyID == k.DigestKeyID && hmac.Equal(sum[:], d.Value[:])
}

// Successor derives the token that replaces t when t is rotated. The same t
// always yields the same successor, so concurrent or retried refreshes of one
// token cannot fork the family.
func (k TokenKeys) Successor(t RefreshToken) RefreshToken {
	raw := t.raw()
	m := hmac.New(sha256.New, k.SuccessorKey)
	m.Write([]byte("sessionledger refresh successor v1\x00"))
	m.Write(raw[:])
	next := RefreshToken{SessionID: t.SessionID, Generation: t.Generation + 1}
	m.Sum(next.Secret[:0])
	return next
}
