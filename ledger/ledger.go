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
	// DefaultWriteTimeout bounds a command. It is kept well under the default
	// reuse grace window, so a client that retries after a 503 whose rotation
	// did land is still within the window and gets the same successor.
	DefaultWriteTimeout = 5 * time.Second
	// maxWriteAttempts bounds how often one command decides again after losing
	// a race to another writer of the same user.
	maxWriteAttempts = 100
)

// Config tunes a Ledger. Zero values take the defaults.
type Config struct {
	ReuseGrace    time.Duration // tolerate the previous refresh token this long after its rotation; negative: never
	DefaultPolicy domain.Policy
	Now           func() time.Time
	WriteTimeout  time.Duration
	Logger        *slog.Logger
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
	if cfg.WriteTimeout <= 0 {
		cfg.WriteTimeout = DefaultWriteTimeout
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Ledger{store: store, proj: proj, signer: signer, keys: keys, cfg: cfg, log: log}
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

// decideFunc decides on the current state at now: the payload to append (nil
// for nothing) and the session it belongs to ("" for a user event), or the
// error to answer without writing.
type decideFunc func(now time.Time) (domain.Payload, string, error)

// write runs decide on fresh state and appends its event with the user's last
// sequence as the expectation. When another writer came first it catches up
// with the user's events and decides again; a decision to write nothing is
// also made again once caught up. It returns once the projection has applied
// the event; a zero Event means decide chose to write nothing.
func (l *Ledger) write(ctx context.Context, userKey string, decide decideFunc) (domain.Event, error) {
	ctx, cancel := context.WithTimeout(ctx, l.cfg.WriteTimeout)
	defer cancel()
	// The user's last event: its sequence is what the append expects, its
	// digest what the new event chains to. A user the projection does not
	// hold (none of its sessions is live) may still have events: read the last.
	var last domain.User
	for attempt := 0; attempt < maxWriteAttempts; attempt++ {
		u, held := l.proj.User(userKey)
		switch {
		case held && u.LastSeq >= last.LastSeq:
			last = u
		case !held && attempt == 0:
			var err error
			if last, err = l.catchUp(ctx, userKey); err != nil {
				return domain.Event{}, err
			}
		}
		now := l.cfg.Now()
		p, sessionID, err := decide(now)
		if p == nil {
			// A refusal or a no-op writes nothing, so no expected-sequence
			// check would catch a stale decision: decide once more on the
			// user's latest events (another instance may have written them).
			if attempt == 0 {
				if last, err = l.catchUp(ctx, userKey); err != nil {
					return domain.Event{}, err
				}
				continue
			}
			return domain.Event{}, err
		}
		if err != nil {
			return domain.Event{}, err
		}
		e := domain.Event{ID: ulid.Make().String(), Time: now, SessionID: sessionID, UserKey: userKey, Data: p}
		if last.LastSeq > 0 {
			e.Prev = append([]byte(nil), last.LastDigest[:]...)
		}
		seq, err := l.store.Append(ctx, e, last.LastSeq)
		if errors.Is(err, domain.ErrConflict) {
			if l.cfg.OnConflict != nil {
				l.cfg.OnConflict()
			}
			if last, err = l.catchUp(ctx, userKey); err != nil {
				return domain.Event{}, err
			}
			continue
		}
		if err != nil {
			return domain.Event{}, err
		}
		e.Seq = seq
		if err := l.proj.WaitApplied(ctx, seq); err != nil {
			return domain.Event{}, err
		}
		return e, nil
	}
	return domain.Event{}, fmt.Errorf("ledger: %d attempts lost to concurrent writers: %w", maxWriteAttempts, domain.ErrConflict)
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
	ctx, cancel := context.WithTimeout(ctx, l.cfg.WriteTimeout)
	defer cancel()
	if err := l.proj.WaitApplied(ctx, last); err != nil {
		return domain.Session{}, false, err
	}
	s, ok := l.proj.Session(sessionID)
	return s, ok, nil
}

// catchUp waits until the projection has applied the user's last stored event
// and returns that event's sequence and digest.
func (l *Ledger) catchUp(ctx context.Context, userKey string) (domain.User, error) {
	seq, digest, err := l.store.LastUserEvent(ctx, userKey)
	if err != nil {
		return domain.User{}, err
	}
	return domain.User{Key: userKey, LastSeq: seq, LastDigest: digest}, l.proj.WaitApplied(ctx, seq)
}

// Issue opens a session for a user and returns its first token pair.
func (l *Ledger) Issue(ctx context.Context, req IssueRequest) (TokenPair, error) {
	policy, claims, err := l.validate(&req)
	if err != nil {
		return TokenPair{}, err
	}
	tok := domain.RefreshToken{SessionID: ulid.Make().String()}
	_, _ = rand.Read(tok.Secret[:])
	userKey := l.UserKey(req.UserID)
	e, err := l.write(ctx, userKey, func(time.Time) (domain.Payload, string, error) {
		var user *domain.User
		if u, ok := l.proj.User(userKey); ok {
			user = &u
		}
		if err := domain.DecideIssue(user); err != nil {
			return nil, "", err
		}
		return domain.SessionIssued{
			UserID: req.UserID, Policy: policy, Device: req.Device, Claims: claims,
			RefreshToken: l.keys.Token.Digest(tok),
		}, tok.SessionID, nil
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
func (l *Ledger) Refresh(ctx context.Context, raw string) (TokenPair, error) {
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
	var d domain.RefreshDecision
	e, err := l.write(ctx, s.UserKey, func(now time.Time) (domain.Payload, string, error) {
		var ok bool
		if s, ok = l.proj.Session(t.SessionID); !ok {
			d = domain.RefreshDecision{Err: domain.ErrTokenUnknown, Outcome: domain.OutcomeInvalid}
		} else {
			d = domain.DecideRefresh(&s, t, l.keys.Token, now, l.grace())
		}
		if d.Event == nil {
			return nil, "", d.Err
		}
		return d.Event, s.ID, nil
	})
	if err != nil {
		return TokenPair{Outcome: d.Outcome}, err
	}
	if d.Err != nil {
		if d.Outcome == domain.OutcomeReused {
			l.completeRevocation(ctx, s.UserKey, s.ID)
		}
		return TokenPair{Outcome: d.Outcome}, d.Err
	}
	if err := s.Apply(e); err != nil {
		return TokenPair{}, err
	}
	return l.mint(&s, d.Token, e.Time, d.Outcome)
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
	_, err := l.write(ctx, userKey, func(time.Time) (domain.Payload, string, error) {
		s, ok := l.proj.Session(sessionID)
		if !ok {
			return nil, "", nil
		}
		return domain.DecideCompleteRevocation(&s), sessionID, nil
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
		Subject: s.UserID, SessionID: s.ID, ID: ulid.Make().String(),
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
