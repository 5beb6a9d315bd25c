package ledger

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/sessionledger/sessionledger/accesstoken"
	"github.com/sessionledger/sessionledger/domain"
)

// Input limits.
const (
	MaxUserIDLen      = 255
	MaxClientIDLen    = 255
	MaxDeviceFieldLen = 512
	MaxClaimsLen      = 4096
)

// IssueRequest asks for a new session.
type IssueRequest struct {
	UserID string
	// ClientID names the client (app) the session is for: the client_id
	// claim of its access tokens. Empty: Config.DefaultClientID.
	ClientID string
	// PolicyName names a preset; CustomPolicy gives values instead. Neither:
	// the ledger's default policy.
	PolicyName   string
	CustomPolicy *domain.Policy
	Claims       json.RawMessage // a JSON object of custom access-token claims, or empty
	Device       domain.Device
}

func invalid(field, reason string) error {
	return &domain.ValidationError{Field: field, Reason: reason}
}

// ValidateUserID checks a user id: 1 to 255 bytes of UTF-8 without control characters.
func ValidateUserID(id string) error {
	switch {
	case id == "":
		return invalid("user_id", "must not be empty")
	case len(id) > MaxUserIDLen:
		return invalid("user_id", fmt.Sprintf("must be at most %d bytes", MaxUserIDLen))
	case !printable(id):
		return invalid("user_id", "must be UTF-8 without control characters")
	}
	return nil
}

func printable(s string) bool {
	if !utf8.ValidString(s) {
		return false
	}
	for _, r := range s {
		if unicode.IsControl(r) {
			return false
		}
	}
	return true
}

// ValidateClientID checks a client id: 1 to 255 printable ASCII characters
// without spaces (RFC 6749 allows any VSCHAR; a space in a client id is a
// mistake more often than a name).
func ValidateClientID(id string) error {
	if id == "" || len(id) > MaxClientIDLen {
		return invalid("client_id", fmt.Sprintf("must be 1 to %d characters", MaxClientIDLen))
	}
	for i := 0; i < len(id); i++ {
		if id[i] <= ' ' || id[i] > '~' {
			return invalid("client_id", "must be printable ASCII without spaces")
		}
	}
	return nil
}

// validate checks req and returns its policy and its claims in canonical
// form; it fills in the default client id.
func (l *Ledger) validate(req *IssueRequest) (domain.Policy, json.RawMessage, error) {
	if err := ValidateUserID(req.UserID); err != nil {
		return domain.Policy{}, nil, err
	}
	if req.ClientID == "" {
		req.ClientID = l.cfg.DefaultClientID
	}
	if err := ValidateClientID(req.ClientID); err != nil {
		return domain.Policy{}, nil, err
	}
	for field, v := range map[string]string{"device.ip": req.Device.IP, "device.user_agent": req.Device.UserAgent, "device.name": req.Device.Name} {
		if len(v) > MaxDeviceFieldLen || !printable(v) {
			return domain.Policy{}, nil, invalid(field, fmt.Sprintf("must be at most %d bytes of UTF-8 without control characters", MaxDeviceFieldLen))
		}
	}
	if req.Device.IP != "" {
		if _, err := netip.ParseAddr(req.Device.IP); err != nil {
			return domain.Policy{}, nil, invalid("device.ip", "is not an IP address")
		}
	}
	policy := l.cfg.DefaultPolicy
	switch {
	case req.CustomPolicy != nil:
		policy = *req.CustomPolicy
		policy.Name = domain.PolicyCustom
		if err := policy.Validate(); err != nil {
			return domain.Policy{}, nil, err
		}
	case req.PolicyName != "":
		p, err := domain.Preset(req.PolicyName)
		if err != nil {
			return domain.Policy{}, nil, err
		}
		policy = p
	}
	claims, err := canonicalClaims(req.Claims)
	return policy, claims, err
}

