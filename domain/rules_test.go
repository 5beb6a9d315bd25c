package domain

import (
	"bytes"
	"encoding/json"
	"errors"
	"testing"
	"time"
)

// TestUpcasterBringsOldRevisions registers a second revision of
// session.revoked whose data renames "reason" to "why", and checks that a
// revision-1 event is upcast, a revision-2 event decodes as written, and a
// revision-3 event (from a newer ledger) is refused.
func TestUpcasterBringsOldRevisions(t *testing.T) {
	saved := eventTypes[TypeSessionRevoked]
	t.Cleanup(func() { eventTypes[TypeSessionRevoked] = saved })

	type revokedV2 struct {
		Why   string `json:"why"`
		Actor string `json:"actor"`
	}
	eventTypes[TypeSessionRevoked] = eventType{
		decode: func(b []byte, unmarshal func([]byte, any) error) (Payload, error) {
			var v revokedV2
			err := unmarshal(b, &v)
			return SessionRevoked{Reason: v.Why, Actor: v.Actor}, err
		},
		upcasters: []Upcaster{func(data []byte) ([]byte, error) {
			var v1 SessionRevoked
			if err := json.Unmarshal(data, &v1); err != nil {
				return nil, err
			}
			return json.Marshal(revokedV2{Why: v1.Reason, Actor: v1.Actor})
		}},
	}
	if got := Revision(TypeSessionRevoked); got != 2 {
		t.Fatalf("Revision = %d, want 2", got)
	}
	v1 := []byte(`{"specversion":"1.0","id":"01A","type":"session.revoked","source":"urn:sessionledger","subject":"` + testSID +
		`","time":"2026-11-22T10:00:00Z","datacontenttype":"application/json","schemaversion":1,"userkey":"uk","data":{"reason":"signed_out","actor":"client"}}`)
	for name, tc := range map[string]struct {
		in      []byte
		want    SessionRevoked
		refused bool
	}{
		"revision 1 is upcast":  {in: v1, want: SessionRevoked{Reason: "signed_out", Actor: "client"}},
		"revision 2 as written": {in: bytes.Replace(bytes.Replace(v1, []byte(`"schemaversion":1`), []byte(`"schemaversion":2`), 1), []byte(`"reason"`), []byte(`"why"`), 1), want: SessionRevoked{Reason: "signed_out", Actor: "client"}},
		"revision 3 is refused": {in: bytes.Replace(v1, []byte(`"schemaversion":1`), []byte(`"schemaversion":3`), 1), refused: true},
		"revision 0 is refused": {in: bytes.Replace(v1, []byte(`"schemaversion":1`), []byte(`"schemaversion":0`), 1), refused: true},
		"a broken old event":    {in: bytes.Replace(v1, []byte(`"reason":"signed_out"`), []byte(`"reason":7`), 1), refused: true},
	} {
		e, err := DecodeEvent(tc.in)
		switch {
		case tc.refused && err == nil:
			t.Errorf("%s: decoded %+v", name, e.Data)
		case !tc.refused && err != nil:
			t.Errorf("%s: %v", name, err)
		case !tc.refused && e.Data != tc.want:
			t.Errorf("%s: got %+v, want %+v", name, e.Data, tc.want)
		}
	}
	// New events are written at the current revision.
	b, err := EncodeEvent(Event{ID: "01B", Time: time.Unix(1, 0), SessionID: testSID, UserKey: "uk", Data: SessionRevoked{Reason: "x"}})
	if err != nil || !bytes.Contains(b, []byte(`"schemaversion":2`)) {
		t.Errorf("encoded at the wrong revision: %s (%v)", b, err)
	}
}

