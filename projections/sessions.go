// Package projections builds in-memory read models from the ledger's events.
// They change only by applying events in stream order.
package projections

import (
	"bytes"
	"cmp"
	"container/heap"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/sessionledger/sessionledger/domain"
	"github.com/sessionledger/sessionledger/integrity"
)

// Sessions is the live-session projection: every live session and the users
// that have live sessions or are deactivated. Ended sessions are dropped, so
// memory follows the number of live sessions.
type Sessions struct {
	log *slog.Logger

	mu        sync.RWMutex
	sessions  map[string]*entry
	users     map[string]*userEntry
	deadlines deadlineHeap      // live sessions by the earlier of their two deadlines
	pending   map[string]*entry // sessions whose reuse revocation is still to be announced
	interned  map[string]string
	policies  map[domain.Policy]*domain.Policy

	applied atomic.Uint64 // last applied stream sequence
	// fuzzyUntil is the end sequence of the snapshot this projection was
	// restored from: up to it, events may find state that already has them,
	// and fuzzyRefused and fuzzySuperseded are the sequences up to it that
	// were refused, and superseded.
	fuzzyUntil      uint64
	fuzzyRefused    []uint64
	fuzzySuperseded []uint64

	// chain is the running hash of every record applied (integrity.Chain);
	// checkpointCovers the sequence the last checkpoint in the stream
	// covers; refused the sequences refused after it.
	chain            integrity.Chain
	checkpointCovers uint64
	refused          []uint64
	historySeq       uint64 // the last record that is not a checkpoint
	rejectedCount    atomic.Uint64
	supersededCount  atomic.Uint64
	// recentSuperseded holds the sequences of the last superseded events,
	// in a ring (supersededCount says where): a writer asks whether its own
	// event was one (WasSuperseded).
	recentSuperseded [1024]uint64
	recentRefused    [256]uint64 // the same for refusals (rejectedCount)
	// While a snapshot is encoded, refusals are noted for it too.
	snapshotting   bool
	snapRefused    []uint64
	snapSuperseded []uint64
	snapEnded      []endedOf

	wmu     sync.Mutex
	waiters []waiter
	failed  chan struct{} // closed by Fail
	failErr error         // set before failed is closed
}

type userEntry struct {
	domain.User
	// sessions, in stream order of issue: most users have a handful, and a
	// slice costs far less than a map; one with thousands is found by
	// binary search.
	sessions []*entry
	// issuedUpTo is the newest session id time issued to the user
	// (milliseconds), and ended the sessions that ended, or whose issue was
	// superseded, with an id time within ReplayWindow of it (inPlace).
	issuedUpTo int64
	ended      []tomb
	// expecting: the user has an event written under an expectation; one
	// written without (an earlier version's) is refused from then on.
	expecting bool
}

// tomb is a session that ended: its id's time and the rest of its id (the
// random part, as written), with no pointer to keep its id alive.
type tomb struct {
	ms   int64
	rest [domain.SessionIDLen - 10]byte
}

// tombOf is the tomb of session id.
func tombOf(id string) tomb {
	t := tomb{ms: idMillis(id)}
	copy(t.rest[:], id[min(10, len(id)):])
	return t
}

// issued notes a session issued to u.
func (u *userEntry) issued(id string) {
	if ms := idMillis(id); ms > u.issuedUpTo {
		u.issuedUpTo = ms
		u.ended = slices.DeleteFunc(u.ended, func(t tomb) bool { return t.ms < u.issuedUpTo-ReplayWindow.Milliseconds() })
	}
}

// bury remembers that session id of u ended, while its issue could still
// come back within ReplayWindow. While a snapshot is encoded, it is also
// noted for the snapshot: the user's record may be encoded before the end
// and the session's after it (then not at all). Called with mu held.
func (p *Sessions) bury(u *userEntry, id string) {
	if t := tombOf(id); t.ms >= u.issuedUpTo-ReplayWindow.Milliseconds() && !slices.Contains(u.ended, t) {
		u.ended = append(u.ended, t)
		if p.snapshotting {
			p.snapEnded = append(p.snapEnded, endedOf{u.Key, t})
		}
	}
}

// endedOf is a user's ended session, as a snapshot notes it.
type endedOf struct {
	userKey string
	tomb
}

