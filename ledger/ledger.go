// Package ledger carries out the ledger's commands: it decides on the state the
// projection holds, appends the decided event with optimistic concurrency, and
// answers once the projection has applied that event (read-your-writes).
package ledger

import (
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/oklog/ulid/v2"

	"github.com/sessionledger/sessionledger/accesstoken"
	"github.com/sessionledger/sessionledger/domain"
	"github.com/sessionledger/sessionledger/projections"
)

// Defaults.
const (
	DefaultReuseGrace = 10 * time.Second
	// DefaultRequestTimeout is the budget of one request, end to end: every
	// stream lookup, append and wait for the projection it makes shares it.
	// It is at most half the default reuse grace window, so a client that
	// retries after a 503 whose rotation did land is still within the window
	// and gets the same successor.
	DefaultRequestTimeout = 5 * time.Second
	// maxWriteAttempts bounds how often one command decides again after losing
	// a race to another writer of the same user.
	maxWriteAttempts = 100
)

// Config tunes a Ledger. Zero values take the defaults.
type Config struct {
	ReuseGrace    time.Duration // tolerate the previous refresh token this long after its rotation; negative: never
	DefaultPolicy domain.Policy
	Now           func() time.Time
	// RequestTimeout is the budget of one command or read, end to end (see
	// DefaultRequestTimeout); a caller's earlier deadline wins.
	RequestTimeout time.Duration
	Logger         *slog.Logger
	// OnConflict, if set, is called for each append that lost to another writer.
	OnConflict func()
}

// Keys are the secrets a Ledger needs.
type Keys struct {
	Token      domain.TokenKeys
	SubjectKey []byte // keys the user-key digest in subjects
}

// Ledger runs commands against the event store and answers from the projection.
type Ledger struct {
	store  domain.EventStore
	proj   *projections.Sessions
	signer *accesstoken.Signer
	keys   Keys
	cfg    Config
	log    *slog.Logger
	reads  *readBarrier
}

