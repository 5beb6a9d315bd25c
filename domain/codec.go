package domain

import (
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"time"
)

// CloudEvents envelope constants.
const (
	SpecVersion = "1.0"
	EventSource = "urn:sessionledger"
	contentType = "application/json"
)

// ErrUnknownEventType is returned by DecodeEvent for a type it does not know.
var ErrUnknownEventType = errors.New("unknown event type")

// envelope is the CloudEvents 1.0 JSON form of an event. schemaversion (the
// revision of the event's type, see eventTypes), userkey, expectseq (Event.Expect)
// and, in events written before expectseq, prevdigest (base64url SHA-256 of the
// stored bytes of the user's previous event) are CloudEvents extension
// attributes.
type envelope struct {
	SpecVersion     string          `json:"specversion"`
	ID              string          `json:"id"`
	Type            EventType       `json:"type"`
	Source          string          `json:"source"`
	Subject         string          `json:"subject"`
	Time            time.Time       `json:"time"`
	DataContentType string          `json:"datacontenttype"`
	SchemaVersion   int             `json:"schemaversion"`
	UserKey         string          `json:"userkey"`
	ExpectSeq       *uint64         `json:"expectseq,omitempty"`
	PrevDigest      string          `json:"prevdigest,omitempty"`
	Data            json.RawMessage `json:"data"`
}

// CloudEventSubject is the CloudEvents subject of e: the session id for session
// events, the user key for user events.
func (e Event) CloudEventSubject() string {
	if e.SessionID != "" {
		return e.SessionID
	}
	return e.UserKey
}

// EncodeEvent returns the CloudEvents JSON form of e.
func EncodeEvent(e Event) ([]byte, error) {
	if e.Data == nil {
		return nil, errors.New("encode event: no data")
	}
	data, err := json.Marshal(e.Data)
	if err != nil {
		return nil, fmt.Errorf("encode event %s: %w", e.Type(), err)
	}
	return json.Marshal(envelope{
		SpecVersion:     SpecVersion,
		ID:              e.ID,
		Type:            e.Type(),
		Source:          EventSource,
		Subject:         e.CloudEventSubject(),
		Time:            e.Time.UTC(),
		DataContentType: contentType,
		SchemaVersion:   eventTypes[e.Type()].revision(),
		UserKey:         e.UserKey,
		ExpectSeq:       e.Expect,
		PrevDigest:      base64.RawURLEncoding.EncodeToString(e.Prev),
		Data:            data,
	})
}

// DecodeEvent parses the CloudEvents JSON form of an event. Unknown types and
// schema versions are errors, never skipped.
func DecodeEvent(b []byte) (Event, error) { return DecodeEventWith(b, json.Unmarshal) }

// DecodeEventWith is DecodeEvent with another JSON engine's Unmarshal (one
// that follows encoding/json's rules), for hot paths that need a faster one.
func DecodeEventWith(b []byte, unmarshal func([]byte, any) error) (Event, error) {
	var env envelope
	if err := unmarshal(b, &env); err != nil {
		return Event{}, fmt.Errorf("decode event: %w", err)
	}
	if env.SpecVersion != SpecVersion {
		return Event{}, fmt.Errorf("decode event %s: specversion %q not supported", env.ID, env.SpecVersion)
	}
	if env.ID == "" || env.UserKey == "" || env.Time.IsZero() {
		return Event{}, fmt.Errorf("decode event %q: id, userkey and time are required", env.ID)
	}
	et, ok := eventTypes[env.Type]
	if !ok {
		return Event{}, fmt.Errorf("decode event %s: %w %q", env.ID, ErrUnknownEventType, env.Type)
	}
	if len(env.Data) == 0 || string(env.Data) == "null" {
		return Event{}, fmt.Errorf("decode event %s: no data", env.ID)
	}
	data, err := et.upcast(env.SchemaVersion, env.Data)
	if err != nil {
		return Event{}, fmt.Errorf("decode event %s %s: %w", env.ID, env.Type, err)
	}
	p, err := et.decode(data, unmarshal)
	if err != nil {
		return Event{}, fmt.Errorf("decode event %s %s: %w", env.ID, env.Type, err)
	}
	e := Event{ID: env.ID, Time: env.Time, UserKey: env.UserKey, Data: p, Digest: sha256.Sum256(b), Expect: env.ExpectSeq}
	if env.PrevDigest != "" && env.ExpectSeq != nil {
		return Event{}, fmt.Errorf("decode event %s: expectseq and prevdigest are exclusive", env.ID)
	}
	if env.PrevDigest != "" {
		if e.Prev, err = base64.RawURLEncoding.DecodeString(env.PrevDigest); err != nil || len(e.Prev) != sha256.Size {
			return Event{}, fmt.Errorf("decode event %s: prevdigest is not a SHA-256 digest", env.ID)
		}
	}
	if !env.Type.IsUserEvent() {
		if env.Subject == "" {
			return Event{}, fmt.Errorf("decode event %s: session event without subject", env.ID)
		}
		e.SessionID = env.Subject
	}
	return e, nil
}