// canonicalClaims checks custom claims (a JSON object of at most MaxClaimsLen
// bytes, no reserved names) and re-encodes them without duplicate members.
func canonicalClaims(raw json.RawMessage) (json.RawMessage, error) {
	if len(raw) == 0 || string(raw) == "null" {
		return nil, nil
	}
	if len(raw) > MaxClaimsLen {
		return nil, invalid("claims", fmt.Sprintf("must be at most %d bytes", MaxClaimsLen))
	}
	var m map[string]json.RawMessage
	if err := json.Unmarshal(raw, &m); err != nil {
		return nil, invalid("claims", "must be a JSON object")
	}
	for name := range m {
		if slices.Contains(accesstoken.ReservedClaims, name) {
			return nil, invalid("claims", fmt.Sprintf("%q is a reserved claim", name))
		}
		if name == "" || !printable(name) {
			return nil, invalid("claims", "claim names must be non-empty UTF-8 without control characters")
		}
	}
	if len(m) == 0 {
		return nil, nil
	}
	out, err := json.Marshal(m)
	if err != nil {
		return nil, invalid("claims", err.Error())
	}
	return out, nil
}

// SignOut revokes the session of a refresh or access token (RFC 7009). A token
// that is not genuine, or whose session has ended, changes nothing and is not
// an error.
func (l *Ledger) SignOut(ctx context.Context, raw string) (err error) {
	ctx, done := l.budget(ctx)
	defer done(&err)
	var s domain.Session
	var ok bool
	if t, perr := domain.ParseRefreshToken(raw); perr == nil {
		s, ok, err = l.tokenSession(ctx, t)
		if ok && t.Generation > s.Generation {
			// A genuine token (its tag verified) from a rotation this
			// instance has not applied yet: another instance handed it out,
			// maybe a moment ago. Only a current projection can tell.
			if err = l.current(ctx); err == nil {
				if s, ok = l.proj.Session(t.SessionID); ok {
					l.holdKeyOf(ctx, &s)
				}
			}
		}
		if ok {
			_, ok = l.tokenKeys().GenerationsBehind(&s, t)
		}
	} else if v, verr := l.signer.Verify(raw, l.cfg.Now()); verr == nil {
		s, ok, err = l.session(ctx, v.SessionID)
		ok = ok && s.UserID == v.Subject
	}
	if err != nil || !ok {
		return err
	}
	err = l.revoke(ctx, s.UserKey, s.ID, domain.ReasonSignedOut, domain.ActorClient)
	if errors.Is(err, domain.ErrSessionNotFound) {
		return nil
	}
	return err
}

// RevokeSession revokes one session (admin).
func (l *Ledger) RevokeSession(ctx context.Context, sessionID string) (err error) {
	ctx, done := l.budget(ctx)
	defer done(&err)
	s, ok, err := l.session(ctx, sessionID)
	if err != nil {
		return err
	}
	if !ok || !s.Live() {
		return domain.ErrSessionNotFound
	}
	return l.revoke(ctx, s.UserKey, s.ID, domain.ReasonAdminRevoked, domain.ActorAdmin)
}

// revoke ends one session. A revoke that lands after a user event ended the
// session (superseded) has the same outcome: the session has ended.
func (l *Ledger) revoke(ctx context.Context, userKey, sessionID, reason, actor string) error {
	_, _, _, err := l.write(ctx, userKey, func(time.Time) decision {
		s, ok := l.proj.Session(sessionID)
		if !ok {
			return decision{err: domain.ErrSessionNotFound}
		}
		p, err := domain.DecideRevoke(&s, reason, actor)
		return decision{event: p, session: sessionID, expect: s.LastSeq, err: err}
	})
	return err
}

// RevokeUser revokes every session of the user issued so far, with one
// user.sessions_revoked event as the cut-off: one append, whatever the
// number of sessions, and the projection ends them in one pass.
func (l *Ledger) RevokeUser(ctx context.Context, userID string) (err error) {
	if err := ValidateUserID(userID); err != nil {
		return err
	}
	ctx, done := l.budget(ctx)
	defer done(&err)
	key := l.UserKey(userID)
	_, _, _, err = l.write(ctx, key, func(time.Time) decision {
		u, _ := l.proj.User(key)
		return decision{event: domain.UserSessionsRevoked{UserID: userID, Actor: domain.ActorAdmin}, expect: u.LastSeq}
	})
	return err
}

// Deactivate revokes the user's sessions and refuses new ones until
// Reactivate. Deactivating a deactivated user changes nothing.
func (l *Ledger) Deactivate(ctx context.Context, userID string) error {
	return l.setDeactivated(ctx, userID, true)
}

