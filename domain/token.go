package domain

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"strings"
	"time"
)

// Refresh-token wire format:
//
//	slrt_ base64url( session id (26 bytes, ULID text) | generation (4 bytes, big endian) | secret (32 bytes) | tag (16 bytes) )
//
// The prefix lets secret scanners and a cheap syntax check reject garbage.
// Generation 0's secret comes from crypto/rand; every later secret is derived
// from the previous token with a server-side key (see TokenKeys.Successor),
// so a retried refresh recomputes the same successor and no token is ever
// stored, only its keyed digest.
//
// The tag is an HMAC of the rest under a server-side key (TokenKeys.Seal):
// a token the ledger never issued is refused with one HMAC, before any
// lookup, and a genuine token's generation can be trusted without walking
// the chain from it to the session's current token. Tokens issued before
// tags (legacy form: no tag, 88 characters) are still read; see
// MaxLegacyGenerationsBehind.
const (
	RefreshTokenPrefix = "slrt_"
	SessionIDLen       = 26
	SecretLen          = 32
	TagLen             = 16
	tokenRawLen        = SessionIDLen + 4 + SecretLen
)

// Encoded lengths of a refresh token: tagged, and the legacy form.
var (
	RefreshTokenLen       = len(RefreshTokenPrefix) + base64.RawURLEncoding.EncodedLen(tokenRawLen+TagLen)
	LegacyRefreshTokenLen = len(RefreshTokenPrefix) + base64.RawURLEncoding.EncodedLen(tokenRawLen)
)

// RefreshToken is a parsed refresh token. Its String method never shows the
// secret; Encode does.
type RefreshToken struct {
	SessionID  string
	Generation uint32
	Secret     [SecretLen]byte
	// Tag authenticates the rest (TokenKeys.Seal); Tagged is false for a
	// token in the legacy form, which has none.
	Tag    [TagLen]byte
	Tagged bool
}

