// Package domain holds sessionledger's events, the session aggregate (decide and
// apply), policies, refresh-token format, sentinel errors and the ports the core
// needs. It imports only the standard library.
package domain

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"time"
)

// EventType is the stable, dotted name of an event. It never derives from a Go
// type name.
type EventType string

// Event types. Past tense; changes are additive.
const (
	TypeSessionIssued       EventType = "session.issued"
	TypeSessionRotated      EventType = "session.rotated"
	TypeSessionReused       EventType = "session.reused"
	TypeSessionRevoked      EventType = "session.revoked"
	TypeSessionExpired      EventType = "session.expired"
	TypeUserSessionsRevoked EventType = "user.sessions_revoked"
	TypeUserDeactivated     EventType = "user.deactivated"
	TypeUserReactivated     EventType = "user.reactivated"
)

// Types lists every event type, sessions' first.
var Types = []EventType{
	TypeSessionIssued, TypeSessionRotated, TypeSessionReused, TypeSessionRevoked, TypeSessionExpired,
	TypeUserSessionsRevoked, TypeUserDeactivated, TypeUserReactivated,
}

// IsUserEvent reports whether events of type t concern a user rather than one session.
func (t EventType) IsUserEvent() bool {
	switch t {
	case TypeUserSessionsRevoked, TypeUserDeactivated, TypeUserReactivated:
		return true
	}
	return false
}

// EndsSessions reports whether an event of type t ends every live session of
// its user issued before it (by stream sequence): a revoke-all or a
// deactivation.
func (t EventType) EndsSessions() bool {
	return t == TypeUserSessionsRevoked || t == TypeUserDeactivated
}

// RevokingTypes are the types of the events after which a verifier must
// refuse access tokens: of one session (revoked, expired, reused with the
// family revoked) or of a user's sessions issued before it (EndsSessions).
// Subscribers filter on these; Revokes tells which of them revoke.
var RevokingTypes = []EventType{
	TypeSessionRevoked, TypeSessionExpired, TypeSessionReused,
	TypeUserSessionsRevoked, TypeUserDeactivated,
}

// Revokes reports whether e ends access for a session (sessionID) or for every
// session of a user issued before it (userCutoff). A session.reused revokes
// only when the family was revoked; a tolerated reuse revokes nothing.
func (e Event) Revokes() (sessionID string, userCutoff bool) {
	switch d := e.Data.(type) {
	case SessionRevoked, SessionExpired:
		return e.SessionID, false
	case SessionReused:
		if d.Outcome == ReuseFamilyRevoked {
			return e.SessionID, false
		}
	case UserSessionsRevoked, UserDeactivated:
		return "", true
	}
	return "", false
}

// Event is one fact in the ledger. Data is one of the payload types below.
type Event struct {
	ID        string    // ULID, unique per append attempt
	Time      time.Time // when the ledger decided it
	SessionID string    // empty for user events
	UserKey   string    // subject-safe keyed digest of the user id
	Seq       uint64    // stream sequence; 0 until stored
	Data      Payload
	// Expect is the stream sequence of the last message under the event's
	// expectation subjects when it was appended (ExpectSubjects: the
	// session's own subjects for a session event, the user's user-event
	// subjects for a user event; 0: none), which the stream enforced. Every
	// event the ledger writes has it; nil marks an event written before
	// per-session concurrency, which chains by Prev instead.
	Expect *uint64
	// Prev, in an event written before per-session concurrency, is the
	// digest of the previous event of the same user (its sessions' events
	// and its user events), nil for the user's first event.
	Prev []byte
	// Digest is the SHA-256 of this event's stored bytes; set when read from
	// the stream, not encoded. The user's next event carries it as Prev.
	Digest [32]byte
}

// Type returns the event's type, taken from its payload.
func (e Event) Type() EventType { return e.Data.EventType() }

// Payload is the data of an event.
type Payload interface {
	EventType() EventType
}

// Digest is a keyed digest (HMAC-SHA256) of a refresh token. KeyID names the key
// so that keys can rotate. In JSON, Value is standard base64.
type Digest struct {
	KeyID string   `json:"kid"`
	Value [32]byte `json:"value"`
}

type digestJSON struct {
	KeyID string `json:"kid"`
	Value []byte `json:"value"`
}

// MarshalJSON writes the digest as {"kid","value"} with value in base64.
func (d Digest) MarshalJSON() ([]byte, error) {
	return json.Marshal(digestJSON{d.KeyID, d.Value[:]})
}

// UnmarshalJSON reads what MarshalJSON writes; the value must be 32 bytes.
func (d *Digest) UnmarshalJSON(b []byte) error {
	if d.fastUnmarshal(b) {
		return nil
	}
	var j digestJSON
	if err := json.Unmarshal(b, &j); err != nil {
		return err
	}
	if len(j.Value) != len(d.Value) {
		return fmt.Errorf("digest value is %d bytes, want %d", len(j.Value), len(d.Value))
	}
	d.KeyID = j.KeyID
	copy(d.Value[:], j.Value)
	return nil
}

