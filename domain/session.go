package domain

import (
	"encoding/json"
	"fmt"
	"time"
	"unique"
)

// Status of a session.
type Status uint8

// Session statuses.
const (
	StatusActive Status = iota + 1
	StatusRevoked
	StatusExpired
)

// Reasons recorded when a user event ends a session.
const (
	ReasonUserSessionsRevoked = "user_sessions_revoked"
	ReasonUserDeactivated     = "user_deactivated"
)

// Instant is a point in time as Unix nanoseconds (0: none). Sessions store
// their times this way: 8 bytes each instead of time.Time's 24, which matters
// with a million sessions in memory.
type Instant int64

// InstantOf converts t.
func InstantOf(t time.Time) Instant {
	if t.IsZero() {
		return 0
	}
	return Instant(t.UnixNano())
}

// Time converts i back (UTC; the zero time for 0).
func (i Instant) Time() time.Time {
	if i == 0 {
		return time.Time{}
	}
	return time.Unix(0, int64(i)).UTC()
}

// Session is the state of one session, folded from its events. Apply is the
// only place it changes.
type Session struct {
	ID      string
	UserID  string
	UserKey string
	// Client is the client the session was issued for
	// (SessionIssued.ClientID), interned: a handle is a pointer, 8 bytes,
	// where a string is 16, and a million sessions of a few apps share a
	// few strings. The zero handle: none recorded. Read it with ClientID.
	Client unique.Handle[string]
	// Policy is shared, never changed in place: sessions of one preset can
	// point to one value (the projection interns it).
	Policy    *Policy
	Device    Device
	Claims    json.RawMessage
	IssuedAt  Instant
	IssuedSeq uint64
	// LastActive is the time of issue or of the last rotation; inactivity counts from it.
	LastActive Instant
	RotatedAt  Instant // time of the last rotation; 0 before the first
	LastSeq    uint64  // stream sequence of the session's last event
	Token      Digest  // digest of the current refresh token
	EndReason  string
	Generation uint32 // generation of the current refresh token
	Status     Status
	// RevocationPending is set when reuse revoked the family and the
	// session.revoked event that tells subscribers has not been recorded yet.
	RevocationPending bool
}

// ClientID is the client the session was issued for; "" for a session
// issued before client ids were recorded.
func (s *Session) ClientID() string {
	if s.Client == (unique.Handle[string]{}) {
		return ""
	}
	return s.Client.Value()
}

// ClientHandle interns a client id for Session.Client: "" is the zero handle.
func ClientHandle(id string) unique.Handle[string] {
	if id == "" {
		return unique.Handle[string]{}
	}
	return unique.Make(id)
}

// Live reports whether the session can still be refreshed.
func (s *Session) Live() bool { return s.Status == StatusActive }

// The deadlines are computed in one place, in integer Instants (the
// projection orders a million sessions by them); the time.Time forms convert.

// absoluteDeadline is when the session ends whatever happens.
func (s *Session) absoluteDeadline() Instant {
	return s.IssuedAt + Instant(s.Policy.AbsoluteLifetime)*Instant(time.Second)
}

// inactivityDeadline is when the session ends unless refreshed before; ok is
// false when the policy has no inactivity timeout.
func (s *Session) inactivityDeadline() (deadline Instant, ok bool) {
	if s.Policy.InactivityTimeout == 0 {
		return 0, false
	}
	return s.LastActive + Instant(s.Policy.InactivityTimeout)*Instant(time.Second), true
}

// AbsoluteDeadline is when the session ends whatever happens.
func (s *Session) AbsoluteDeadline() time.Time { return s.absoluteDeadline().Time() }

// RefreshDeadline is the earlier of the two deadlines: the last moment the
// current refresh token can be used.
func (s *Session) RefreshDeadline() Instant {
	d := s.absoluteDeadline()
	if in, ok := s.inactivityDeadline(); ok {
		d = min(d, in)
	}
	return d
}

// RefreshExpiresAt is RefreshDeadline as a time.
func (s *Session) RefreshExpiresAt() time.Time { return s.RefreshDeadline().Time() }

// ExpiredAt reports whether the session is past a deadline at now, and which.
// A session is expired at its deadline exactly.
func (s *Session) ExpiredAt(now time.Time) (reason string, expired bool) {
	n := InstantOf(now)
	if n >= s.absoluteDeadline() {
		return ExpiredAbsolute, true
	}
	if in, ok := s.inactivityDeadline(); ok && n >= in {
		return ExpiredInactivity, true
	}
	return "", false
}

// Apply folds one of the session's own events into s.
func (s *Session) Apply(e Event) error {
	switch d := e.Data.(type) {
	case SessionIssued:
		*s = Session{
			ID: e.SessionID, UserID: d.UserID, UserKey: e.UserKey, Client: ClientHandle(d.ClientID),
			Policy: &d.Policy, Device: d.Device, Claims: d.Claims,
			IssuedAt: InstantOf(e.Time), IssuedSeq: e.Seq, LastActive: InstantOf(e.Time),
			Token: d.RefreshToken, Status: StatusActive,
		}
	case SessionRotated:
		if !s.Live() || d.Generation != s.Generation+1 {
			return fmt.Errorf("session %s: rotation to generation %d does not follow generation %d (status %d)", s.ID, d.Generation, s.Generation, s.Status)
		}
		s.Generation, s.Token = d.Generation, d.RefreshToken
		s.RotatedAt, s.LastActive = InstantOf(e.Time), InstantOf(e.Time)
	case SessionReused:
		if d.Outcome == ReuseFamilyRevoked && s.Live() {
			s.Status, s.EndReason, s.RevocationPending = StatusRevoked, ReasonReuseDetected, true
		}
	case SessionRevoked:
		if s.Live() || s.RevocationPending {
			s.Status, s.EndReason, s.RevocationPending = StatusRevoked, d.Reason, false
		}
	case SessionExpired:
		if s.Live() {
			s.Status, s.EndReason = StatusExpired, d.Reason
		}
	default:
		return fmt.Errorf("session %s: %s is not a session event", s.ID, e.Type())
	}
	s.LastSeq = e.Seq
	return nil
}

// EndByUser applies a user-wide cut-off at stream sequence cutoff: a live
// session issued before it is revoked. It reports whether s ended.
func (s *Session) EndByUser(cutoff uint64, reason string) bool {
	if !s.Live() || s.IssuedSeq >= cutoff {
		return false
	}
	s.Status, s.EndReason = StatusRevoked, reason
	return true
}

// User is the state of a user as far as sessions are concerned.
type User struct {
	Key         string
	Deactivated bool
	// LastSeq is the sequence of the user's last user event (a revoke-all,
	// a deactivation, a reactivation): what its next user event expects.
	LastSeq uint64
	// ChainSeq is the sequence of the user's last event written before
	// per-session concurrency, LastDigest its digest: the Prev the user's
	// next such event must carry (none is written any more).
	ChainSeq   uint64
	LastDigest [32]byte
}