// Reactivate lets the user have sessions again.
func (l *Ledger) Reactivate(ctx context.Context, userID string) error {
	return l.setDeactivated(ctx, userID, false)
}

func (l *Ledger) setDeactivated(ctx context.Context, userID string, deactivate bool) (err error) {
	if err := ValidateUserID(userID); err != nil {
		return err
	}
	ctx, done := l.budget(ctx)
	defer done(&err)
	key := l.UserKey(userID)
	_, _, _, err = l.write(ctx, key, func(time.Time) decision {
		u, _ := l.proj.User(key)
		switch {
		case u.Deactivated == deactivate:
			return decision{}
		case deactivate:
			return decision{event: domain.UserDeactivated{UserID: userID, Actor: domain.ActorAdmin}, expect: u.LastSeq}
		default:
			return decision{event: domain.UserReactivated{UserID: userID, Actor: domain.ActorAdmin}, expect: u.LastSeq}
		}
	})
	return err
}

// Page limits for listing a user's sessions.
const (
	DefaultPageLimit = 100
	MaxPageLimit     = 1000
)

// Page asks for one page of a list: up to Limit items (0: DefaultPageLimit)
// after Cursor ("": from the start), a value a previous page returned.
type Page struct {
	Limit  int
	Cursor string
}

// Sessions returns one page of the user's live sessions, oldest first, and
// the cursor of the next page ("" after the last). Each page is
// linearizable: it is read once the projection is current (Ledger.current),
// so it holds every session issued, and none ended, by a command that
// returned (on any instance) before it was asked for. A cursor names a place
// in the stream, so a session issued between two pages comes on a later
// page, and one ended between them is left out.
func (l *Ledger) Sessions(ctx context.Context, userID string, page Page) (_ []domain.Session, next string, err error) {
	if err := ValidateUserID(userID); err != nil {
		return nil, "", err
	}
	limit := page.Limit
	switch {
	case limit == 0:
		limit = DefaultPageLimit
	case limit < 1 || limit > MaxPageLimit:
		return nil, "", invalid("limit", fmt.Sprintf("must be from 1 to %d", MaxPageLimit))
	}
	var after uint64
	if page.Cursor != "" {
		if after, err = parseCursor(page.Cursor); err != nil {
			return nil, "", err
		}
	}
	ctx, done := l.budget(ctx)
	defer done(&err)
	if err := l.current(ctx); err != nil {
		return nil, "", err
	}
	sessions, more := l.proj.UserSessionsPage(l.UserKey(userID), after, limit)
	if more {
		next = cursorAfter(sessions[len(sessions)-1].IssuedSeq)
	}
	return sessions, next, nil
}

// A cursor is the stream sequence of the last session issued on the page
// before, as "s" and decimal digits: opaque to clients, and checked.
func cursorAfter(seq uint64) string { return "s" + strconv.FormatUint(seq, 10) }

func parseCursor(c string) (uint64, error) {
	digits, ok := strings.CutPrefix(c, "s")
	seq, err := strconv.ParseUint(digits, 10, 64)
	if !ok || err != nil || seq == 0 || strconv.FormatUint(seq, 10) != digits {
		return 0, invalid("cursor", "is not a cursor this ledger returned")
	}
	return seq, nil
}

// History returns a session's history, oldest first: its own events and the
// user event that ended it, if one did (domain.SessionHistory).
//
// It is linearizable: each read of the stream goes on until the last
// message its filter matched at the stream leader when it began, so it holds
// every event stored before History was called. The session's own events
// are read first and the user's events after; when a user event ended the
// session, the session's own events are read again, since some may have
// been stored between the two reads (none can follow the end).
func (l *Ledger) History(ctx context.Context, sessionID string) (_ []domain.Event, err error) {
	ctx, done := l.budget(ctx)
	defer done(&err)
	// A session this instance holds names its user, which narrows the read
	// to that user's subjects; an ended one is looked for under every user.
	userKey := ""
	if s, ok := l.proj.Session(sessionID); ok {
		userKey = s.UserKey
	}
	own, err := l.store.SessionEvents(ctx, userKey, sessionID)
	if err != nil {
		return nil, err
	}
	if len(own) == 0 {
		return nil, domain.ErrSessionNotFound
	}
	var user []domain.Event
	hist, err := domain.SessionHistory(own, func() ([]domain.Event, error) {
		user, err = l.store.UserEvents(ctx, own[0].UserKey, own[0].Seq)
		return user, err
	})
	if err != nil || len(hist) == len(own) {
		return hist, err
	}
	if own, err = l.store.SessionEvents(ctx, own[0].UserKey, sessionID); err != nil {
		return nil, err
	}
	return domain.SessionHistory(own, func() ([]domain.Event, error) { return user, nil })
}

