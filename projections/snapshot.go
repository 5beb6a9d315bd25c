package projections

import (
	"cmp"
	"container/heap"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"slices"

	"github.com/sessionledger/sessionledger/domain"
)

// Snapshot format: "SLSNAP" | version (uvarint) | start sequence (uvarint) |
// running hash at the start (32 bytes) | sequence the last checkpoint covers
// (uvarint) | refused sequences after it (list) | records, each 'U' user (key, deactivated, last user event, chain head, expecting, newest issue time, ended sessions within the replay window) or
// 'S' session | 'E' | end sequence (uvarint) | sequences refused while it
// was encoded (list) | sequences superseded while it was encoded (list) |
// sessions that ended while it was encoded (count, then user key and tomb) | the seal (integrity.TagKeys.Seal: key id and an
// HMAC under the ledger's tag key, so that nobody without that key can
// forge one). Strings, byte slices and lists are uvarint length-prefixed;
// times are Unix nanoseconds (varint, 0 for none).
//
// A snapshot is fuzzy: it is encoded in chunks, releasing the lock between
// them, so it reflects every event up to the start sequence and some after
// it, up to the end sequence. Restoring replays from the start sequence;
// Apply skips a session event the session already reflects (by its LastSeq),
// and user events are idempotent when applied in order.
const (
	snapshotMagic   = "SLSNAP"
	SnapshotVersion = 7    // 2: users carry their last chain digest; 3: fixed-size token digests; 4: no user id; 5: sealed, running hash, refusals, every user; 6: a user's last sequence counts its user events only; 7: sessions carry their client id
	snapshotChunk   = 4096 // records encoded per hold of the read lock
)

// ErrSnapshotMismatch is returned for a snapshot this version cannot use: a
// different format version, a seal that does not verify (not written by this
// ledger), or truncated data.
var ErrSnapshotMismatch = errors.New("snapshot does not match")

// Sealer authenticates snapshots (integrity.TagKeys).
type Sealer interface {
	Seal(data []byte) []byte
	Open(sealed []byte) ([]byte, error)
}

// Snapshot encodes the projection's state and returns it with the sequence
// from which a restored projection must replay. Writers wait at most for one
// chunk of snapshotChunk records.
func (p *Sessions) Snapshot(sealer Sealer) (data []byte, startSeq uint64) {
	// Allocate (and so zero and fault in) a generous buffer before taking the
	// lock: growing it under the lock made writers wait ten times longer.
	p.mu.RLock()
	size := 64 + len(p.users)*96 + p.encodedSessionBytes()
	p.mu.RUnlock()
	b := make([]byte, 0, size+size/4)
	b = append(b, snapshotMagic...)
	b = binary.AppendUvarint(b, SnapshotVersion)

	p.mu.Lock()
	p.snapshotting, p.snapRefused, p.snapSuperseded, p.snapEnded = true, nil, nil, nil
	startSeq = p.applied.Load()
	b = binary.AppendUvarint(b, startSeq)
	b = append(b, p.chain[:]...)
	b = binary.AppendUvarint(b, p.checkpointCovers)
	b = appendSeqs(b, p.refused)
	p.mu.Unlock()
	p.mu.RLock()
	n := 0
	breathe := func() {
		if n++; n%snapshotChunk == 0 {
			p.mu.RUnlock()
			p.mu.RLock()
		}
	}
	for _, u := range p.users {
		b = append(b, 'U')
		b = appendString(b, u.Key)
		b = appendBool(b, u.Deactivated)
		b = binary.AppendUvarint(b, u.LastSeq)
		b = binary.AppendUvarint(b, u.ChainSeq)
		b = append(b, u.LastDigest[:]...)
		b = appendBool(b, u.expecting)
		b = binary.AppendVarint(b, u.issuedUpTo)
		b = binary.AppendUvarint(b, uint64(len(u.ended)))
		for _, t := range u.ended {
			b = appendTomb(b, t)
		}
		breathe()
	}
	for _, s := range p.sessions {
		b = append(b, 'S')
		b = appendSession(b, &s.Session)
		breathe()
	}
	p.mu.RUnlock()
	p.mu.Lock()
	endSeq := p.applied.Load()
	refused, superseded, ended := p.snapRefused, p.snapSuperseded, p.snapEnded
	p.snapshotting, p.snapRefused, p.snapSuperseded, p.snapEnded = false, nil, nil, nil
	p.mu.Unlock()
	b = append(b, 'E')
	b = binary.AppendUvarint(b, endSeq)
	b = appendSeqs(b, refused)
	b = appendSeqs(b, superseded)
	b = binary.AppendUvarint(b, uint64(len(ended)))
	for _, e := range ended {
		b = appendString(b, e.userKey)
		b = appendTomb(b, e.tomb)
	}
	return sealer.Seal(b), startSeq
}

