// Package integrity is how anyone can tell the ledger's history from
// something else in its stream. It imports only the standard library (and
// jwk, for the checkpoint keys' published form).
//
//   - Every event the ledger appends carries a tag: an HMAC-SHA256 under a key
//     only the ledger's instances hold (TagKeys), over the SHA-256 of the
//     event's stored bytes. Instances apply an event only when its tag is
//     valid; projection snapshots are sealed with the same keys.
//   - Every message in the stream, whoever wrote it, is folded in stream
//     order into a running hash (Chain). Now and then the ledger appends a
//     signed Checkpoint that commits to the running hash up to a sequence and
//     names the messages in its range that the ledger refused. An auditor
//     with the public key alone recomputes the hash and checks the
//     signature: a forged, dropped, reordered or edited message, or a stream
//     rewritten from the start, no longer matches.
package integrity

import (
	"crypto/hmac"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"hash"
	"maps"
	"strings"
	"sync/atomic"
	"unsafe"
)

// Errors.
var (
	ErrNoTag      = errors.New("no integrity tag")
	ErrBadTag     = errors.New("integrity tag does not match")
	ErrUnknownKey = errors.New("integrity tag names a key this ledger does not have")
)

// TagHeader is the NATS header that carries an event's tag.
const TagHeader = "Ledger-Tag"

// Domain separation for the MACs. The tag's context is short enough that
// context and digest fit one SHA-256 block after the key's (at most 23
// bytes): a tag check costs three block computations, for every message read.
const (
	tagContext      = "sessionledger tag v1\x00"
	snapshotContext = "sessionledger snapshot v1\x00"
)

// TagKeys are the keys that tag events and seal snapshots: the current one,
// which tags new events, and older ones, which still verify what they tagged.
// It is safe for concurrent use; Update replaces the keys when they rotate.
type TagKeys struct {
	state   atomic.Pointer[tagKeyState]
	resolve atomic.Pointer[func(id string)]
}

// OnUnknown sets fn to be called, before a tag or a seal naming a key id
// that is not held is refused, to learn the keys anew (a key another
// instance started using before this one read it); fn calls Update.
func (k *TagKeys) OnUnknown(fn func(id string)) { k.resolve.Store(&fn) }

// key returns the key named id, asking the OnUnknown function once if it is
// not held.
func (k *TagKeys) key(id string) ([]byte, bool) {
	if key, ok := k.state.Load().keys[id]; ok {
		return key, true
	}
	if fn := k.resolve.Load(); fn != nil {
		(*fn)(id)
	}
	key, ok := k.state.Load().keys[id]
	return key, ok
}

type tagKeyState struct {
	current string
	keys    map[string][]byte
}

// NewTagKeys returns the keys; current names the one that tags. Key ids are
// short and contain no '.'.
func NewTagKeys(current string, keys map[string][]byte) (*TagKeys, error) {
	k := &TagKeys{}
	if err := k.Update(current, keys); err != nil {
		return nil, err
	}
	return k, nil
}

// Update makes current the key that tags, among keys (which must keep every
// key that tagged an event still to be read). Events and snapshots being
// tagged or checked meanwhile use either set, whole.
func (k *TagKeys) Update(current string, keys map[string][]byte) error {
	if _, ok := keys[current]; !ok {
		return fmt.Errorf("integrity: current tag key %q is not among the keys", current)
	}
	for id, key := range keys {
		if id == "" || strings.ContainsAny(id, ". ") || len(id) > 255 || len(key) < 32 {
			return fmt.Errorf("integrity: tag key %q: ids must be non-empty, at most 255 bytes, without '.' or spaces, keys at least 32 bytes", id)
		}
	}
	k.state.Store(&tagKeyState{current: current, keys: maps.Clone(keys)})
	return nil
}

// Current is the id of the key that tags new events.
func (k *TagKeys) Current() string { return k.state.Load().current }

func mac(key []byte, context string, parts ...[]byte) []byte {
	m := hmac.New(sha256.New, key)
	m.Write([]byte(context))
	for _, p := range parts {
		m.Write(p)
	}
	return m.Sum(nil)
}

// Tag returns the tag for stored bytes whose SHA-256 is digest:
// "<key id>.<base64url HMAC>".
func (k *TagKeys) Tag(digest [32]byte) string {
	st := k.state.Load()
	return st.current + "." + base64.RawURLEncoding.EncodeToString(mac(st.keys[st.current], tagContext, digest[:]))
}