// Introspection is the answer to RFC 7662 introspection.
type Introspection struct {
	Active    bool
	TokenType string // "refresh_token" or "access_token"
	Subject   string
	SessionID string
	ClientID  string
	ID        string // jti of an access token
	IssuedAt  time.Time
	ExpiresAt time.Time
}

// Introspect tells whether a refresh or access token is active: genuine,
// unexpired, and of a live session. Only a session's current refresh token is
// active.
//
// The answer is linearizable on every instance: once a revoke, a rotation or
// a revoke-all has returned on any instance, no instance answers active for
// what it ended. An answer that no later event can change is given from the
// projection at once (a forged token, a session that has ended, a refresh
// token rotated out, an absolute lifetime passed); any other answer, active
// above all, is given only once the projection is current (Ledger.current):
// one lookup at the stream leader, shared by the reads that wait meanwhile.
func (l *Ledger) Introspect(ctx context.Context, raw string) (_ Introspection, err error) {
	ctx, done := l.budget(ctx)
	defer done(&err)
	now := l.cfg.Now()
	var sid string
	held := l.session
	// check answers for the token against its session's state, and tells
	// whether that answer is final: no event after that state can change it.
	var check func(*domain.Session) (in Introspection, final bool)
	if t, err := domain.ParseRefreshToken(raw); err == nil {
		sid = t.SessionID
		held = func(context.Context, string) (domain.Session, bool, error) { return l.tokenSession(ctx, t) }
		check = func(s *domain.Session) (Introspection, bool) {
			switch {
			case t.Generation > s.Generation:
				return Introspection{}, false // a rotation this instance has not applied yet, or forged
			case t.Generation < s.Generation || !l.tokenKeys().Matches(t, s.Token):
				return Introspection{}, true // rotated out, or forged: generations only grow
			}
			return Introspection{Active: true, TokenType: "refresh_token", Subject: s.UserID, SessionID: s.ID, ClientID: l.ClientID(s),
				IssuedAt: s.LastActive.Time(), ExpiresAt: s.RefreshExpiresAt()}, false
		}
	} else if v, err := l.signer.Verify(raw, now); err == nil {
		sid = v.SessionID
		check = func(s *domain.Session) (Introspection, bool) {
			if s.UserID != v.Subject || !now.Before(v.ExpiresAt) {
				return Introspection{}, true
			}
			client := v.ClientID
			if client == "" { // a token minted before the claim
				client = l.ClientID(s)
			}
			return Introspection{Active: true, TokenType: "access_token", Subject: v.Subject, SessionID: v.SessionID, ClientID: client,
				ID: v.ID, IssuedAt: v.IssuedAt, ExpiresAt: v.ExpiresAt}, false
		}
	} else {
		return Introspection{}, nil
	}
	answer := func(s domain.Session) (Introspection, bool) {
		switch reason, expired := s.ExpiredAt(now); {
		case !s.Live():
			return Introspection{}, true // an ended session never lives again
		case expired:
			// An absolute lifetime never grows; inactivity may have been
			// ended by a refresh on another instance.
			return Introspection{}, reason == domain.ExpiredAbsolute
		}
		return check(&s)
	}
	s, ok, err := held(ctx, sid)
	if err != nil || !ok {
		return Introspection{}, err
	}
	if in, final := answer(s); final {
		return in, nil
	}
	if err := l.current(ctx); err != nil {
		return Introspection{}, err
	}
	now = l.cfg.Now() // the wait may have taken a while: a token may have expired meanwhile
	if s, ok = l.proj.Session(sid); !ok {
		return Introspection{}, nil // ended, and no longer held
	}
	in, _ := answer(s)
	return in, nil
}