func appendSeqs(b []byte, seqs []uint64) []byte {
	b = binary.AppendUvarint(b, uint64(len(seqs)))
	for _, s := range seqs {
		b = binary.AppendUvarint(b, s)
	}
	return b
}

// encodedSessionBytes estimates the encoded size of the sessions from a sample.
func (p *Sessions) encodedSessionBytes() int {
	const sample = 64
	var buf []byte
	n := 0
	for _, s := range p.sessions {
		if n == sample {
			break
		}
		buf = appendSession(buf, &s.Session)
		n++
	}
	if n == 0 {
		return 0
	}
	return len(buf) / n * len(p.sessions)
}

func appendSession(b []byte, s *domain.Session) []byte {
	for _, str := range []string{s.ID, s.UserID, s.UserKey, s.Policy.Name, s.Device.IP, s.Device.UserAgent, s.Device.Name, s.Token.KeyID, s.EndReason, s.ClientID()} {
		b = appendString(b, str)
	}
	for _, v := range []domain.Seconds{s.Policy.AccessTokenTTL, s.Policy.AbsoluteLifetime, s.Policy.InactivityTimeout} {
		b = binary.AppendVarint(b, int64(v))
	}
	b = appendString(b, string(s.Claims))
	b = append(b, s.Token.Value[:]...)
	for _, t := range []domain.Instant{s.IssuedAt, s.LastActive, s.RotatedAt} {
		b = binary.AppendVarint(b, int64(t))
	}
	b = binary.AppendUvarint(b, s.IssuedSeq)
	b = binary.AppendUvarint(b, s.LastSeq)
	b = binary.AppendUvarint(b, uint64(s.Generation))
	b = append(b, byte(s.Status))
	return appendBool(b, s.RevocationPending)
}

func appendString(b []byte, s string) []byte {
	b = binary.AppendUvarint(b, uint64(len(s)))
	return append(b, s...)
}

func appendBool(b []byte, v bool) []byte {
	if v {
		return append(b, 1)
	}
	return append(b, 0)
}

// RestoreSessions builds a projection from a snapshot. It returns
// ErrSnapshotMismatch for a snapshot it cannot trust (sealer does not open
// it: another version, damage, or a forgery); the caller then replays the
// stream from the start.
func RestoreSessions(data []byte, sealer Sealer, log *slog.Logger) (*Sessions, error) {
	if len(data) < len(snapshotMagic) || string(data[:len(snapshotMagic)]) != snapshotMagic {
		return nil, fmt.Errorf("%w: not a sessionledger snapshot", ErrSnapshotMismatch)
	}
	r := &reader{b: data[len(snapshotMagic):]}
	if v := r.uvarint(); v != SnapshotVersion {
		return nil, fmt.Errorf("%w: version %d, this ledger reads version %d", ErrSnapshotMismatch, v, SnapshotVersion)
	}
	body, err := sealer.Open(data)
	if err != nil {
		return nil, fmt.Errorf("%w: seal: %v", ErrSnapshotMismatch, err)
	}
	r = &reader{b: body[len(snapshotMagic):]}
	r.uvarint()
	p := NewSessions(log)
	start := r.uvarint()
	r.digest((*[32]byte)(&p.chain))
	p.checkpointCovers = r.uvarint()
	p.refused = r.seqs()
	for r.err == nil && len(r.b) > 0 && r.b[0] == 'U' {
		r.b = r.b[1:]
		u := &userEntry{}
		u.Key, u.Deactivated, u.LastSeq, u.ChainSeq = r.string(), r.bool(), r.uvarint(), r.uvarint()
		r.digest(&u.LastDigest)
		u.expecting, u.issuedUpTo = r.bool(), r.varint()
		n := r.uvarint()
		if n > uint64(len(r.b)) {
			r.fail()
			break
		}
		for range n {
			u.ended = append(u.ended, r.tomb())
		}
		p.users[u.Key] = u
	}
	for r.err == nil && len(r.b) > 0 && r.b[0] == 'S' {
		r.b = r.b[1:]
		e := &entry{heapIndex: -1}
		r.session(&e.Session)
		if r.err != nil {
			break
		}
		u := p.users[e.UserKey]
		if u == nil { // its user's first event came after its record was encoded
			u = &userEntry{User: domain.User{Key: e.UserKey}}
			p.users[e.UserKey] = u
		}
		p.share(u, &e.Session)
		p.sessions[e.ID] = e
		u.sessions = append(u.sessions, e)
		switch {
		case e.Live():
			p.deadlines = append(p.deadlines, e)
			e.heapIndex = len(p.deadlines) - 1
		case e.RevocationPending:
			p.pending[e.ID] = e
		}
	}
	if r.err != nil || len(r.b) == 0 || r.b[0] != 'E' {
		return nil, fmt.Errorf("%w: malformed data", ErrSnapshotMismatch)
	}
	for _, u := range p.users {
		slices.SortFunc(u.sessions, func(a, b *entry) int { return cmp.Compare(a.IssuedSeq, b.IssuedSeq) })
	}
	r.b = r.b[1:]
	end := r.uvarint()
	p.fuzzyRefused = r.seqs()
	p.fuzzySuperseded = r.seqs()
	// Sessions that ended while the snapshot was encoded: their user's
	// record may be from before.
	n := r.uvarint()
	if n > uint64(len(r.b)) {
		r.fail()
	}
	for i := uint64(0); i < n && r.err == nil; i++ {
		key, t := r.string(), r.tomb()
		u := p.users[key]
		if u == nil {
			u = &userEntry{User: domain.User{Key: key}}
			p.users[key] = u
		}
		if !slices.Contains(u.ended, t) {
			u.ended = append(u.ended, t)
		}
	}
	if r.err != nil || len(r.b) != 0 || end < start {
		return nil, fmt.Errorf("%w: malformed data", ErrSnapshotMismatch)
	}
	heap.Init(&p.deadlines)
	p.applied.Store(start)
	p.historySeq = start // conservatively: the next checkpoint is owed
	p.fuzzyUntil = end
	return p, nil
}