// idMillis is a session id's time in milliseconds (0 for a malformed id,
// which the ledger never writes).
func idMillis(id string) int64 {
	t, _ := domain.SessionIDTime(id)
	return t.UnixMilli()
}

// find returns the index of the user's session issued at seq, or where it
// would be.
func (u *userEntry) find(issuedSeq uint64) (int, bool) {
	return slices.BinarySearchFunc(u.sessions, issuedSeq, func(s *entry, seq uint64) int { return cmp.Compare(s.IssuedSeq, seq) })
}

func (u *userEntry) remove(s *entry) {
	if i, ok := u.find(s.IssuedSeq); ok && u.sessions[i] == s {
		u.sessions = slices.Delete(u.sessions, i, i+1)
	}
}

// entry is a session and its place in the deadline heap (-1: not in it).
type entry struct {
	domain.Session
	heapIndex int
}

type waiter struct {
	seq uint64
	ch  chan struct{}
}

// NewSessions returns an empty projection.
func NewSessions(log *slog.Logger) *Sessions {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Sessions{
		log:      log,
		sessions: make(map[string]*entry),
		users:    make(map[string]*userEntry),
		pending:  make(map[string]*entry),
		interned: make(map[string]string),
		policies: make(map[domain.Policy]*domain.Policy),
		failed:   make(chan struct{}),
	}
}

// reducers is the table of event type → state change.
var reducers = map[domain.EventType]func(*Sessions, *userEntry, domain.Event) error{
	domain.TypeSessionIssued:       (*Sessions).onIssued,
	domain.TypeSessionRotated:      (*Sessions).onSessionEvent,
	domain.TypeSessionReused:       (*Sessions).onSessionEvent,
	domain.TypeSessionRevoked:      (*Sessions).onSessionEvent,
	domain.TypeSessionExpired:      (*Sessions).onSessionEvent,
	domain.TypeUserSessionsRevoked: (*Sessions).onSessionsRevoked,
	domain.TypeUserDeactivated:     (*Sessions).onDeactivated,
	domain.TypeUserReactivated:     (*Sessions).onReactivated,
}

// Apply folds one of the ledger's events into the projection (see
// ApplyRecord).
func (p *Sessions) Apply(e domain.Event) error { return p.ApplyRecord(domain.EventRecord(e)) }

// ApplyRecord folds the stored message r into the projection, in stream
// order; records at or below the last applied sequence are ignored. Every
// record goes into the running hash (Chain). An event is applied only when it
// is where it was written (it follows the message it expected under its
// session's or user's subjects, inPlace; in streams from before
// expectations, it continues its user's chain) and is a possible transition
// (not a session issued twice, nothing after a session's end); one that a
// user event stored before it overtook is superseded: it changes nothing.
// Anything else, like a record the ledger did not write, is refused:
// logged, counted, listed in the next checkpoint, and it changes nothing
// but where the next write under its subjects must follow, so that nobody
// can lock a session or user out with a stray message.
func (p *Sessions) ApplyRecord(r domain.Record) error {
	if r.Seq <= p.applied.Load() {
		return nil
	}
	p.mu.Lock()
	p.chain = p.chain.Next(r.Seq, r.Digest)
	var refused error
	superseded := false
	switch r.Kind {
	case domain.RecordEvent:
		refused = p.applyEvent(r.Event)
		if errors.Is(refused, errSuperseded) {
			refused, superseded = nil, true
		}
		p.historySeq = r.Seq
	case domain.RecordCheckpoint:
		p.checkpointed(r.Covers)
	default:
		p.historySeq = r.Seq
		refused = r.Err
		if refused == nil {
			refused = fmt.Errorf("record of kind %d", r.Kind)
		}
	}
	if refused != nil {
		p.refuse(r)
		n := p.rejectedCount.Add(1)
		p.recentRefused[(n-1)%uint64(len(p.recentRefused))] = r.Seq
	}
	if superseded {
		n := p.supersededCount.Add(1)
		p.recentSuperseded[(n-1)%uint64(len(p.recentSuperseded))] = r.Seq
		if p.snapshotting {
			p.snapSuperseded = append(p.snapSuperseded, r.Seq)
		}
	}
	// Under the lock, with the running hash: a snapshot reads both at once.
	p.applied.Store(r.Seq)
	p.mu.Unlock()
	p.wake(r.Seq)
	if superseded {
		p.log.Debug("projection: a write that lost the race to an earlier user event changed nothing", "seq", r.Seq, "event", r.Event.Type(), "session_id", r.Event.SessionID)
	}
	if refused != nil {
		p.log.Warn("projection: refused a message that is not the ledger's history", "seq", r.Seq, "user_key", r.UserKey, "reason", refused)
	}
	return nil
}