// New returns a Ledger.
func New(store domain.EventStore, proj *projections.Sessions, signer *accesstoken.Signer, keys Keys, cfg Config) *Ledger {
	if cfg.ReuseGrace == 0 {
		cfg.ReuseGrace = DefaultReuseGrace
	}
	if cfg.DefaultPolicy.Name == "" {
		cfg.DefaultPolicy, _ = domain.Preset(domain.PolicyConsumer)
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.RequestTimeout <= 0 {
		cfg.RequestTimeout = DefaultRequestTimeout
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Ledger{store: store, proj: proj, signer: signer, keys: keys, cfg: cfg, log: log,
		reads: &readBarrier{lookup: store.LastSeq, timeout: cfg.RequestTimeout}}
}

// RequestTimeout is the budget of one request (Config.RequestTimeout).
func (l *Ledger) RequestTimeout() time.Duration { return l.cfg.RequestTimeout }

// budget gives a command or read its one deadline: the caller's, or
// RequestTimeout from now when that is earlier. Every lookup, append and wait
// for the projection under it shares the deadline; none sets its own. The
// returned func, deferred with the answer's error, turns an answer that is
// ready only after the deadline into domain.ErrUnavailable: by then the
// caller has given up, and must not be told of a success it never hears
// about. A retry is safe: a rotation that did land is tolerated within the
// reuse grace window, which is longer than the budget. (An issue that did
// land leaves a session nobody holds a token of; it ends at its deadline.) A
// stopped projection keeps its own answer: an operator must act.
func (l *Ledger) budget(ctx context.Context) (context.Context, func(*error)) {
	cancel := context.CancelFunc(func() {})
	if d, ok := ctx.Deadline(); !ok || time.Until(d) > l.cfg.RequestTimeout {
		// No earlier deadline (a caller other than HTTP): start one. With
		// one, as every HTTP request has, no second timer is needed.
		ctx, cancel = context.WithTimeout(ctx, l.cfg.RequestTimeout)
	}
	return ctx, func(err *error) {
		defer cancel()
		if ctx.Err() != nil && !errors.Is(*err, domain.ErrUnavailable) && !errors.Is(*err, domain.ErrProjectionFailed) {
			*err = fmt.Errorf("ledger: %w: the request's deadline passed (%v)", domain.ErrUnavailable, ctx.Err())
		}
	}
}

// UserKey is the subject-safe keyed digest of a user id: no personal data in
// subjects, and subscribers can still filter on one user.
func (l *Ledger) UserKey(userID string) string {
	m := hmac.New(sha256.New, l.keys.SubjectKey)
	m.Write([]byte("sessionledger user key v1\x00"))
	m.Write([]byte(userID))
	return hex.EncodeToString(m.Sum(nil)[:16])
}

// TokenPair is what a client gets when a session is issued or refreshed.
type TokenPair struct {
	SessionID             string
	AccessToken           string
	ExpiresIn             int64 // seconds
	RefreshToken          string
	RefreshTokenExpiresAt time.Time
	Outcome               domain.RefreshOutcome
}

// A decision is what a command decided on the state it saw: the event to
// record (nil: none), the session it belongs to ("" for a user event), and the
// answer to give once the event, if any, is recorded. A refusal that records
// something first (an expired session, a reused token) has both.
type decision struct {
	event   domain.Payload
	session string
	err     error
	// For a refresh: its whole decision (the outcome, the token to hand
	// out) and the session state it was decided on.
	refresh domain.RefreshDecision
	state   domain.Session
}

// write decides on the projection's state and appends the decided event,
// expecting the user's last sequence, then waits until the projection has
// applied it (read-your-writes). It returns the recorded event (zero when the
// decision records nothing), the decision, and the decision's answer or why
// the write failed.
//
// The state decided on must include the user's last stored event, which
// another instance may have written a moment ago. An append checks that by
// itself: when another writer came first it fails, and write catches up with
// the user's events and decides again. A decision that records nothing has no
// such check, so it is trusted only once write has caught up.
func (l *Ledger) write(ctx context.Context, userKey string, decide func(now time.Time) decision) (domain.Event, decision, error) {
	// The user's last event: its sequence is what the append expects, its
	// digest what the new event chains to.
	var last domain.User
	caughtUp := false
	catchUp := func() error {
		var err error
		last, err = l.catchUp(ctx, userKey)
		caughtUp = true
		return err
	}
	for attempt := 0; attempt < maxWriteAttempts; attempt++ {
		if u, held := l.proj.User(userKey); held && u.LastSeq >= last.LastSeq {
			last = u
		} else if !held && !caughtUp {
			// A user the projection does not hold (none of its sessions is
			// live) may still have events: read the last.
			if err := catchUp(); err != nil {
				return domain.Event{}, decision{}, err
			}
		}
		now := l.cfg.Now()
		d := decide(now)
		if d.event == nil {
			if caughtUp {
				return domain.Event{}, d, d.err
			}
			if err := catchUp(); err != nil {
				return domain.Event{}, d, err
			}
			continue
		}
		e := domain.Event{ID: ulid.Make().String(), Time: now, SessionID: d.session, UserKey: userKey, Data: d.event}
		if last.ChainSeq > 0 {
			e.Prev = append([]byte(nil), last.LastDigest[:]...)
		}
		seq, err := l.store.Append(ctx, e, last.LastSeq)
		if errors.Is(err, domain.ErrConflict) {
			if l.cfg.OnConflict != nil {
				l.cfg.OnConflict()
			}
			if err := catchUp(); err != nil {
				return domain.Event{}, d, err
			}
			continue
		}
		if err != nil {
			return domain.Event{}, d, err
		}
		e.Seq = seq
		if err := l.proj.WaitApplied(ctx, seq); err != nil {
			return domain.Event{}, d, err
		}
		return e, d, d.err
	}
	return domain.Event{}, decision{}, fmt.Errorf("ledger: %d attempts lost to concurrent writers: %w", maxWriteAttempts, domain.ErrConflict)
}

// session returns a session's state. When this instance does not hold it
// (issued on another instance a moment ago), it first catches up with the
// session's own events.
func (l *Ledger) session(ctx context.Context, sessionID string) (domain.Session, bool, error) {
	if s, ok := l.proj.Session(sessionID); ok {
		return s, true, nil
	}
	last, err := l.store.LastSessionSeq(ctx, sessionID)
	if err != nil || last == 0 {
		return domain.Session{}, false, err
	}
	// Look again even when last is already applied: it may have been applied
	// between the first look and now.
	if err := l.proj.WaitApplied(ctx, last); err != nil {
		return domain.Session{}, false, err
	}
	s, ok := l.proj.Session(sessionID)
	return s, ok, nil
}

// current waits until the projection has applied every message stored
// before current was called, on any instance: then an answer from the
// projection is linearizable. Concurrent reads share the stream lookup
// (readBarrier).
func (l *Ledger) current(ctx context.Context) error {
	seq, err := l.reads.wait(ctx)
	if err != nil {
		return err
	}
	return l.proj.WaitApplied(ctx, seq)
}

// catchUp waits until the projection has applied the last message stored
// under the user's subjects and returns the user's state then: that
// message's sequence is what the next append expects (even when it was a
// message the projection refused), and the user's chain head what it
// continues.
func (l *Ledger) catchUp(ctx context.Context, userKey string) (domain.User, error) {
	seq, err := l.store.LastUserSeq(ctx, userKey)
	if err != nil {
		return domain.User{}, err
	}
	if err := l.proj.WaitApplied(ctx, seq); err != nil {
		return domain.User{}, err
	}
	u, _ := l.proj.User(userKey)
	u.Key, u.LastSeq = userKey, max(u.LastSeq, seq)
	return u, nil
}

// Issue opens a session for a user and returns its first token pair.
func (l *Ledger) Issue(ctx context.Context, req IssueRequest) (_ TokenPair, err error) {
	ctx, done := l.budget(ctx)
	defer done(&err)
	policy, claims, err := l.validate(&req)
	if err != nil {
		return TokenPair{}, err
	}
	tok := domain.RefreshToken{SessionID: ulid.Make().String()}
	_, _ = rand.Read(tok.Secret[:])
	userKey := l.UserKey(req.UserID)
	e, _, err := l.write(ctx, userKey, func(time.Time) decision {
		var user *domain.User
		if u, ok := l.proj.User(userKey); ok {
			user = &u
		}
		if err := domain.DecideIssue(user); err != nil {
			return decision{err: err}
		}
		return decision{session: tok.SessionID, event: domain.SessionIssued{
			UserID: req.UserID, Policy: policy, Device: req.Device, Claims: claims,
			RefreshToken: l.keys.Token.Digest(tok),
		}}
	})
	if err != nil {
		return TokenPair{}, err
	}
	var s domain.Session
	if err := s.Apply(e); err != nil {
		return TokenPair{}, err
	}
	return l.mint(&s, tok, e.Time, domain.OutcomeRotated)
}

// Refresh exchanges a refresh token for a new pair (RFC 6749 §6).
func (l *Ledger) Refresh(ctx context.Context, raw string) (_ TokenPair, err error) {
	ctx, done := l.budget(ctx)
	defer done(&err)
	t, err := domain.ParseRefreshToken(raw)
	if err != nil {
		return TokenPair{Outcome: domain.OutcomeInvalid}, err
	}
	s, ok, err := l.session(ctx, t.SessionID)
	if err != nil || !ok {
		if err == nil {
			err = domain.ErrTokenUnknown
		}
		return TokenPair{Outcome: domain.OutcomeInvalid}, err
	}
	e, d, err := l.write(ctx, s.UserKey, func(now time.Time) decision {
		s, ok := l.proj.Session(t.SessionID)
		if !ok {
			return decision{err: domain.ErrTokenUnknown, refresh: domain.RefreshDecision{Outcome: domain.OutcomeInvalid}}
		}
		rd := domain.DecideRefresh(&s, t, l.keys.Token, now, l.grace())
		return decision{event: rd.Event, session: s.ID, err: rd.Err, refresh: rd, state: s}
	})
	if err != nil {
		if errors.Is(err, domain.ErrTokenReused) {
			l.completeRevocation(ctx, s.UserKey, s.ID)
		}
		return TokenPair{Outcome: d.refresh.Outcome}, err
	}
	s = d.state
	if err := s.Apply(e); err != nil {
		return TokenPair{}, err
	}
	return l.mint(&s, d.refresh.Token, e.Time, d.refresh.Outcome)
}

func (l *Ledger) grace() time.Duration {
	if l.cfg.ReuseGrace < 0 {
		return 0
	}
	return l.cfg.ReuseGrace
}

// completeRevocation records the session.revoked that follows a reuse which
// revoked the family, so revocation subscribers hear of it. Errors are logged:
// the session is already revoked, and CompletePendingRevocations retries.
func (l *Ledger) completeRevocation(ctx context.Context, userKey, sessionID string) {
	var err error
	ctx, done := l.budget(ctx)
	defer done(&err)
	_, _, err = l.write(ctx, userKey, func(time.Time) decision {
		s, ok := l.proj.Session(sessionID)
		if !ok {
			return decision{}
		}
		return decision{event: domain.DecideCompleteRevocation(&s), session: sessionID}
	})
	if err != nil {
		l.log.Error("ledger: record revocation after reuse", "session_id", sessionID, "err", err)
	}
}

// CompletePendingRevocations records session.revoked for every session that
// reuse revoked without it being recorded (a crash between the two appends).
func (l *Ledger) CompletePendingRevocations(ctx context.Context) {
	for _, s := range l.proj.PendingRevocations() {
		l.completeRevocation(ctx, s.UserKey, s.ID)
	}
}

// mint signs an access token for s and pairs it with refresh token rt.
func (l *Ledger) mint(s *domain.Session, rt domain.RefreshToken, now time.Time, outcome domain.RefreshOutcome) (TokenPair, error) {
	exp := now.Add(s.Policy.AccessTokenTTL.Duration())
	if abs := s.AbsoluteDeadline(); abs.Before(exp) {
		exp = abs
	}
	at, err := l.signer.Sign(accesstoken.Claims{
		Subject: s.UserID, SessionID: s.ID, SessionSeq: s.IssuedSeq, ID: ulid.Make().String(),
		IssuedAt: now, ExpiresAt: exp, Custom: s.Claims,
	})
	if err != nil {
		return TokenPair{}, err
	}
	return TokenPair{
		SessionID:             s.ID,
		AccessToken:           at,
		ExpiresIn:             int64(exp.Sub(now) / time.Second),
		RefreshToken:          rt.Encode(),
		RefreshTokenExpiresAt: s.RefreshExpiresAt(),
		Outcome:               outcome,
	}, nil
}
