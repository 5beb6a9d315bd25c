package transmit

import (
	"encoding/base64"
	"encoding/json"
	"errors"
	"math"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/sessionledger/sessionledger/accesstoken"
	"github.com/sessionledger/sessionledger/domain"
)

// TestSignals: every way a session ends is a CAEP session-revoked with the
// subject, initiating entity and an English reason_admin; a deactivation is
// also a credential-change; the other events make none; jtis are stable.
func TestSignals(t *testing.T) {
	const iss = "https://ledger.example"
	session := func(p domain.Payload) domain.Event {
		return domain.Event{ID: "01JD3Z9V6Q4Q4WJ5X7K8M9N0PA", Time: time.Unix(1700000000, 0), SessionID: "01JD3Z9V6Q4Q4WJ5X7K8M9N0PB", UserKey: "k", Data: p}
	}
	user := func(p domain.Payload) domain.Event {
		e := session(p)
		e.SessionID = ""
		return e
	}
	cases := []struct {
		name     string
		e        domain.Event
		entities []string // initiating_entity of each signal; nil: none
		types    []string
	}{
		{"sign-out", session(domain.SessionRevoked{Reason: domain.ReasonSignedOut, Actor: domain.ActorClient}), []string{"user"}, []string{EventSessionRevoked}},
		{"admin", session(domain.SessionRevoked{Reason: domain.ReasonAdminRevoked, Actor: domain.ActorAdmin}), []string{"admin"}, []string{EventSessionRevoked}},
		{"reuse", session(domain.SessionRevoked{Reason: domain.ReasonReuseDetected, Actor: domain.ActorLedger}), []string{"policy"}, []string{EventSessionRevoked}},
		{"self-service", session(domain.SessionRevoked{Reason: domain.ReasonUserRevoked, Actor: domain.ActorUser}), []string{"user"}, []string{EventSessionRevoked}},
		{"absolute", session(domain.SessionExpired{Reason: domain.ExpiredAbsolute}), []string{"policy"}, []string{EventSessionRevoked}},
		{"inactivity", session(domain.SessionExpired{Reason: domain.ExpiredInactivity}), []string{"policy"}, []string{EventSessionRevoked}},
		{"revoke-all", user(domain.UserSessionsRevoked{UserID: "alice", Actor: domain.ActorAdmin}), []string{"admin"}, []string{EventSessionRevoked}},
		{"deactivation", user(domain.UserDeactivated{UserID: "alice", Actor: domain.ActorAdmin}), []string{"admin", "admin"}, []string{EventSessionRevoked, EventCredentialChange}},
		{"issued", session(domain.SessionIssued{UserID: "alice"}), nil, nil},
		{"rotated", session(domain.SessionRotated{Generation: 1}), nil, nil},
		{"reused", session(domain.SessionReused{Outcome: domain.ReuseFamilyRevoked}), nil, nil},
		{"reactivated", user(domain.UserReactivated{UserID: "alice"}), nil, nil},
	}
	for _, c := range cases {
		got := signals(iss, c.e, "alice", CAEPEvents)
		var entities, types []string
		for _, s := range got {
			entities, types = append(entities, s.event.InitiatingEntity), append(types, s.typ)
			if s.event.ReasonAdmin["en"] == "" || s.event.EventTimestamp != 1700000000 || s.txn != c.e.ID {
				t.Errorf("%s: event %+v", c.name, s.event)
			}
			if want := c.e.ID + "." + strings.TrimPrefix(s.typ, "https://schemas.openid.net/secevent/caep/event-type/"); s.jti != want {
				t.Errorf("%s: jti %s, want %s", c.name, s.jti, want)
			}
			sub, _ := json.Marshal(s.sub)
			want := `{"format":"iss_sub","iss":"` + iss + `","sub":"alice"}`
			if c.e.SessionID != "" {
				want = `{"format":"complex","user":` + want + `,"session":{"format":"opaque","id":"` + c.e.SessionID + `"}}`
			}
			if string(sub) != want {
				t.Errorf("%s: sub_id %s, want %s", c.name, sub, want)
			}
			if s.typ == EventCredentialChange && (s.event.ChangeType != "revoke" || s.event.CredentialType == "") {
				t.Errorf("%s: credential-change %+v", c.name, s.event)
			}
		}
		if !slices.Equal(entities, c.entities) || !slices.Equal(types, c.types) {
			t.Errorf("%s: entities %v types %v, want %v %v", c.name, entities, types, c.entities, c.types)
		}
	}
	// A stream of credential-change only gets the deactivation's.
	got := signals(iss, user(domain.UserDeactivated{UserID: "alice"}), "alice", []string{EventCredentialChange})
	if len(got) != 1 || got[0].typ != EventCredentialChange {
		t.Fatalf("credential-change only: %v", got)
	}
	if got := signals(iss, session(domain.SessionRevoked{Reason: domain.ReasonAdminRevoked}), "alice", []string{EventCredentialChange}); len(got) != 0 {
		t.Fatalf("a revocation for a credential-change stream: %v", got)
	}
}