// errSuperseded: an event the ledger wrote that changes nothing, because a
// user event stored before it (a revoke-all, a deactivation) had already
// ended what it was decided on. Per-session concurrency lets such a write
// land; its command answers from the state after it (see ledger.write).
var errSuperseded = errors.New("superseded by an earlier user event")

// applyEvent applies e, or says why it is refused (or errSuperseded).
// Called with mu held.
func (p *Sessions) applyEvent(e domain.Event) error {
	reduce, ok := reducers[e.Type()]
	if !ok {
		return fmt.Errorf("%w %q", domain.ErrUnknownEventType, e.Type())
	}
	u := p.users[e.UserKey]
	fuzzy := e.Seq <= p.fuzzyUntil
	// Replaying over a fuzzy snapshot: refuse what was refused while it was
	// encoded, whatever the state restored says; apply (idempotently) the
	// rest, without the chain check when the user's record already
	// reflects this sequence.
	if fuzzy && slices.Contains(p.fuzzyRefused, e.Seq) {
		return errors.New("refused when the snapshot was taken")
	}
	if e.Expect == nil {
		// Written before per-session concurrency: it must continue its
		// user's chain, and come before the user's first event written
		// under an expectation (the chain head stops moving then).
		if !(fuzzy && u != nil && e.Seq <= u.ChainSeq) && !bytes.Equal(e.Prev, p.chainHead(u)) {
			return fmt.Errorf("event %s does not continue user %s's chain (a genuine event replayed out of place, or not the ledger's)", e.ID, e.UserKey)
		}
		if !fuzzy && u != nil && u.expecting {
			return fmt.Errorf("event %s is of an earlier version, after user %s's events written under expectations: %w", e.ID, e.UserKey, errOutOfPlace)
		}
	} else if fuzzy {
		// The restored state may be later than e: whether e was superseded
		// is what was noted while the snapshot was encoded, not what that
		// state says. One that was changes nothing again; any other is
		// applied (idempotently) below.
		if slices.Contains(p.fuzzySuperseded, e.Seq) {
			return nil
		}
	} else if err := p.inPlace(u, e); err != nil {
		return err
	} else if p.superseded(u, e) {
		if _, issue := e.Data.(domain.SessionIssued); issue {
			p.bury(u, e.SessionID) // a copy stored later is refused, reactivated or not
		}
		return errSuperseded
	}
	if u == nil {
		u = &userEntry{User: domain.User{Key: e.UserKey}}
	}
	if e.Expect != nil {
		u.expecting = true
	}
	if _, issue := e.Data.(domain.SessionIssued); issue {
		// Also when the snapshot already held the session (fuzzy), whose
		// user record may be older than it.
		u.issued(e.SessionID)
	}
	var err error
	if s := p.sessions[e.SessionID]; e.SessionID == "" || s == nil || e.Seq > s.LastSeq {
		err = reduce(p, u, e)
	}
	if err != nil && !fuzzy {
		return fmt.Errorf("impossible transition: %w", err)
	}
	// In the fuzzy range an error means the snapshot already reflects e (what
	// was refused then is in fuzzyRefused).
	if err != nil {
		p.log.Debug("projection: event already reflected by the snapshot", "seq", e.Seq, "event", e.Type(), "session_id", e.SessionID, "err", err)
	}
	p.users[e.UserKey] = u
	if e.Type().IsUserEvent() && e.Seq > u.LastSeq {
		u.LastSeq = e.Seq
	}
	if e.Expect == nil && e.Seq > u.ChainSeq {
		u.ChainSeq, u.LastDigest = e.Seq, e.Digest
	}
	return nil
}

// errOutOfPlace: an event the ledger wrote, stored where it was not written
// (a replay).
var errOutOfPlace = errors.New("not stored where the ledger wrote it (a replay)")

// ReplayWindow bounds how far apart, by the clocks of the instances that
// made them, the session ids of one user's issues can land out of order:
// more than a request's budget (at most a minute) plus the clock skew
// between instances. An issue whose session id is older than the user's
// newest by more than this is a replay; within it, the issues of sessions
// that ended are remembered (userEntry.ended).
const ReplayWindow = 5 * time.Minute

