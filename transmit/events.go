package transmit

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/sessionledger/sessionledger/accesstoken"
	"github.com/sessionledger/sessionledger/domain"
)

// Event types of the Shared Signals Framework and CAEP.
const (
	EventSessionRevoked   = "https://schemas.openid.net/secevent/caep/event-type/session-revoked"
	EventCredentialChange = "https://schemas.openid.net/secevent/caep/event-type/credential-change"
	EventVerification     = "https://schemas.openid.net/secevent/ssf/event-type/verification"
	EventStreamUpdated    = "https://schemas.openid.net/secevent/ssf/event-type/stream-updated"
)

// CAEPEvents are the CAEP event types a stream may request.
var CAEPEvents = []string{EventSessionRevoked, EventCredentialChange}

// SETType is the typ header of a Security Event Token (RFC 8417 §2.3).
const SETType = "secevent+jwt"

// ledgerTypesFor returns the ledger event types that make the CAEP events
// of a stream.
func ledgerTypesFor(events []string) []domain.EventType {
	var out []domain.EventType
	if slices.Contains(events, EventSessionRevoked) {
		out = append(out, domain.TypeSessionRevoked, domain.TypeSessionExpired, domain.TypeUserSessionsRevoked, domain.TypeUserDeactivated)
	}
	if slices.Contains(events, EventCredentialChange) && !slices.Contains(out, domain.TypeUserDeactivated) {
		out = append(out, domain.TypeUserDeactivated)
	}
	return out
}

// subject is an RFC 9493 subject identifier: iss_sub for a user, complex
// with the user and the session (opaque) for one session.
type subject struct {
	Format  string   `json:"format"`
	Iss     string   `json:"iss,omitempty"`
	Sub     string   `json:"sub,omitempty"`
	ID      string   `json:"id,omitempty"`
	User    *subject `json:"user,omitempty"`
	Session *subject `json:"session,omitempty"`
}

func userSubject(issuer, userID string) *subject {
	return &subject{Format: "iss_sub", Iss: issuer, Sub: userID}
}

// setClaims are the claims of one SET: no sub and no exp (SSF 1.0 §4.1),
// the subject in sub_id, one event.
type setClaims struct {
	Iss    string         `json:"iss"`
	Jti    string         `json:"jti"`
	Iat    int64          `json:"iat"`
	Aud    any            `json:"aud"`
	Txn    string         `json:"txn,omitempty"`
	SubID  *subject       `json:"sub_id"`
	Events map[string]any `json:"events"`
}

// caepEvent is the body of a CAEP session-revoked or credential-change event.
type caepEvent struct {
	EventTimestamp   int64             `json:"event_timestamp"`
	InitiatingEntity string            `json:"initiating_entity,omitempty"`
	ReasonAdmin      map[string]string `json:"reason_admin,omitempty"`
	ReasonUser       map[string]string `json:"reason_user,omitempty"`
	// credential-change
	CredentialType string `json:"credential_type,omitempty"`
	ChangeType     string `json:"change_type,omitempty"`
}

// signal is one CAEP event made of a ledger event: the SET is signed per
// stream (its audience) from it.
type signal struct {
	jti   string
	txn   string // the ledger event's id: shared by the SETs of one event
	typ   string
	sub   *subject
	event caepEvent
}

// signals returns the CAEP events of e that are among events (a stream's
// events_delivered), for the user userID.
func signals(issuer string, e domain.Event, userID string, events []string) []signal {
	user := userSubject(issuer, userID)
	session := &subject{Format: "complex", User: user, Session: &subject{Format: "opaque", ID: e.SessionID}}
	ts := e.Time.Unix()
	revoked := func(sub *subject, entity, reason string) signal {
		return signal{jti: e.ID + ".session-revoked", txn: e.ID, typ: EventSessionRevoked, sub: sub, event: caepEvent{
			EventTimestamp: ts, InitiatingEntity: entity, ReasonAdmin: map[string]string{"en": reason},
		}}
	}
	var out []signal
	switch d := e.Data.(type) {
	case domain.SessionRevoked:
		entity, reason := "system", "The session was revoked."
		switch d.Reason {
		case domain.ReasonSignedOut:
			entity, reason = "user", "The user signed out."
		case domain.ReasonAdminRevoked:
			entity, reason = "admin", "An administrator revoked the session."
		case domain.ReasonReuseDetected:
			entity, reason = "policy", "A refresh token that had been rotated was presented again (reuse detection); the session is revoked."
		case domain.ReasonUserRevoked:
			entity, reason = "user", "The user ended this session from another session."
		}
		out = append(out, revoked(session, entity, reason))
	case domain.SessionExpired:
		reason := "The session ended."
		switch d.Reason {
		case domain.ExpiredAbsolute:
			reason = "The session reached its absolute lifetime."
		case domain.ExpiredInactivity:
			reason = "The session was inactive for longer than its inactivity timeout."
		}
		out = append(out, revoked(session, "policy", reason))
	case domain.UserSessionsRevoked:
		entity := "admin"
		if d.Actor == domain.ActorUser {
			entity = "user"
		}
		out = append(out, revoked(user, entity, "Every session of the user was revoked."))
	case domain.UserDeactivated:
		out = append(out, revoked(user, "admin", "The user was deactivated: every session is revoked and no new one is issued."))
		out = append(out, signal{jti: e.ID + ".credential-change", txn: e.ID, typ: EventCredentialChange, sub: user, event: caepEvent{
			EventTimestamp: ts, InitiatingEntity: "admin",
			CredentialType: "app", ChangeType: "revoke",
			ReasonAdmin: map[string]string{"en": "The user was deactivated: the sessions' refresh tokens are revoked."},
		}})
	}
	return slices.DeleteFunc(out, func(s signal) bool { return !slices.Contains(events, s.typ) })
}

