// Package ledger carries out the ledger's commands: it decides on the state the
// projection holds, appends the decided event with optimistic concurrency on
// the one session (or, for a user event, the user's user events) it
// concerns, and answers once the projection has applied that event
// (read-your-writes).
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
	"sync/atomic"
	"time"

	"github.com/oklog/ulid/v2"

	"github.com/sessionledger/sessionledger/accesstoken"
	"github.com/sessionledger/sessionledger/domain"
	"github.com/sessionledger/sessionledger/projections"
)

// Defaults.
const (
	DefaultReuseGrace = 10 * time.Second
	// DefaultClientID is the client id of sessions issued without one when
	// Config.DefaultClientID is not set.
	DefaultClientID = "default"
	// DefaultRequestTimeout is the budget of one request, end to end: every
	// stream lookup, append and wait for the projection it makes shares it.
	// It is at most half the default reuse grace window, so a client that
	// retries after a 503 whose rotation did land is still within the window
	// and gets the same successor.
	DefaultRequestTimeout = 5 * time.Second
	// maxWriteAttempts bounds how often one command decides again after losing
	// a race to another writer of the same session (or user, for a user
	// event).
	maxWriteAttempts = 100
)

// DefaultMaxAccessTokenTTL is the longest access-token lifetime by default:
// the longest of the presets, and the verifier's default MaxTokenTTL.
const DefaultMaxAccessTokenTTL = time.Hour

// Config tunes a Ledger. Zero values take the defaults.
type Config struct {
	ReuseGrace    time.Duration // tolerate the previous refresh token this long after its rotation; negative: never
	DefaultPolicy domain.Policy
	// DefaultClientID is the client id of sessions issued without one, and
	// the client_id claim of tokens of sessions issued before client ids
	// were recorded (DefaultClientID when empty).
	DefaultClientID string
	Now             func() time.Time
	// RequestTimeout is the budget of one command or read, end to end (see
	// DefaultRequestTimeout); a caller's earlier deadline wins.
	RequestTimeout time.Duration
	// MaxAccessTokenTTL bounds every access token's lifetime (default
	// DefaultMaxAccessTokenTTL): a session whose policy asks for more gets
	// tokens of this lifetime. A retired signing key stays in the JWKS this
	// long (plus leeway) after it last signed.
	MaxAccessTokenTTL time.Duration
	// ResolveTokenKey, when set, is called when a session's recorded digest
	// names a refresh-token key not held: it reads the rotated keys again
	// (calling SetTokenKeys) and reports whether the key is held now.
	ResolveTokenKey func(ctx context.Context, id string) bool
	Logger          *slog.Logger
	// OnConflict, if set, is called for each append that lost to another writer.
	OnConflict func()
}

// Keys are the secrets a Ledger needs.
type Keys struct {
	// Token are the refresh-token keys at start; SetTokenKeys replaces them
	// when they rotate.
	Token domain.TokenKeys
	// SubjectKey keys the user-key digest in subjects. It never rotates: it
	// names every user's subjects in the stream.
	SubjectKey []byte
}