// inPlace checks that e, written under an expectation, is stored where it
// was written: after the message it expected under its session's or user's
// subjects, as this projection counts them (refused messages included, as
// the stream does). The headers the stream enforced are checked when the
// message is read, but a reader and the server may parse headers
// differently, so this is what decides. A session issued is new by
// construction; a copy of its issue stored later is told apart by its
// session id's time and the user's remembered ended sessions (ReplayWindow).
// Called with mu held.
func (p *Sessions) inPlace(u *userEntry, e domain.Event) error {
	var at uint64 // where e must follow
	switch e.Data.(type) {
	case domain.SessionIssued:
		if u != nil {
			t := tombOf(e.SessionID)
			if t.ms < u.issuedUpTo-ReplayWindow.Milliseconds() || slices.Contains(u.ended, t) {
				return fmt.Errorf("session %s issued again after it ended, or long after the user's newer sessions: %w", e.SessionID, errOutOfPlace)
			}
		}
	default:
		switch s := p.sessions[e.SessionID]; {
		case e.Type().IsUserEvent():
			if u != nil {
				at = u.LastSeq
			}
		case s != nil:
			at = s.LastSeq
		default:
			return nil // a session not held has ended: superseded, or impossible
		}
	}
	if *e.Expect != at {
		return fmt.Errorf("event %s was written to follow sequence %d, but is stored after %d: %w", e.ID, *e.Expect, at, errOutOfPlace)
	}
	return nil
}

// superseded reports whether e, an event the ledger wrote under an
// expectation, finds what it was decided on already ended by an earlier
// user event: a session issued to a user deactivated since, or an event of
// a session ended since (the revoked that completes a reuse revocation
// excepted). The stream enforced its expectation on the session's own
// subjects, so only a user event can have come between, and one did: the
// user's last user event is later than what e expected. Anything else that
// finds its session ended (one the projection no longer holds, ended by its
// own events) is an impossible transition, refused. Called with mu held.
func (p *Sessions) superseded(u *userEntry, e domain.Event) bool {
	if e.Type().IsUserEvent() {
		return false
	}
	if _, issue := e.Data.(domain.SessionIssued); issue {
		return u != nil && u.Deactivated
	}
	if u == nil || u.LastSeq <= *e.Expect {
		return false
	}
	s := p.sessions[e.SessionID]
	if _, revoke := e.Data.(domain.SessionRevoked); revoke && s != nil && s.RevocationPending {
		return false
	}
	return s == nil || !s.Live()
}

// chainHead is what the user's next event must carry as its prevdigest: the
// digest of its last applied event, nil before its first.
func (p *Sessions) chainHead(u *userEntry) []byte {
	if u == nil || u.ChainSeq == 0 {
		return nil
	}
	return u.LastDigest[:]
}

// refuse records a refused message: the next checkpoint lists it, and the
// session or user whose subjects it is under counts it as the stream does
// for the next append's expectation (the write learns its sequence from
// the conflict). Called with mu held.
func (p *Sessions) refuse(r domain.Record) {
	switch s := p.sessions[r.Under]; {
	case r.UserKey == "" || r.Under == "":
	case r.Under == "user":
		u := p.users[r.UserKey]
		if u == nil {
			u = &userEntry{User: domain.User{Key: r.UserKey}}
			p.users[r.UserKey] = u
		}
		u.LastSeq = max(u.LastSeq, r.Seq)
	case s != nil && s.UserKey == r.UserKey:
		s.LastSeq = max(s.LastSeq, r.Seq)
	}
	p.refused = append(p.refused, r.Seq)
	if p.snapshotting {
		p.snapRefused = append(p.snapRefused, r.Seq)
	}
}

// checkpointed notes a checkpoint found in the stream: refusals it covers
// need not be listed again. Called with mu held.
func (p *Sessions) checkpointed(covers uint64) {
	if covers <= p.checkpointCovers {
		return
	}
	p.checkpointCovers = covers
	p.refused = slices.DeleteFunc(p.refused, func(seq uint64) bool { return seq <= covers })
}