// Device describes where a session was opened.
type Device struct {
	IP        string `json:"ip,omitempty"`
	UserAgent string `json:"user_agent,omitempty"`
	Name      string `json:"name,omitempty"`
}

// SessionIssued: a backend opened a session. Token generation 0 starts here.
type SessionIssued struct {
	UserID string `json:"user_id"`
	// ClientID is the client (app) the session was issued for: the
	// client_id claim of its access tokens (RFC 9068). Empty in events of
	// ledgers before the field; their tokens carry the configured default.
	ClientID     string          `json:"client_id,omitempty"`
	Policy       Policy          `json:"policy"`
	Device       Device          `json:"device"`
	Claims       json.RawMessage `json:"claims,omitempty"` // a JSON object of custom access-token claims
	RefreshToken Digest          `json:"refresh_token_digest"`
}

// SessionRotated: a refresh token was exchanged for a new pair.
type SessionRotated struct {
	Generation   uint32 `json:"generation"`
	RefreshToken Digest `json:"refresh_token_digest"`
}

// ReuseOutcome says what the ledger did about a reused refresh token.
type ReuseOutcome string

// Reuse outcomes.
const (
	ReuseTolerated     ReuseOutcome = "tolerated"      // within the grace window: same successor handed out again
	ReuseFamilyRevoked ReuseOutcome = "family_revoked" // the whole session is revoked
)

// SessionReused: a refresh token that had already been rotated came back.
type SessionReused struct {
	PresentedGeneration uint32       `json:"presented_generation"`
	CurrentGeneration   uint32       `json:"current_generation"`
	Outcome             ReuseOutcome `json:"outcome"`
}

// Revocation reasons and actors.
const (
	ReasonSignedOut     = "signed_out"
	ReasonAdminRevoked  = "admin_revoked"
	ReasonReuseDetected = "reuse_detected"
	// ReasonUserRevoked: the user ended one of their sessions from another
	// (self-service: a device list, "sign out other devices").
	ReasonUserRevoked = "user_revoked"

	ActorClient = "client"
	ActorAdmin  = "admin"
	ActorLedger = "ledger"
	ActorUser   = "user" // the session's own user, authenticated by an access token
)

// SessionRevoked: the session ended by sign-out, admin revoke or reuse detection.
type SessionRevoked struct {
	Reason string `json:"reason"`
	Actor  string `json:"actor"`
}

// Expiry reasons.
const (
	ExpiredAbsolute   = "absolute"
	ExpiredInactivity = "inactivity"
)

// SessionExpired: the absolute lifetime or the inactivity timeout passed.
type SessionExpired struct {
	Reason string `json:"reason"`
}

// UserSessionsRevoked: every session of the user issued before this event
// (by stream sequence) is revoked. One atomic cut-off.
type UserSessionsRevoked struct {
	UserID string `json:"user_id"`
	Actor  string `json:"actor"`
}

// UserDeactivated: the user's sessions are revoked and no new session is issued
// until the user is reactivated.
type UserDeactivated struct {
	UserID string `json:"user_id"`
	Actor  string `json:"actor"`
}

// UserReactivated: sessions may be issued to the user again.
type UserReactivated struct {
	UserID string `json:"user_id"`
	Actor  string `json:"actor"`
}

func (SessionIssued) EventType() EventType       { return TypeSessionIssued }
func (SessionRotated) EventType() EventType      { return TypeSessionRotated }
func (SessionReused) EventType() EventType       { return TypeSessionReused }
func (SessionRevoked) EventType() EventType      { return TypeSessionRevoked }
func (SessionExpired) EventType() EventType      { return TypeSessionExpired }
func (UserSessionsRevoked) EventType() EventType { return TypeUserSessionsRevoked }
func (UserDeactivated) EventType() EventType     { return TypeUserDeactivated }
func (UserReactivated) EventType() EventType     { return TypeUserReactivated }

// fastUnmarshal reads exactly the form MarshalJSON writes,
// {"kid":"…","value":"…"} with no escapes and no spaces, without reflection.
// Anything else is left to the general decoder.
func (d *Digest) fastUnmarshal(b []byte) bool {
	const pre, mid, post = `{"kid":"`, `","value":"`, `"}`
	if !bytes.HasPrefix(b, []byte(pre)) || !bytes.HasSuffix(b, []byte(post)) {
		return false
	}
	rest := b[len(pre) : len(b)-len(post)]
	i := bytes.Index(rest, []byte(mid))
	if i < 0 || bytes.IndexByte(rest[:i], '\\') >= 0 {
		return false
	}
	var v [32]byte
	enc := rest[i+len(mid):]
	if len(enc) != base64.StdEncoding.EncodedLen(len(v)) { // Decode would write past v
		return false
	}
	if n, err := base64.StdEncoding.Strict().Decode(v[:], enc); err != nil || n != len(v) {
		return false
	}
	d.KeyID, d.Value = string(rest[:i]), v
	return true
}