func TestWebhookBody(t *testing.T) {
	e := domain.Event{ID: "01JD3Z9V6Q4Q4WJ5X7K8M9N0PA", Time: time.Unix(1700000000, 0), SessionID: "s1", Seq: 42,
		Data: domain.SessionIssued{UserID: "alice", ClientID: "web", RefreshToken: domain.Digest{KeyID: "d1", Value: [32]byte{1}}}}
	b, err := webhookBody(e, "alice")
	if err != nil {
		t.Fatal(err)
	}
	const want = `{"type":"session.issued","timestamp":"2023-11-14T22:13:20Z","data":{"event_id":"01JD3Z9V6Q4Q4WJ5X7K8M9N0PA","sequence":42,"session_id":"s1","user_id":"alice","client_id":"web"}}`
	if string(b) != want {
		t.Fatalf("body %s\nwant %s", b, want)
	}
	e.Data = domain.SessionRotated{Generation: 3, RefreshToken: domain.Digest{KeyID: "d1"}}
	b, _ = webhookBody(e, "alice")
	if strings.Contains(string(b), "digest") || strings.Contains(string(b), "d1") || !strings.Contains(string(b), `"generation":3`) {
		t.Fatalf("rotation body %s", b)
	}
}

func TestBackoff(t *testing.T) {
	want := []time.Duration{500 * time.Millisecond, time.Second, 2 * time.Second, 4 * time.Second, 8 * time.Second, 16 * time.Second, MaxBackoff, MaxBackoff}
	for i, w := range want {
		if got := backoff(uint64(i + 1)); got != w {
			t.Errorf("backoff(%d) = %v, want %v", i+1, got, w)
		}
	}
	if got := backoff(math.MaxUint64); got != MaxBackoff {
		t.Errorf("backoff(max) = %v", got)
	}
}

func TestStreamInput(t *testing.T) {
	if got, err := eventsDelivered([]string{"urn:example:other", EventSessionRevoked, EventSessionRevoked}); err != nil || !slices.Equal(got, []string{EventSessionRevoked}) {
		t.Errorf("eventsDelivered: %v %v", got, err)
	}
	for _, bad := range [][]string{{"session-revoked"}, {"urn:example:other"}, slices.Repeat([]string{"urn:x"}, 33)} {
		if _, err := eventsDelivered(bad); !errors.Is(err, ErrInvalid) {
			t.Errorf("eventsDelivered(%.40v): %v", bad, err)
		}
	}
	for raw, want := range map[string]string{`"a"`: "[a]", `["a","b"]`: "[a b]"} {
		got, err := parseAudience(json.RawMessage(raw))
		if err != nil || strings.Join(got, " ") != strings.Trim(want, "[]") {
			t.Errorf("parseAudience(%s): %v %v", raw, got, err)
		}
	}
	for _, bad := range []string{`""`, `[]`, `7`, `["",""]`, `{"a":1}`} {
		if _, err := parseAudience(json.RawMessage(bad)); !errors.Is(err, ErrInvalid) {
			t.Errorf("parseAudience(%s): %v", bad, err)
		}
	}
	if got, err := parseEventTypes([]string{"session.revoked", "session.revoked", "user.deactivated"}); err != nil || len(got) != 2 {
		t.Errorf("parseEventTypes: %v %v", got, err)
	}
	for _, bad := range [][]string{nil, {"session.deleted"}, {strings.Repeat("x", 500)}} {
		_, err := parseEventTypes(bad)
		if !errors.Is(err, ErrInvalid) || len(err.Error()) > 400 {
			t.Errorf("parseEventTypes(%.40v): %v", bad, err)
		}
	}
}

// TestSETSigner: SETs are signed by the active key with typ secevent+jwt,
// and the published set holds every key, so one signed before a rotation
// still verifies.
func TestSETSigner(t *testing.T) {
	k1, err := accesstoken.NewRandomKey(accesstoken.RS256)
	if err != nil {
		t.Fatal(err)
	}
	k2, _ := accesstoken.NewRandomKey(accesstoken.RS256)
	var s SETSigner
	if _, err := s.sign(setClaims{}); err == nil {
		t.Fatal("signed with no key")
	}
	if err := s.SetKeys(k1, []*accesstoken.Key{k1}); err != nil {
		t.Fatal(err)
	}
	set, err := s.sign(setClaims{Iss: "i", Jti: "j", Iat: 1, Aud: "a", SubID: &subject{Format: "opaque", ID: "x"}, Events: map[string]any{EventVerification: map[string]any{}}})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.SetKeys(k2, []*accesstoken.Key{k1, k2}); err != nil {
		t.Fatal(err)
	}
	var jwks struct {
		Keys []struct{ Kid, Alg string }
	}
	if err := json.Unmarshal(s.JWKS(), &jwks); err != nil || len(jwks.Keys) != 2 {
		t.Fatalf("JWKS %s: %v", s.JWKS(), err)
	}
	header, _, _ := strings.Cut(set, ".")
	var h struct{ Alg, Kid, Typ string }
	b, _ := base64.RawURLEncoding.DecodeString(header)
	_ = json.Unmarshal(b, &h)
	if h.Alg != "RS256" || h.Kid != k1.ID || h.Typ != SETType {
		t.Fatalf("header %+v", h)
	}
	published := false
	for _, k := range jwks.Keys {
		published = published || (k.Kid == k1.ID && k.Alg == "RS256")
	}
	if !published {
		t.Fatal("the key that signed before the rotation is not published after it")
	}
}

// TestRetryable: of RFC 8935's error codes, the credential ones may pass
// and are retried; the others are about the SET and are not.
func TestRetryable(t *testing.T) {
	for code, want := range map[string]bool{
		"access_denied": true, "authentication_failed": true,
		"invalid_request": false, "invalid_key": false, "invalid_issuer": false, "invalid_audience": false, "": false,
	} {
		msg := "POST rp.example: HTTP 400"
		if code != "" {
			msg += ` ("` + code + `")`
		}
		if got := retryable(errors.New(msg)); got != want {
			t.Errorf("retryable(%s) = %v, want %v", code, got, want)
		}
	}
}