// NextCheckpoint is the checkpoint to write now, unsigned: from the sequence
// the last checkpoint in the stream covers to the last applied one, with the
// running hash there and the refusals in between. pending is false when
// nothing but checkpoints was stored since the last one.
func (p *Sessions) NextCheckpoint() (c integrity.Checkpoint, pending bool) {
	p.mu.RLock()
	defer p.mu.RUnlock()
	c = integrity.Checkpoint{From: p.checkpointCovers, Covers: p.applied.Load(), Chain: p.chain}
	c.Rejected = p.refused
	if n := len(c.Rejected); n > integrity.MaxRejectedListed {
		c.Rejected, c.RejectedOmitted = c.Rejected[:integrity.MaxRejectedListed], uint64(n-integrity.MaxRejectedListed)
	}
	c.Rejected = slices.Clone(c.Rejected)
	return c, p.historySeq > p.checkpointCovers
}

// Refused returns how many messages the projection has refused since it started.
func (p *Sessions) Refused() uint64 { return p.rejectedCount.Load() }

// Superseded returns how many of the ledger's events changed nothing since
// it started, because an earlier user event had ended what they were
// decided on (errSuperseded).
func (p *Sessions) Superseded() uint64 { return p.supersededCount.Load() }

// WasSuperseded tells whether the event applied at seq was superseded;
// known is false when seq is not applied yet, or so many events were
// superseded since that the ring no longer reaches back to it.
func (p *Sessions) WasSuperseded(seq uint64) (superseded, known bool) {
	p.mu.RLock()
	defer p.mu.RUnlock()
	return p.inRing(p.recentSuperseded[:], p.supersededCount.Load(), seq)
}

// WasRefused is WasSuperseded for refusals.
func (p *Sessions) WasRefused(seq uint64) (refused, known bool) {
	p.mu.RLock()
	defer p.mu.RUnlock()
	return p.inRing(p.recentRefused[:], p.rejectedCount.Load(), seq)
}

// inRing tells whether seq is among the n sequences written in turn to
// ring (the last len(ring) of them held). Called with mu held.
func (p *Sessions) inRing(ring []uint64, n, seq uint64) (in, known bool) {
	if seq > p.applied.Load() {
		return false, false
	}
	if n > uint64(len(ring)) && seq < ring[n%uint64(len(ring))] {
		return false, false // before the oldest held
	}
	return slices.Contains(ring[:min(n, uint64(len(ring)))], seq), true
}

func (p *Sessions) onIssued(u *userEntry, e domain.Event) error {
	if _, dup := p.sessions[e.SessionID]; dup {
		return fmt.Errorf("session %s issued twice", e.SessionID)
	}
	s := &entry{heapIndex: -1}
	if err := s.Apply(e); err != nil {
		return err
	}
	p.share(u, &s.Session)
	p.sessions[s.ID] = s
	// In stream order: an append, but for an issue replayed over a fuzzy
	// snapshot that already holds later sessions of the user.
	i, _ := u.find(s.IssuedSeq)
	u.sessions = slices.Insert(u.sessions, i, s)
	u.issued(s.ID)
	heap.Push(&p.deadlines, s)
	return nil
}

func (p *Sessions) onSessionEvent(u *userEntry, e domain.Event) error {
	s := p.sessions[e.SessionID]
	if s == nil {
		return fmt.Errorf("%s for session %s, which is not live", e.Type(), e.SessionID)
	}
	err := s.Apply(e)
	s.Token.KeyID = p.intern(s.Token.KeyID)
	p.settle(u, s)
	return err
}

func (p *Sessions) onSessionsRevoked(u *userEntry, e domain.Event) error {
	p.cutOff(u, e.Seq, domain.ReasonUserSessionsRevoked)
	return nil
}

func (p *Sessions) onDeactivated(u *userEntry, e domain.Event) error {
	u.Deactivated = true
	p.cutOff(u, e.Seq, domain.ReasonUserDeactivated)
	return nil
}

func (p *Sessions) onReactivated(u *userEntry, e domain.Event) error {
	u.Deactivated = false
	return nil
}

// cutOff ends every live session of u issued before seq, in one pass over
// the user's sessions (time linear in their number, times the heap's log).
func (p *Sessions) cutOff(u *userEntry, seq uint64, reason string) {
	kept := u.sessions[:0]
	for _, s := range u.sessions {
		if s.EndByUser(seq, reason) {
			s.LastSeq = seq
			if !p.place(s) {
				p.bury(u, s.ID)
				continue
			}
		}
		kept = append(kept, s)
	}
	clear(u.sessions[len(kept):])
	u.sessions = kept
}