// Ledger runs commands against the event store and answers from the projection.
type Ledger struct {
	store  domain.EventStore
	proj   *projections.Sessions
	signer *accesstoken.Signer
	keys   Keys
	tokens atomic.Pointer[domain.TokenKeys]
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
	if cfg.DefaultClientID == "" {
		cfg.DefaultClientID = DefaultClientID
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.RequestTimeout <= 0 {
		cfg.RequestTimeout = DefaultRequestTimeout
	}
	if cfg.MaxAccessTokenTTL <= 0 {
		cfg.MaxAccessTokenTTL = DefaultMaxAccessTokenTTL
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	l := &Ledger{store: store, proj: proj, signer: signer, keys: keys, cfg: cfg, log: log,
		reads: &readBarrier{lookup: store.LastSeq, timeout: cfg.RequestTimeout}}
	l.SetTokenKeys(keys.Token)
	return l
}

// SetTokenKeys replaces the refresh-token keys (a rotation: the new current
// key, with the older ones kept). Safe while commands run: each decision
// uses one set.
func (l *Ledger) SetTokenKeys(k domain.TokenKeys) { l.tokens.Store(&k) }

func (l *Ledger) tokenKeys() domain.TokenKeys { return *l.tokens.Load() }

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
// record (nil: none), the session it belongs to ("" for a user event), what
// its append expects (the sequence of the session's last event, or of the
// user's last user event, as the state showed it), and the answer to give
// once the event, if any, is recorded. A refusal that records something
// first (an expired session, a reused token) has both.
type decision struct {
	event   domain.Payload
	session string
	expect  uint64
	err     error
	// For a refresh: its whole decision (the outcome, the token to hand
	// out) and the session state it was decided on.
	refresh domain.RefreshDecision
	state   domain.Session
}

// write decides on the projection's state and appends the decided event,
// then waits until the projection has applied it (read-your-writes). It
// returns the recorded event (zero when the decision records nothing), the
// decision, whether the event was superseded (below), and the decision's
// answer or why the write failed.
//
// Concurrency is per session: the append expects the session's last event
// (a user event: the user's last user event), so writes to different
// sessions of one user never conflict. When another write to the same
// session came first, the append fails with the sequence of the last
// message there; write waits until the projection has applied it and
// decides again. A decision that records nothing has no such check, so it
// is trusted only once the projection is current (Ledger.current).
//
// What per-session concurrency lets through is a session write decided
// before a user event (a revoke-all, a deactivation) that the stream stored
// first. The projection applies the stream in order, so such a write
// changes nothing (it is superseded); the command answers from the state
// after it.
func (l *Ledger) write(ctx context.Context, userKey string, decide func(now time.Time) decision) (_ domain.Event, _ decision, superseded bool, _ error) {
	caughtUp := false
	var floor uint64 // the last message under the expectation subjects, after a conflict
	for attempt := 0; attempt < maxWriteAttempts; attempt++ {
		now := l.cfg.Now()
		d := decide(now)
		if d.event == nil {
			if caughtUp {
				return domain.Event{}, d, false, d.err
			}
			if err := l.current(ctx); err != nil {
				return domain.Event{}, d, false, err
			}
			caughtUp = true
			continue
		}
		expect := max(d.expect, floor)
		e := domain.Event{ID: ulid.Make().String(), Time: now, SessionID: d.session, UserKey: userKey, Data: d.event, Expect: &expect}
		seq, err := l.store.Append(ctx, e)
		var conflict *domain.ConflictError
		if errors.As(err, &conflict) {
			if l.cfg.OnConflict != nil {
				l.cfg.OnConflict()
			}
			if err := l.proj.WaitApplied(ctx, conflict.Last); err != nil {
				return domain.Event{}, d, false, err
			}
			floor = conflict.Last
			continue
		}
		if err != nil {
			return domain.Event{}, d, false, err
		}
		e.Seq = seq
		if err := l.proj.WaitApplied(ctx, seq); err != nil {
			return domain.Event{}, d, false, err
		}
		if refused, known := l.proj.WasRefused(seq); refused || !known {
			// The stream holds this very event (eventstore compares the
			// bytes), so a refusal means the projection's view of where it
			// belongs differs: nothing to report as done. (Unknown: hundreds
			// of refusals in the moment since.)
			l.log.Error("ledger: the projection did not apply the ledger's own event", "seq", seq, "event", e.Type(), "refused", refused)
			return domain.Event{}, d, false, fmt.Errorf("ledger: %w: the event at sequence %d was not applied", domain.ErrUnavailable, seq)
		}
		return e, d, l.superseded(e), d.err
	}
	return domain.Event{}, decision{}, false, fmt.Errorf("ledger: %d attempts lost to concurrent writers: %w", maxWriteAttempts, domain.ErrConflict)
}

// superseded reports whether e, applied, changed nothing because an earlier
// user event had ended what it was decided on, as the projection noted when
// it applied e. Should the projection no longer know (over a thousand
// events superseded since, in the moment since e was applied), the state
// tells what matters: the session is no longer held, or holds no event as
// late as e, so it has ended either way, and e's command overlapped the
// user event that ended it: answering as if that came first is
// linearizable.
func (l *Ledger) superseded(e domain.Event) bool {
	if e.SessionID == "" {
		return false
	}
	if sup, known := l.proj.WasSuperseded(e.Seq); known {
		return sup
	}
	s, ok := l.proj.Session(e.SessionID)
	return !ok || s.LastSeq < e.Seq
}

// session returns a session's state. When this instance does not hold it
// (ended, or issued on another instance a moment ago), it first makes the
// projection current (Ledger.current): one lookup of the stream's last
// sequence, shared by the reads waiting meanwhile, whatever the number of
// users and sessions.
func (l *Ledger) session(ctx context.Context, sessionID string) (domain.Session, bool, error) {
	if s, ok := l.proj.Session(sessionID); ok {
		return s, true, nil
	}
	if err := l.current(ctx); err != nil {
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
	tokens := l.tokenKeys() // one set of keys seals the token and digests it
	tok = tokens.Seal(tok)
	userKey := l.UserKey(req.UserID)
	// A new session: its append expects nothing under its own subjects, so
	// issues to one user never conflict. A deactivation stored first makes
	// the issue change nothing (superseded): then the user is deactivated.
	e, _, superseded, err := l.write(ctx, userKey, func(time.Time) decision {
		var user *domain.User
		if u, ok := l.proj.User(userKey); ok {
			user = &u
		}
		if err := domain.DecideIssue(user); err != nil {
			return decision{err: err}
		}
		return decision{session: tok.SessionID, event: domain.SessionIssued{
			UserID: req.UserID, ClientID: req.ClientID, Policy: policy, Device: req.Device, Claims: claims,
			RefreshToken: tokens.Digest(tok),
		}}
	})
	if err == nil && superseded {
		err = domain.ErrUserDeactivated
	}
	if err != nil {
		return TokenPair{}, err
	}
	var s domain.Session
	if err := s.Apply(e); err != nil {
		return TokenPair{}, err
	}
	return l.mint(&s, tok, e.Time, domain.OutcomeRotated)
}

// tokenSession returns the session of refresh token t, as session does, once
// t could be the ledger's: a tagged token whose tag does not verify is
// refused with one HMAC and no lookup. A legacy (untagged) token is decided
// on the projection alone: it was issued before tags, so its session, if
// live, was applied long since, and every rotation after it made a tagged
// token; one that is not genuine against the state held (a bounded walk,
// domain.MaxLegacyGenerationsBehind) is refused here, before any write.
//
// Refresh-token keys rotate: when the session's recorded digest names a key
// this instance has not read yet (another instance rotated the session
// under it), the keys are read again before anything is decided. Only a
// recorded digest triggers that, never what a caller sends: a forged tag
// costs a projection lookup at most.
func (l *Ledger) tokenSession(ctx context.Context, t domain.RefreshToken) (domain.Session, bool, error) {
	if !t.Tagged {
		s, ok := l.proj.Session(t.SessionID)
		if ok {
			l.holdKeyOf(ctx, &s)
			_, ok = l.tokenKeys().GenerationsBehind(&s, t)
		}
		return s, ok, nil
	}
	if !l.tokenKeys().Authentic(t) {
		s, ok := l.proj.Session(t.SessionID)
		if !ok || !l.holdKeyOf(ctx, &s) || !l.tokenKeys().Authentic(t) {
			return domain.Session{}, false, nil
		}
	}
	s, ok, err := l.session(ctx, t.SessionID)
	if ok {
		l.holdKeyOf(ctx, &s)
	}
	return s, ok, err
}

// holdKeyOf reads the refresh-token keys again when s's digest names one
// not held, and reports whether it is held now after not being before.
func (l *Ledger) holdKeyOf(ctx context.Context, s *domain.Session) bool {
	if l.cfg.ResolveTokenKey == nil || s.Token.KeyID == "" || l.tokenKeys().Holds(s.Token.KeyID) {
		return false
	}
	return l.cfg.ResolveTokenKey(ctx, s.Token.KeyID)
}

// Refresh exchanges a refresh token for a new pair (RFC 6749 §6).
func (l *Ledger) Refresh(ctx context.Context, raw string) (_ TokenPair, err error) {
	ctx, done := l.budget(ctx)
	defer done(&err)
	t, err := domain.ParseRefreshToken(raw)
	if err != nil {
		return TokenPair{Outcome: domain.OutcomeInvalid}, err
	}
	s, ok, err := l.tokenSession(ctx, t)
	if err != nil || !ok {
		if err == nil {
			err = domain.ErrTokenUnknown
		}
		return TokenPair{Outcome: domain.OutcomeInvalid}, err
	}
	e, d, superseded, err := l.write(ctx, s.UserKey, func(now time.Time) decision {
		s, ok := l.proj.Session(t.SessionID)
		if !ok {
			return decision{err: domain.ErrTokenUnknown, refresh: domain.RefreshDecision{Outcome: domain.OutcomeInvalid}}
		}
		rd := domain.DecideRefresh(&s, t, l.tokenKeys(), now, l.grace())
		return decision{event: rd.Event, session: s.ID, expect: s.LastSeq, err: rd.Err, refresh: rd, state: s}
	})
	if err == nil && superseded {
		// A revoke-all or deactivation was stored before the rotation: the
		// session ended there, and the token handed out would be of no use.
		return TokenPair{Outcome: domain.OutcomeInvalid}, domain.ErrSessionEnded
	}
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
	_, _, _, err = l.write(ctx, userKey, func(time.Time) decision {
		s, ok := l.proj.Session(sessionID)
		if !ok {
			return decision{}
		}
		return decision{event: domain.DecideCompleteRevocation(&s), session: sessionID, expect: s.LastSeq}
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

// ClientID is the client_id of s's tokens: the one it was issued for, or,
// for a session issued before client ids were recorded, the default.
func (l *Ledger) ClientID(s *domain.Session) string {
	if id := s.ClientID(); id != "" {
		return id
	}
	return l.cfg.DefaultClientID
}

// mint signs an access token for s and pairs it with refresh token rt.
func (l *Ledger) mint(s *domain.Session, rt domain.RefreshToken, now time.Time, outcome domain.RefreshOutcome) (TokenPair, error) {
	exp := now.Add(min(s.Policy.AccessTokenTTL.Duration(), l.cfg.MaxAccessTokenTTL))
	if abs := s.AbsoluteDeadline(); abs.Before(exp) {
		exp = abs
	}
	at, err := l.signer.Sign(accesstoken.Claims{
		Subject: s.UserID, SessionID: s.ID, SessionSeq: s.IssuedSeq, ClientID: l.ClientID(s), ID: ulid.Make().String(),
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