// SETSigner signs SETs with the active SET key, and publishes every SET key.
// It is safe for concurrent use, SetKeys included.
type SETSigner struct {
	mu     sync.RWMutex
	active *accesstoken.Key
	jwks   []byte
}

// SetKeys replaces the signing key and the published keys (keyring.Targets.SET).
func (s *SETSigner) SetKeys(active *accesstoken.Key, published []*accesstoken.Key) error {
	if active == nil {
		return errors.New("transmit: no active SET key")
	}
	jwks, err := accesstoken.JWKS(append([]*accesstoken.Key{active}, published...)...)
	if err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.active, s.jwks = active, jwks
	return nil
}

// JWKS returns the JWK Set of the SET keys (nil before SetKeys).
func (s *SETSigner) JWKS() []byte {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.jwks
}

// sign returns the SET of claims.
func (s *SETSigner) sign(c setClaims) (string, error) {
	s.mu.RLock()
	k := s.active
	s.mu.RUnlock()
	if k == nil {
		return "", errors.New("transmit: no SET key yet")
	}
	b, err := json.Marshal(c)
	if err != nil {
		return "", err
	}
	return k.SignJWS(SETType, b)
}

// audience is a stream's aud claim: a string for one, an array for more.
func audience(aud []string) any {
	if len(aud) == 1 {
		return aud[0]
	}
	return aud
}

// signSignal returns the SET of sig for a stream with audience aud.
func (t *Transmitter) signSignal(sig signal, aud []string, now time.Time) (string, error) {
	return t.sets.sign(setClaims{
		Iss: t.issuer, Jti: sig.jti, Txn: sig.txn, Iat: now.Unix(), Aud: audience(aud), SubID: sig.sub,
		Events: map[string]any{sig.typ: sig.event},
	})
}

// webhookEvent is the body of a webhook (the Standard Webhooks payload
// shape): the event's type, when it was decided, and what a receiver
// needs of it. Never a token or a digest.
type webhookEvent struct {
	Type      domain.EventType `json:"type"`
	Timestamp time.Time        `json:"timestamp"`
	Data      webhookData      `json:"data"`
}

type webhookData struct {
	EventID   string `json:"event_id"`
	Sequence  uint64 `json:"sequence"`
	SessionID string `json:"session_id,omitempty"`
	UserID    string `json:"user_id"`
	ClientID  string `json:"client_id,omitempty"`
	Reason    string `json:"reason,omitempty"`
	Actor     string `json:"actor,omitempty"`
	// Generation is the new token generation of a rotation, the presented
	// one of a reuse.
	Generation *uint32 `json:"generation,omitempty"`
	Outcome    string  `json:"outcome,omitempty"` // of a reuse: tolerated or family_revoked
}

// webhookBody returns the JSON body of the webhook for e.
func webhookBody(e domain.Event, userID string) ([]byte, error) {
	d := webhookData{EventID: e.ID, Sequence: e.Seq, SessionID: e.SessionID, UserID: userID}
	switch p := e.Data.(type) {
	case domain.SessionIssued:
		d.ClientID = p.ClientID
	case domain.SessionRotated:
		d.Generation = &p.Generation
	case domain.SessionReused:
		d.Generation, d.Outcome = &p.PresentedGeneration, string(p.Outcome)
	case domain.SessionRevoked:
		d.Reason, d.Actor = p.Reason, p.Actor
	case domain.SessionExpired:
		d.Reason = p.Reason
	case domain.UserSessionsRevoked:
		d.Actor = p.Actor
	case domain.UserDeactivated:
		d.Actor = p.Actor
	case domain.UserReactivated:
		d.Actor = p.Actor
	}
	return json.Marshal(webhookEvent{Type: e.Type(), Timestamp: e.Time.UTC(), Data: d})
}

// userIDs finds the user id of a session's events (only the session's
// first event names it), remembering the latest few thousand.
type userIDs struct {
	lookup func(ctx context.Context, userKey, sessionID string) ([]domain.Event, error)
	mu     sync.Mutex
	known  map[string]string
}

const userIDsKept = 4096

func (u *userIDs) of(ctx context.Context, e domain.Event) (string, error) {
	switch d := e.Data.(type) {
	case domain.SessionIssued:
		return d.UserID, nil
	case domain.UserSessionsRevoked:
		return d.UserID, nil
	case domain.UserDeactivated:
		return d.UserID, nil
	case domain.UserReactivated:
		return d.UserID, nil
	}
	u.mu.Lock()
	id, ok := u.known[e.SessionID]
	u.mu.Unlock()
	if ok {
		return id, nil
	}
	events, err := u.lookup(ctx, e.UserKey, e.SessionID)
	if err != nil {
		return "", err
	}
	if len(events) == 0 {
		return "", fmt.Errorf("transmit: session %s has no events", e.SessionID)
	}
	issued, ok := events[0].Data.(domain.SessionIssued)
	if !ok {
		return "", fmt.Errorf("transmit: session %s does not begin with %s", e.SessionID, domain.TypeSessionIssued)
	}
	u.mu.Lock()
	if len(u.known) >= userIDsKept {
		clear(u.known)
	}
	u.known[e.SessionID] = issued.UserID
	u.mu.Unlock()
	return issued.UserID, nil
}