// eventType is what the codec knows of one event type: how to decode its
// current revision, and the upcasters that bring older revisions' data to it.
// upcasters[i] turns revision i+1 into revision i+2, so the current revision
// is len(upcasters)+1. A change to a payload that old readers could not take
// bumps the revision by adding an upcaster; additive changes need none.
type eventType struct {
	decode    func([]byte, func([]byte, any) error) (Payload, error)
	upcasters []Upcaster
}

// Upcaster rewrites the JSON data of one revision of an event type into the
// next revision's form.
type Upcaster func(data []byte) ([]byte, error)

func (t eventType) revision() int { return len(t.upcasters) + 1 }

// upcast brings data of revision rev to the current revision. A revision
// newer than the current one (written by a newer ledger) is an error, never
// guessed at.
func (t eventType) upcast(rev int, data []byte) ([]byte, error) {
	if rev < 1 || rev > t.revision() {
		return nil, fmt.Errorf("revision %d not supported (this build reads 1 to %d)", rev, t.revision())
	}
	for _, up := range t.upcasters[rev-1:] {
		var err error
		if data, err = up(data); err != nil {
			return nil, fmt.Errorf("upcast from revision %d: %w", rev, err)
		}
	}
	return data, nil
}

// eventTypes is the table of known event types; a type missing here is an
// error. Every type is at revision 2: revision 2 is the first whose envelope
// carries expectseq (per-session concurrency), with the same data. The bump
// makes a ledger of an earlier version stop at the first such event
// (ErrUndecodable) instead of refusing it as a break of the user's chain and
// answering from a projection that no longer follows the stream.
var eventTypes = map[EventType]eventType{
	TypeSessionIssued:       {decode: decodeAs[SessionIssued], upcasters: sameData},
	TypeSessionRotated:      {decode: decodeAs[SessionRotated], upcasters: sameData},
	TypeSessionReused:       {decode: decodeAs[SessionReused], upcasters: sameData},
	TypeSessionRevoked:      {decode: decodeAs[SessionRevoked], upcasters: sameData},
	TypeSessionExpired:      {decode: decodeAs[SessionExpired], upcasters: sameData},
	TypeUserSessionsRevoked: {decode: decodeAs[UserSessionsRevoked], upcasters: sameData},
	TypeUserDeactivated:     {decode: decodeAs[UserDeactivated], upcasters: sameData},
	TypeUserReactivated:     {decode: decodeAs[UserReactivated], upcasters: sameData},
}

// sameData brings revision 1 to revision 2: the data did not change.
var sameData = []Upcaster{func(data []byte) ([]byte, error) { return data, nil }}

// Revision returns the current revision of events of type t (0 for a type the
// codec does not know).
func Revision(t EventType) int {
	et, ok := eventTypes[t]
	if !ok {
		return 0
	}
	return et.revision()
}

func decodeAs[T Payload](b []byte, unmarshal func([]byte, any) error) (Payload, error) {
	var v T
	err := unmarshal(b, &v)
	return v, err
}