// settle puts s where its state says after it changed: in the deadline heap
// while live, in the pending set while its revocation is unannounced, and
// nowhere once it has ended.
func (p *Sessions) settle(u *userEntry, s *entry) {
	if !p.place(s) {
		u.remove(s)
		p.bury(u, s.ID)
	}
}

// place is settle but for the user's list: it reports whether s is still
// held.
func (p *Sessions) place(s *entry) bool {
	switch {
	case s.Live():
		heap.Fix(&p.deadlines, s.heapIndex)
		return true
	case s.heapIndex >= 0:
		heap.Remove(&p.deadlines, s.heapIndex)
	}
	if s.RevocationPending {
		p.pending[s.ID] = s
		return true
	}
	delete(p.pending, s.ID)
	delete(p.sessions, s.ID)
	return false
}

// maxInterned bounds the intern table: values past it are kept as they are.
const maxInterned = 10_000

// share points a session's repeated strings at copies already held: its
// user's key, a sibling session's user id, interned policy and user agent
// (the client id is interned already: domain.Session.Client).
func (p *Sessions) share(u *userEntry, s *domain.Session) {
	s.UserKey = u.Key
	if len(u.sessions) > 0 && u.sessions[0].UserID == s.UserID {
		s.UserID = u.sessions[0].UserID
	}
	s.Policy = p.internPolicy(*s.Policy)
	s.Device.UserAgent = p.intern(s.Device.UserAgent)
	s.Token.KeyID = p.intern(s.Token.KeyID)
}

// internPolicy returns one shared copy of a policy: most sessions use a preset.
func (p *Sessions) internPolicy(v domain.Policy) *domain.Policy {
	if shared, ok := p.policies[v]; ok {
		return shared
	}
	v.Name = p.intern(v.Name)
	shared := &v
	if len(p.policies) < maxInterned {
		p.policies[v] = shared
	}
	return shared
}

// intern returns one shared copy of a string that many sessions repeat
// (policy names, digest key ids, user agents).
func (p *Sessions) intern(s string) string {
	if v, ok := p.interned[s]; ok {
		return v
	}
	if len(p.interned) < maxInterned {
		p.interned[s] = s
	}
	return s
}

// Session returns a copy of the live session id, or of a session whose
// reuse revocation is still to be announced.
func (p *Sessions) Session(id string) (domain.Session, bool) {
	p.mu.RLock()
	defer p.mu.RUnlock()
	s, ok := p.sessions[id]
	if !ok {
		return domain.Session{}, false
	}
	return s.Session, true
}

// User returns a copy of the user's state, if the projection holds one: every
// user with an applied event is kept (its last user event and remembered
// ended sessions are what refuse a genuine event stored again out of place),
// at about 170 bytes each, plus the sessions it remembers
// (BenchmarkMemoryPerEndedUser).
func (p *Sessions) User(key string) (domain.User, bool) {
	p.mu.RLock()
	defer p.mu.RUnlock()
	u, ok := p.users[key]
	if !ok {
		return domain.User{}, false
	}
	return u.User, true
}

// UserSessions returns copies of the user's live sessions, oldest first.
func (p *Sessions) UserSessions(key string) []domain.Session {
	out, _ := p.UserSessionsPage(key, 0, math.MaxInt)
	return out
}

// UserSessionsPage returns copies of up to limit of the user's live
// sessions issued after stream sequence after, oldest first, and whether
// more follow. It costs O(log n + limit) in the user's n sessions.
func (p *Sessions) UserSessionsPage(key string, after uint64, limit int) (page []domain.Session, more bool) {
	p.mu.RLock()
	defer p.mu.RUnlock()
	u := p.users[key]
	if u == nil {
		return nil, false
	}
	i, found := u.find(after)
	if found {
		i++
	}
	page = make([]domain.Session, 0, min(limit, len(u.sessions)-i))
	for ; i < len(u.sessions); i++ {
		s := u.sessions[i]
		if !s.Live() {
			continue
		}
		if len(page) == limit {
			return page, true
		}
		page = append(page, s.Session)
	}
	return page, false
}

// PendingRevocations returns the sessions whose reuse revocation still needs
// its session.revoked event.
func (p *Sessions) PendingRevocations() []domain.Session {
	p.mu.RLock()
	defer p.mu.RUnlock()
	out := make([]domain.Session, 0, len(p.pending))
	for _, s := range p.pending {
		out = append(out, s.Session)
	}
	return out
}

