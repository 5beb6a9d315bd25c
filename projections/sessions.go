// Package projections builds in-memory read models from the ledger's events.
// They change only by applying events in stream order.
package projections

import (
	"cmp"
	"container/heap"
	"context"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/sessionledger/sessionledger/domain"
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
	// restored from: up to it, events may find state that already has them.
	fuzzyUntil uint64

	wmu     sync.Mutex
	waiters []waiter
	failed  chan struct{} // closed by Fail
	failErr error         // set before failed is closed
}

type userEntry struct {
	domain.User
	sessions []*entry // users have a handful: a slice costs far less than a map
}

func (u *userEntry) remove(s *entry) {
	if i := slices.Index(u.sessions, s); i >= 0 {
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

// Apply folds e into the projection. Events at or below the last applied
// sequence are ignored. An event that contradicts the state (which the
// ledger's optimistic concurrency prevents) is logged and otherwise ignored;
// it still advances the applied sequence.
func (p *Sessions) Apply(e domain.Event) error {
	if e.Seq <= p.applied.Load() {
		return nil
	}
	reduce, ok := reducers[e.Type()]
	if !ok {
		return fmt.Errorf("projections: %w %q at sequence %d", domain.ErrUnknownEventType, e.Type(), e.Seq)
	}
	p.mu.Lock()
	u := p.users[e.UserKey]
	if u == nil {
		u = &userEntry{User: domain.User{Key: e.UserKey}}
		p.users[e.UserKey] = u
	}
	if e.Seq > u.LastSeq {
		u.LastSeq, u.LastDigest = e.Seq, e.Digest
	}
	var err error
	if s := p.sessions[e.SessionID]; e.SessionID == "" || s == nil || e.Seq > s.LastSeq {
		err = reduce(p, u, e)
	}
	if len(u.sessions) == 0 && !u.Deactivated {
		delete(p.users, u.Key)
	}
	p.mu.Unlock()
	p.applied.Store(e.Seq)
	p.wake(e.Seq)
	switch {
	case err != nil && e.Seq <= p.fuzzyUntil:
		// Replaying over a fuzzy snapshot: the state may already be past it.
		p.log.Debug("projection: event already reflected by the snapshot", "seq", e.Seq, "event", e.Type(), "session_id", e.SessionID, "err", err)
	case err != nil:
		p.log.Error("projection: event does not apply to the state", "seq", e.Seq, "event", e.Type(), "session_id", e.SessionID, "err", err)
	}
	return nil
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
	u.sessions = append(u.sessions, s)
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

func (p *Sessions) cutOff(u *userEntry, seq uint64, reason string) {
	for _, s := range slices.Clone(u.sessions) { // settle removes from u.sessions
		if s.EndByUser(seq, reason) {
			s.LastSeq = seq
			p.settle(u, s)
		}
	}
}

// settle puts s where its state says after it changed: in the deadline heap
// while live, in the pending set while its revocation is unannounced, and
// nowhere once it has ended.
func (p *Sessions) settle(u *userEntry, s *entry) {
	switch {
	case s.Live():
		heap.Fix(&p.deadlines, s.heapIndex)
		return
	case s.heapIndex >= 0:
		heap.Remove(&p.deadlines, s.heapIndex)
	}
	if s.RevocationPending {
		p.pending[s.ID] = s
		return
	}
	delete(p.pending, s.ID)
	delete(p.sessions, s.ID)
	u.remove(s)
}

// maxInterned bounds the intern table: values past it are kept as they are.
const maxInterned = 10_000

// share points a session's repeated strings at copies already held: its
// user's key, a sibling session's user id, interned policy and user agent.
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

// User returns a copy of the user's state, if the projection holds one (a
// user with live sessions or deactivated).
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
	p.mu.RLock()
	u := p.users[key]
	var out []domain.Session
	if u != nil {
		out = make([]domain.Session, 0, len(u.sessions))
		for _, s := range u.sessions {
			if s.Live() {
				out = append(out, s.Session)
			}
		}
	}
	p.mu.RUnlock()
	slices.SortFunc(out, func(a, b domain.Session) int { return cmp.Compare(a.IssuedSeq, b.IssuedSeq) })
	return out
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