func TestSessionHistoryEndsAtTheCutOff(t *testing.T) {
	p := Policy{AccessTokenTTL: 60, AbsoluteLifetime: 3600}
	at := time.Unix(1000, 0)
	issued := Event{Seq: 2, SessionID: testSID, UserKey: "uk", Time: at, Data: SessionIssued{UserID: "alice", Policy: p}}
	rotated := Event{Seq: 4, SessionID: testSID, UserKey: "uk", Time: at, Data: SessionRotated{Generation: 1}}
	revoked := Event{Seq: 6, SessionID: testSID, UserKey: "uk", Time: at, Data: SessionRevoked{Reason: ReasonSignedOut}}
	user := func(seq uint64, d Payload) Event { return Event{Seq: seq, UserKey: "uk", Time: at, Data: d} }
	cutBefore := user(1, UserSessionsRevoked{UserID: "alice"})
	deactivated := user(7, UserDeactivated{UserID: "alice"})
	reactivated := user(8, UserReactivated{UserID: "alice"})
	revokeAll := user(9, UserSessionsRevoked{UserID: "alice"})

	seqs := func(es []Event) []uint64 {
		var out []uint64
		for _, e := range es {
			out = append(out, e.Seq)
		}
		return out
	}
	for name, tc := range map[string]struct {
		own, user []Event
		want      []uint64
	}{
		"ended by deactivation, not followed by the reactivation": {own: []Event{issued, rotated}, user: []Event{cutBefore, deactivated, reactivated, revokeAll}, want: []uint64{2, 4, 7}},
		"ended by its own revoke: no user event":                  {own: []Event{issued, rotated, revoked}, user: []Event{deactivated, reactivated}, want: []uint64{2, 4, 6}},
		"a cut-off before its issue does not belong":              {own: []Event{issued}, user: []Event{cutBefore}, want: []uint64{2}},
		"a reactivation alone ends nothing":                       {own: []Event{issued}, user: []Event{reactivated, revokeAll}, want: []uint64{2, 9}},
		// Per-session concurrency: a sign-out decided before a revoke-all
		// and stored after it. The revoke-all ended the session, in its
		// place in the stream; the late sign-out stays after it.
		"a revoke-all before its own revoke ended it": {own: []Event{issued, rotated, revoked}, user: []Event{user(5, UserSessionsRevoked{UserID: "alice"})}, want: []uint64{2, 4, 5, 6}},
		"a rotation that lost to a deactivation":      {own: []Event{issued, rotated}, user: []Event{user(3, UserDeactivated{UserID: "alice"})}, want: []uint64{2, 3, 4}},
	} {
		got, err := SessionHistory(tc.own, func() ([]Event, error) { return tc.user, nil })
		if err != nil || !equalSeqs(seqs(got), tc.want) {
			t.Errorf("%s: got %v (%v), want %v", name, seqs(got), err, tc.want)
		}
	}
	wantErr := errors.New("stream unreachable")
	if _, err := SessionHistory([]Event{issued}, func() ([]Event, error) { return nil, wantErr }); !errors.Is(err, wantErr) {
		t.Errorf("error reading the user's events: got %v, want %v", err, wantErr)
	}
}

func equalSeqs(a, b []uint64) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

func TestRevokes(t *testing.T) {
	for _, tc := range []struct {
		data        Payload
		wantSession bool
		wantCutoff  bool
	}{
		{SessionIssued{}, false, false},
		{SessionRotated{}, false, false},
		{SessionReused{Outcome: ReuseTolerated}, false, false},
		{SessionReused{Outcome: ReuseFamilyRevoked}, true, false},
		{SessionRevoked{}, true, false},
		{SessionExpired{}, true, false},
		{UserSessionsRevoked{}, false, true},
		{UserDeactivated{}, false, true},
		{UserReactivated{}, false, false},
	} {
		e := Event{SessionID: testSID, Data: tc.data}
		if tc.data.EventType().IsUserEvent() {
			e.SessionID = ""
		}
		sid, cut := e.Revokes()
		if (sid != "") != tc.wantSession || cut != tc.wantCutoff {
			t.Errorf("%s %+v: Revokes() = %q, %v; want session %v, cut-off %v", e.Type(), tc.data, sid, cut, tc.wantSession, tc.wantCutoff)
		}
		// Every event that can revoke is of a type subscribers filter on.
		if sid != "" || cut {
			found := false
			for _, rt := range RevokingTypes {
				found = found || rt == e.Type()
			}
			if !found {
				t.Errorf("%s revokes but is not in RevokingTypes", e.Type())
			}
		}
		if cut != e.Type().EndsSessions() {
			t.Errorf("%s: EndsSessions = %v, Revokes cut-off = %v", e.Type(), e.Type().EndsSessions(), cut)
		}
	}
}

// TestDeadlinesAgree holds the Instant and time.Time forms of the deadlines to
// the same answers at, just before and just after each deadline.
func TestDeadlinesAgree(t *testing.T) {
	issued := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	for name, p := range map[string]Policy{
		"inactivity first": {AccessTokenTTL: 60, AbsoluteLifetime: 3600, InactivityTimeout: 600},
		"absolute first":   {AccessTokenTTL: 60, AbsoluteLifetime: 300, InactivityTimeout: 600},
		"no inactivity":    {AccessTokenTTL: 60, AbsoluteLifetime: 300},
	} {
		s := Session{Policy: &p, IssuedAt: InstantOf(issued), LastActive: InstantOf(issued.Add(30 * time.Second)), Status: StatusActive}
		deadline := s.RefreshExpiresAt()
		if !deadline.Equal(s.RefreshDeadline().Time()) {
			t.Errorf("%s: RefreshExpiresAt %v != RefreshDeadline %v", name, deadline, s.RefreshDeadline().Time())
		}
		if s.AbsoluteDeadline().Before(deadline) {
			t.Errorf("%s: absolute deadline %v before the refresh deadline %v", name, s.AbsoluteDeadline(), deadline)
		}
		if _, expired := s.ExpiredAt(deadline.Add(-time.Nanosecond)); expired {
			t.Errorf("%s: expired a nanosecond before its deadline", name)
		}
		if _, expired := s.ExpiredAt(deadline); !expired {
			t.Errorf("%s: not expired at its deadline %v", name, deadline)
		}
	}
}