// Encode returns the token as handed to the client. Never log it.
func (t RefreshToken) Encode() string {
	raw := t.raw()
	var wire []byte
	if t.Tagged {
		wire = append(raw[:], t.Tag[:]...)
	} else {
		wire = raw[:]
	}
	buf := make([]byte, len(RefreshTokenPrefix)+base64.RawURLEncoding.EncodedLen(len(wire)))
	copy(buf, RefreshTokenPrefix)
	base64.RawURLEncoding.Encode(buf[len(RefreshTokenPrefix):], wire)
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
// whether the token is genuine: TokenKeys.Authentic does for a tagged
// token, a digest comparison for the current one.
func ParseRefreshToken(s string) (RefreshToken, error) {
	if (len(s) != RefreshTokenLen && len(s) != LegacyRefreshTokenLen) || s[:len(RefreshTokenPrefix)] != RefreshTokenPrefix {
		return RefreshToken{}, ErrTokenMalformed
	}
	var raw [tokenRawLen + TagLen]byte
	want := tokenRawLen
	if len(s) == RefreshTokenLen {
		want += TagLen
	}
	// Strict: the unused bits of the last character must be zero, so that
	// one token has one encoding.
	n, err := base64.RawURLEncoding.Strict().Decode(raw[:], []byte(s[len(RefreshTokenPrefix):]))
	if err != nil || n != want {
		return RefreshToken{}, ErrTokenMalformed
	}
	sid := string(raw[:SessionIDLen])
	if !ValidSessionID(sid) {
		return RefreshToken{}, ErrTokenMalformed
	}
	t := RefreshToken{SessionID: sid, Generation: binary.BigEndian.Uint32(raw[SessionIDLen:]), Tagged: n > tokenRawLen}
	copy(t.Secret[:], raw[SessionIDLen+4:])
	copy(t.Tag[:], raw[tokenRawLen:])
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

// TokenKeys are the server-side keys for refresh tokens: the current key,
// which digests, seals and derives every new token, and the older keys
// (after rotations), kept so that tokens issued under them go on working
// until their sessions end.
//
// Which key derives a token's successor is fixed by the token itself: the
// key that sealed it (its tag verifies under it), or for a legacy untagged
// token the oldest key. The successor is sealed and digested with the
// current key, so a session moves to the newest key at its next rotation,
// and the event records the digest key's id. A tolerated retry (grace)
// seals the successor again with the key the session's digest names, so it
// returns the very token issued before.
type TokenKeys struct {
	DigestKeyID  string // names DigestKey in recorded digests
	DigestKey    []byte // keys the digest recorded in events
	SuccessorKey []byte // derives each token's successor, and seals tokens
	// Older are the other keys held, newest first: those before the
	// current one, and one that takes over soon.
	Older []TokenKey
	// LegacyKeyID names the key of the ledger before tags (the first
	// generation), which derives the successors of untagged tokens; empty:
	// the last of Older, or the current key.
	LegacyKeyID string
}

// TokenKey is one generation of refresh-token keys.
type TokenKey struct {
	ID           string
	DigestKey    []byte
	SuccessorKey []byte
}

func (k TokenKeys) current() TokenKey {
	return TokenKey{ID: k.DigestKeyID, DigestKey: k.DigestKey, SuccessorKey: k.SuccessorKey}
}

// byID returns the key named id.
func (k TokenKeys) byID(id string) (TokenKey, bool) {
	if id == k.DigestKeyID {
		return k.current(), true
	}
	for _, o := range k.Older {
		if o.ID == id {
			return o, true
		}
	}
	return TokenKey{}, false
}

// Holds reports whether the key named id is held.
func (k TokenKeys) Holds(id string) bool {
	_, ok := k.byID(id)
	return ok
}

// sealer returns the key whose tag t carries, trying the current key first:
// one HMAC per key held for a token that is not the ledger's.
func (k TokenKeys) sealer(t RefreshToken) (TokenKey, bool) {
	if !t.Tagged {
		return TokenKey{}, false
	}
	if c := k.current(); c.authentic(t) {
		return c, true
	}
	for _, o := range k.Older {
		if o.authentic(t) {
			return o, true
		}
	}
	return TokenKey{}, false
}

// deriver returns the key that derives t's successor: its sealer, or the
// first generation's for a legacy token (issued before tags, so before any
// rotation of these keys).
func (k TokenKeys) deriver(t RefreshToken) TokenKey {
	if t.Tagged {
		if s, ok := k.sealer(t); ok {
			return s
		}
	}
	return k.legacy()
}

// legacy returns the key that derives the successors of untagged tokens:
// the one LegacyKeyID names, or else the last of Older, or the current key.
func (k TokenKeys) legacy() TokenKey {
	if key, ok := k.byID(k.LegacyKeyID); ok && k.LegacyKeyID != "" {
		return key
	}
	if n := len(k.Older); n > 0 {
		return k.Older[n-1]
	}
	return k.current()
}

// Digest returns the keyed digest of t that events record, under the
// current key.
func (k TokenKeys) Digest(t RefreshToken) Digest { return k.current().Digest(t) }

// Digest returns the keyed digest of t under k.
func (k TokenKey) Digest(t RefreshToken) Digest {
	return Digest{KeyID: k.ID, Value: k.digest(t)}
}

func (k TokenKey) digest(t RefreshToken) (sum [32]byte) {
	raw := t.raw()
	m := hmac.New(sha256.New, k.DigestKey)
	m.Write([]byte("sessionledger refresh digest v1\x00"))
	m.Write(raw[:])
	m.Sum(sum[:0])
	return sum
}

// Matches reports, in constant time, whether t is the token whose digest is
// d, under the key d names (false for a key not held).
func (k TokenKeys) Matches(t RefreshToken, d Digest) bool {
	key, ok := k.byID(d.KeyID)
	if !ok {
		return false
	}
	sum := key.digest(t)
	return hmac.Equal(sum[:], d.Value[:])
}

// Successor derives the token that replaces t when t is rotated, sealed
// with the current key. The same t always yields the same secret, so
// concurrent or retried refreshes of one token cannot fork the family.
func (k TokenKeys) Successor(t RefreshToken) RefreshToken {
	return k.current().seal(k.deriver(t).successor(t))
}

// sealedBy returns the key named id, or the current key if it is not held.
func (k TokenKeys) sealedBy(id string) TokenKey {
	if key, ok := k.byID(id); ok {
		return key
	}
	return k.current()
}

func (k TokenKey) successor(t RefreshToken) RefreshToken {
	raw := t.raw()
	m := hmac.New(sha256.New, k.SuccessorKey)
	m.Write([]byte("sessionledger refresh successor v1\x00"))
	m.Write(raw[:])
	next := RefreshToken{SessionID: t.SessionID, Generation: t.Generation + 1}
	m.Sum(next.Secret[:0])
	return next
}

// Seal returns t with its tag under the current key: an HMAC-SHA256 of the
// session id, generation and secret under the successor key, with a label
// of its own (so it can never equal a successor's secret), truncated to
// TagLen bytes.
func (k TokenKeys) Seal(t RefreshToken) RefreshToken { return k.current().seal(t) }

func (k TokenKey) seal(t RefreshToken) RefreshToken {
	t.Tag, t.Tagged = k.tag(t), true
	return t
}

func (k TokenKey) tag(t RefreshToken) (tag [TagLen]byte) {
	raw := t.raw()
	m := hmac.New(sha256.New, k.SuccessorKey)
	m.Write([]byte("sessionledger refresh tag v1\x00"))
	m.Write(raw[:])
	var sum [sha256.Size]byte
	copy(tag[:], m.Sum(sum[:0]))
	return tag
}

func (k TokenKey) authentic(t RefreshToken) bool {
	want := k.tag(t)
	return hmac.Equal(want[:], t.Tag[:])
}

// Authentic reports, in constant time per key and with one HMAC per key
// held (current first), whether t is a tagged token the ledger issued. A
// legacy token is never authentic by itself: only a walk to the session's
// current digest tells.
func (k TokenKeys) Authentic(t RefreshToken) bool {
	_, ok := k.sealer(t)
	return ok
}

// SessionIDTime returns the time a session id (a ULID) names: its first
// ten characters, milliseconds since the Unix epoch. It is the issuing
// instance's clock when the id was made; false for a malformed id.
func SessionIDTime(id string) (time.Time, bool) {
	if !ValidSessionID(id) {
		return time.Time{}, false
	}
	const crockford = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
	var ms int64
	for i := 0; i < 10; i++ {
		ms = ms<<5 | int64(strings.IndexByte(crockford, id[i]))
	}
	return time.UnixMilli(ms).UTC(), true
}