// Checker checks tags; it keeps a MAC per key and works in buffers of its
// own, so that checking costs no allocation (it runs for every message a
// projection reads). It is not safe for concurrent use: one per goroutine.
type Checker struct {
	keys *TagKeys
	macs map[string]hash.Hash
	sum  []byte
	enc  [tagLen]byte
	msg  [len(tagContext) + sha256.Size]byte // what the MAC covers
}

// tagLen is the length of a tag's MAC in base64url (of sha256.Size bytes).
const tagLen = (sha256.Size*8 + 5) / 6

// Checker returns a new Checker for k.
func (k *TagKeys) Checker() *Checker {
	c := &Checker{keys: k, macs: map[string]hash.Hash{}, sum: make([]byte, 0, sha256.Size)}
	copy(c.msg[:], tagContext)
	return c
}

// Check reports whether tag is the ledger's tag for stored bytes whose
// SHA-256 is digest. The comparison takes constant time.
func (c *Checker) Check(tag string, digest [32]byte) error {
	if tag == "" {
		return ErrNoTag
	}
	id, enc, ok := strings.Cut(tag, ".")
	if !ok || len(enc) != tagLen {
		return ErrBadTag
	}
	m := c.macs[id]
	if m == nil {
		key, known := c.keys.key(id)
		if !known {
			return ErrUnknownKey
		}
		m = hmac.New(sha256.New, key)
		c.macs[id] = m
	}
	copy(c.msg[len(tagContext):], digest[:])
	m.Reset()
	m.Write(c.msg[:])
	c.sum = m.Sum(c.sum[:0])
	// Compared in its encoded form: the tag is canonical base64url (what
	// Tag writes), and decoding it would cost an allocation per message.
	base64.RawURLEncoding.Encode(c.enc[:], c.sum)
	if subtle.ConstantTimeCompare(c.enc[:], unsafe.Slice(unsafe.StringData(enc), len(enc))) != 1 {
		return ErrBadTag
	}
	return nil
}

// Seal appends to data a trailer that authenticates it under the current
// key: the key id (length-prefixed) and an HMAC over data and the id.
func (k *TagKeys) Seal(data []byte) []byte {
	st := k.state.Load()
	id := []byte(st.current)
	sum := mac(st.keys[st.current], snapshotContext, data, id)
	data = append(data, id...)
	data = append(data, byte(len(id)))
	return append(data, sum...)
}

// Open checks a sealed blob and returns the data without its trailer.
func (k *TagKeys) Open(sealed []byte) ([]byte, error) {
	n := len(sealed) - sha256.Size - 1
	if n < 0 {
		return nil, ErrBadTag
	}
	idLen := int(sealed[n])
	if idLen == 0 || idLen > n {
		return nil, ErrBadTag
	}
	data, id, sum := sealed[:n-idLen:n-idLen], sealed[n-idLen:n], sealed[n+1:]
	key, ok := k.key(string(id))
	if !ok {
		return nil, ErrUnknownKey
	}
	if !hmac.Equal(sum, mac(key, snapshotContext, data, id)) {
		return nil, ErrBadTag
	}
	return data, nil
}

// Chain is the running hash of a stream: every message, in stream order,
// folded as SHA-256(previous || big-endian sequence || SHA-256 of the stored
// bytes). The zero value is the hash before the first message.
type Chain [32]byte

// Next folds the message at seq, whose stored bytes hash to digest.
func (c Chain) Next(seq uint64, digest [32]byte) Chain {
	var b [32 + 8 + 32]byte
	copy(b[:32], c[:])
	binary.BigEndian.PutUint64(b[32:40], seq)
	copy(b[40:], digest[:])
	return sha256.Sum256(b[:])
}

// String is the hash in base64url.
func (c Chain) String() string { return base64.RawURLEncoding.EncodeToString(c[:]) }

// MarshalText writes the hash in base64url.
func (c Chain) MarshalText() ([]byte, error) { return []byte(c.String()), nil }

// UnmarshalText reads what MarshalText writes.
func (c *Chain) UnmarshalText(b []byte) error {
	var v [32]byte
	if len(b) != base64.RawURLEncoding.EncodedLen(len(v)) {
		return errors.New("integrity: chain hash is not 32 bytes of base64url")
	}
	if n, err := base64.RawURLEncoding.Decode(v[:], b); err != nil || n != len(v) {
		return errors.New("integrity: chain hash is not 32 bytes of base64url")
	}
	*c = v
	return nil
}