// Due returns up to limit live sessions whose refresh deadline (the earlier of
// absolute lifetime and inactivity timeout) is at or before now, earliest
// first. It costs O(limit log n), whatever the number of sessions.
func (p *Sessions) Due(now time.Time, limit int) []domain.Session {
	p.mu.RLock()
	defer p.mu.RUnlock()
	var out []domain.Session
	// Walk the heap from its root: a node's children are never due before it.
	next := []int{0}
	for len(next) > 0 && len(out) < limit {
		i := next[len(next)-1]
		next = next[:len(next)-1]
		if i >= len(p.deadlines) || p.deadlines[i].RefreshDeadline() > domain.InstantOf(now) {
			continue
		}
		out = append(out, p.deadlines[i].Session)
		next = append(next, 2*i+1, 2*i+2)
	}
	slices.SortFunc(out, func(a, b domain.Session) int { return a.RefreshExpiresAt().Compare(b.RefreshExpiresAt()) })
	return out
}

// Live returns copies of every live session.
func (p *Sessions) Live() []domain.Session {
	p.mu.RLock()
	defer p.mu.RUnlock()
	out := make([]domain.Session, 0, len(p.deadlines))
	for _, s := range p.deadlines {
		out = append(out, s.Session)
	}
	return out
}

// LiveSessions returns the number of live sessions.
func (p *Sessions) LiveSessions() int {
	p.mu.RLock()
	defer p.mu.RUnlock()
	return len(p.deadlines)
}

// Applied returns the last applied stream sequence.
func (p *Sessions) Applied() uint64 { return p.applied.Load() }

// Fail marks the projection as stopped; waiters get domain.ErrProjectionFailed.
func (p *Sessions) Fail(err error) {
	p.wmu.Lock()
	defer p.wmu.Unlock()
	if p.failErr == nil {
		p.failErr = err
		close(p.failed)
	}
}

// Err returns why the projection stopped, or nil.
func (p *Sessions) Err() error {
	p.wmu.Lock()
	defer p.wmu.Unlock()
	return p.failErr
}

// WaitApplied blocks until the event at seq has been applied.
func (p *Sessions) WaitApplied(ctx context.Context, seq uint64) error {
	if p.applied.Load() >= seq {
		return nil
	}
	ch := make(chan struct{})
	p.wmu.Lock()
	if p.applied.Load() >= seq {
		p.wmu.Unlock()
		return nil
	}
	p.waiters = append(p.waiters, waiter{seq: seq, ch: ch})
	p.wmu.Unlock()
	select {
	case <-ch:
		return nil
	case <-p.failed:
		return fmt.Errorf("projections: wait for sequence %d: %w: %v", seq, domain.ErrProjectionFailed, p.Err())
	case <-ctx.Done():
		p.wmu.Lock()
		p.waiters = slices.DeleteFunc(p.waiters, func(w waiter) bool { return w.ch == ch })
		p.wmu.Unlock()
		return fmt.Errorf("projections: wait for sequence %d: %w (%v)", seq, domain.ErrUnavailable, ctx.Err())
	}
}

func (p *Sessions) wake(applied uint64) {
	p.wmu.Lock()
	defer p.wmu.Unlock()
	if len(p.waiters) == 0 {
		return
	}
	p.waiters = slices.DeleteFunc(p.waiters, func(w waiter) bool {
		if w.seq <= applied {
			close(w.ch)
			return true
		}
		return false
	})
}

// deadlineHeap orders live sessions by refresh deadline; each entry knows its
// index so a rotation moves it in O(log n).
type deadlineHeap []*entry

func (h deadlineHeap) Len() int { return len(h) }
func (h deadlineHeap) Less(i, j int) bool {
	return h[i].RefreshDeadline() < h[j].RefreshDeadline()
}
func (h deadlineHeap) Swap(i, j int) {
	h[i], h[j] = h[j], h[i]
	h[i].heapIndex, h[j].heapIndex = i, j
}
func (h *deadlineHeap) Push(x any) {
	e := x.(*entry)
	e.heapIndex = len(*h)
	*h = append(*h, e)
}
func (h *deadlineHeap) Pop() any {
	old := *h
	e := old[len(old)-1]
	old[len(old)-1] = nil
	e.heapIndex = -1
	*h = old[:len(old)-1]
	return e
}