// reader decodes the snapshot format; the first error sticks.
type reader struct {
	b   []byte
	err error
}

func (r *reader) uvarint() uint64 {
	v, n := binary.Uvarint(r.b)
	if n <= 0 {
		r.fail()
		return 0
	}
	r.b = r.b[n:]
	return v
}

func (r *reader) varint() int64 {
	v, n := binary.Varint(r.b)
	if n <= 0 {
		r.fail()
		return 0
	}
	r.b = r.b[n:]
	return v
}

func (r *reader) bytes() []byte {
	n := r.uvarint()
	if n > uint64(len(r.b)) {
		r.fail()
		return nil
	}
	v := r.b[:n:n]
	r.b = r.b[n:]
	return v
}

func (r *reader) digest(d *[32]byte) {
	if len(r.b) < len(d) {
		r.fail()
		return
	}
	copy(d[:], r.b)
	r.b = r.b[len(d):]
}

func (r *reader) string() string { return string(r.bytes()) }

func (r *reader) seqs() []uint64 {
	n := r.uvarint()
	if n > uint64(len(r.b)) {
		r.fail()
		return nil
	}
	out := make([]uint64, 0, n)
	for i := uint64(0); i < n && r.err == nil; i++ {
		out = append(out, r.uvarint())
	}
	return out
}

func (r *reader) bool() bool {
	if len(r.b) == 0 {
		r.fail()
		return false
	}
	v := r.b[0] == 1
	r.b = r.b[1:]
	return v
}

func (r *reader) session(s *domain.Session) {
	s.Policy = &domain.Policy{}
	var client string
	for _, str := range []*string{&s.ID, &s.UserID, &s.UserKey, &s.Policy.Name, &s.Device.IP, &s.Device.UserAgent, &s.Device.Name, &s.Token.KeyID, &s.EndReason, &client} {
		*str = r.string()
	}
	s.Client = domain.ClientHandle(client)
	for _, v := range []*domain.Seconds{&s.Policy.AccessTokenTTL, &s.Policy.AbsoluteLifetime, &s.Policy.InactivityTimeout} {
		*v = domain.Seconds(r.varint())
	}
	if c := r.bytes(); len(c) > 0 {
		s.Claims = append([]byte(nil), c...)
	}
	r.digest(&s.Token.Value)
	s.IssuedAt, s.LastActive, s.RotatedAt = domain.Instant(r.varint()), domain.Instant(r.varint()), domain.Instant(r.varint())
	s.IssuedSeq, s.LastSeq = r.uvarint(), r.uvarint()
	s.Generation = uint32(r.uvarint())
	if len(r.b) == 0 {
		r.fail()
		return
	}
	s.Status = domain.Status(r.b[0])
	r.b = r.b[1:]
	s.RevocationPending = r.bool()
}

func appendTomb(b []byte, t tomb) []byte {
	b = binary.AppendVarint(b, t.ms)
	return append(b, t.rest[:]...)
}

func (r *reader) tomb() tomb {
	t := tomb{ms: r.varint()}
	if len(r.b) < len(t.rest) {
		r.fail()
		return t
	}
	r.b = r.b[copy(t.rest[:], r.b):]
	return t
}

func (r *reader) fail() {
	if r.err == nil {
		r.err = ErrSnapshotMismatch
	}
	r.b = nil
}
