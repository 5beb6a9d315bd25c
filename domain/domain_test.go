package domain

import (
	"bytes"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/oklog/ulid/v2"
)

var testKeys = TokenKeys{DigestKeyID: "d1", DigestKey: bytes.Repeat([]byte{1}, 32), SuccessorKey: bytes.Repeat([]byte{2}, 32)}

const testSID = "01JD3Z9V6Q4Q4WJ5X7K8M9N0PA"

func token0() RefreshToken {
	t := RefreshToken{SessionID: testSID}
	copy(t.Secret[:], "0123456789abcdef0123456789abcdef")
	return t
}

func TestRefreshTokenRoundTrip(t *testing.T) {
	legacy := token0()
	legacy.Generation = 7
	for _, tc := range []struct {
		name string
		tok  RefreshToken
		len  int
	}{{"tagged", testKeys.Seal(legacy), RefreshTokenLen}, {"legacy", legacy, LegacyRefreshTokenLen}} {
		s := tc.tok.Encode()
		if !strings.HasPrefix(s, RefreshTokenPrefix) || len(s) != tc.len {
			t.Fatalf("%s: Encode() = %q (len %d), want prefix %q and length %d", tc.name, s, len(s), RefreshTokenPrefix, tc.len)
		}
		got, err := ParseRefreshToken(s)
		if err != nil {
			t.Fatalf("%s: ParseRefreshToken: %v", tc.name, err)
		}
		if got != tc.tok {
			t.Fatalf("%s: round trip: got %+v, want %+v", tc.name, got, tc.tok)
		}
		if str := fmt.Sprint(tc.tok) + fmt.Sprintf("%v %#v %s", tc.tok, tc.tok, tc.tok); strings.Contains(str, s[len(RefreshTokenPrefix):]) {
			t.Fatalf("%s: formatting a token shows its secret: %s", tc.name, str)
		}
	}
	if RefreshTokenLen != 109 || LegacyRefreshTokenLen != 88 {
		t.Fatalf("lengths %d and %d changed: clients and docs state 109 (88 for the legacy form)", RefreshTokenLen, LegacyRefreshTokenLen)
	}
}

// TestTagRefusesForgeriesInConstantWork: a tagged token is authentic only
// with the tag the ledger computed; any change to the session id,
// generation, secret or tag is caught by one HMAC, and the successor of any
// token is tagged.
func TestTagRefusesForgeriesInConstantWork(t *testing.T) {
	genuine := testKeys.Seal(token0())
	if !testKeys.Authentic(genuine) {
		t.Fatal("a sealed token is not authentic")
	}
	if testKeys.Authentic(token0()) {
		t.Fatal("an untagged (legacy) token is authentic by itself")
	}
	other := testKeys
	other.SuccessorKey = []byte("another successor key, 32 bytes!")
	for name, forged := range map[string]RefreshToken{
		"another generation": func() RefreshToken { f := genuine; f.Generation = 9; return f }(),
		"another secret":     func() RefreshToken { f := genuine; f.Secret[0] ^= 1; return f }(),
		"another session":    func() RefreshToken { f := genuine; f.SessionID = "01JD3Z9V6Q4Q4WJ5X7K8M9N0PB"; return f }(),
		"another tag":        func() RefreshToken { f := genuine; f.Tag[15] ^= 1; return f }(),
		"another ledger":     other.Seal(token0()),
	} {
		if testKeys.Authentic(forged) {
			t.Errorf("%s: authentic", name)
		}
		// Through the wire form as well.
		if p, err := ParseRefreshToken(forged.Encode()); err != nil || testKeys.Authentic(p) {
			t.Errorf("%s: parsed %v, authentic", name, err)
		}
	}
	if next := testKeys.Successor(genuine); !next.Tagged || !testKeys.Authentic(next) {
		t.Fatalf("successor %+v is not tagged", next)
	}
	if next := testKeys.Successor(token0()); !testKeys.Authentic(next) {
		t.Fatal("the successor of a legacy token is not tagged")
	}
}

// TestOldTokensNeedNoChainWalk: telling a genuine rotated-out
// token from a forged one no longer walks the chain from it: a forged
// generation-0 token for a session at generation 10,000 is refused by its
// tag, and a genuine one is known for reuse at once. A legacy token is
// walked at most MaxLegacyGenerationsBehind rotations.
func TestOldTokensNeedNoChainWalk(t *testing.T) {
	first := testKeys.Seal(token0())
	s := &Session{ID: testSID, Generation: 10_000}
	cur := first
	for range 10_000 {
		cur = testKeys.Successor(cur)
	}
	s.Token = testKeys.Digest(cur)
	if behind, genuine := testKeys.GenerationsBehind(s, first); !genuine || behind != 10_000 {
		t.Fatalf("the genuine first token: behind %d genuine %v", behind, genuine)
	}
	forged := first
	forged.Secret[0] ^= 1
	if _, genuine := testKeys.GenerationsBehind(s, forged); genuine {
		t.Fatal("a forged generation-0 token is genuine")
	}
	for name, tok := range map[string]RefreshToken{"genuine, 10,000 behind": first, "forged, 10,000 behind": forged, "current": cur} {
		if n := testing.AllocsPerRun(10, func() { testKeys.GenerationsBehind(s, tok) }); n > 40 {
			t.Errorf("%s: %v allocations: the check walks the chain", name, n)
		}
	}
	// Legacy tokens: a bounded walk.
	legacy := token0()
	s.Generation, s.Token = 3, testKeys.Digest(testKeys.Successor(testKeys.Successor(testKeys.Successor(legacy))))
	if behind, genuine := testKeys.GenerationsBehind(s, legacy); !genuine || behind != 3 {
		t.Fatalf("a legacy token three behind: %d %v", behind, genuine)
	}
	s.Generation = MaxLegacyGenerationsBehind + 1
	if _, genuine := testKeys.GenerationsBehind(s, legacy); genuine {
		t.Fatal("a legacy token further behind than the bound is genuine")
	}
}

func TestParseRefreshTokenRejects(t *testing.T) {
	good := testKeys.Seal(token0()).Encode()
	badSID := RefreshToken{SessionID: "01JD3Z9V6Q4Q4WJ5X7K8M9N0P!"}.Encode()
	// The legacy form's last character carries 2 unused bits (62 bytes):
	// setting one makes another string of the same bytes, which must be
	// refused. (The tagged form, 78 bytes, has none.)
	sloppy := []byte(token0().Encode())
	sloppy[len(sloppy)-1] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"[strings.IndexByte("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_", sloppy[len(sloppy)-1])|1]
	for name, in := range map[string]string{
		"empty":           "",
		"garbage":         "hello",
		"no prefix":       strings.Repeat("A", RefreshTokenLen),
		"wrong prefix":    "xxxx_" + good[5:],
		"short":           good[:len(good)-1],
		"long":            good + "A",
		"not base64":      good[:len(good)-1] + "*",
		"padded":          good[:len(good)-1] + "=",
		"unused bits set": string(sloppy),
		"between forms":   good[:LegacyRefreshTokenLen+4],
		"bad session id":  badSID,
		"session id only": testSID,
		"jwt":             "eyJhbGciOiJFZERTQSJ9.eyJzdWIiOiJ4In0.c2ln",
	} {
		if _, err := ParseRefreshToken(in); !errors.Is(err, ErrTokenMalformed) {
			t.Errorf("%s: ParseRefreshToken(%q) error = %v, want ErrTokenMalformed", name, in, err)
		}
	}
}

func TestSuccessorIsDeterministicAndKeyed(t *testing.T) {
	a, b := testKeys.Successor(token0()), testKeys.Successor(token0())
	if a != b || a.Generation != 1 || a.SessionID != testSID {
		t.Fatalf("Successor not deterministic: %+v vs %+v", a, b)
	}
	other := testKeys
	other.SuccessorKey = bytes.Repeat([]byte{3}, 32)
	if other.Successor(token0()).Secret == a.Secret {
		t.Fatal("successor does not depend on the key")
	}
	if a.Secret == token0().Secret {
		t.Fatal("successor equals its predecessor")
	}
}

// sessionAt returns a live session issued at issued under policy, rotated gens times,
// the last rotation at rotatedAt; and the session's tokens by generation.
func sessionAt(issued time.Time, p Policy, gens int, rotatedAt time.Time) (*Session, []RefreshToken) {
	toks := []RefreshToken{token0()}
	s := &Session{}
	mustApply(s, Event{SessionID: testSID, UserKey: "u1", Time: issued, Seq: 1,
		Data: SessionIssued{UserID: "alice", Policy: p, RefreshToken: testKeys.Digest(toks[0])}})
	for i := 1; i <= gens; i++ {
		toks = append(toks, testKeys.Successor(toks[i-1]))
		mustApply(s, Event{SessionID: testSID, UserKey: "u1", Time: rotatedAt, Seq: uint64(i + 1),
			Data: SessionRotated{Generation: uint32(i), RefreshToken: testKeys.Digest(toks[i])}})
	}
	return s, toks
}

func mustApply(s *Session, e Event) {
	if err := s.Apply(e); err != nil {
		panic(err)
	}
}

func TestDecideRefresh(t *testing.T) {
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	p := Policy{Name: "test", AccessTokenTTL: 60, AbsoluteLifetime: 3600, InactivityTimeout: 600}
	rot := t0.Add(100 * time.Second) // last rotation; inactivity deadline rot+600s
	grace := 10 * time.Second
	forged := token0()
	forged.Generation = 2
	forged.Secret[0] ^= 1
	otherSession := token0()
	otherSession.SessionID = "01JD3Z9V6Q4Q4WJ5X7K8M9N0PB"
	future := token0()
	future.Generation = 9

	s, toks := sessionAt(t0, p, 2, rot) // current generation 2
	tests := []struct {
		name    string
		tok     RefreshToken
		now     time.Time
		outcome RefreshOutcome
		event   EventType
		err     error
	}{
		{"current rotates", toks[2], rot.Add(time.Second), OutcomeRotated, TypeSessionRotated, nil},
		{"previous within grace is tolerated", toks[1], rot.Add(grace - time.Nanosecond), OutcomeTolerated, TypeSessionReused, nil},
		{"previous exactly at grace end revokes", toks[1], rot.Add(grace), OutcomeReused, TypeSessionReused, ErrTokenReused},
		{"previous after grace revokes", toks[1], rot.Add(grace + time.Second), OutcomeReused, TypeSessionReused, ErrTokenReused},
		{"two back within grace revokes", toks[0], rot.Add(time.Second), OutcomeReused, TypeSessionReused, ErrTokenReused},
		{"forged records nothing", forged, rot.Add(time.Second), OutcomeInvalid, "", ErrTokenUnknown},
		{"other session records nothing", otherSession, rot.Add(time.Second), OutcomeInvalid, "", ErrTokenUnknown},
		{"future generation records nothing", future, rot.Add(time.Second), OutcomeInvalid, "", ErrTokenUnknown},
		{"one second before inactivity deadline rotates", toks[2], rot.Add(599 * time.Second), OutcomeRotated, TypeSessionRotated, nil},
		{"exactly at inactivity deadline expires", toks[2], rot.Add(600 * time.Second), OutcomeExpired, TypeSessionExpired, ErrSessionExpired},
		{"one second after inactivity deadline expires", toks[2], rot.Add(601 * time.Second), OutcomeExpired, TypeSessionExpired, ErrSessionExpired},
		{"forged after deadline records nothing", forged, rot.Add(601 * time.Second), OutcomeInvalid, "", ErrTokenUnknown},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d := DecideRefresh(s, tt.tok, testKeys, tt.now, grace)
			if d.Outcome != tt.outcome || !errors.Is(d.Err, tt.err) || (tt.err == nil) != (d.Err == nil) {
				t.Fatalf("got outcome %q err %v, want %q err %v", d.Outcome, d.Err, tt.outcome, tt.err)
			}
			var got EventType
			if d.Event != nil {
				got = d.Event.EventType()
			}
			if got != tt.event {
				t.Fatalf("event = %q, want %q", got, tt.event)
			}
		})
	}

	t.Run("successor of current is the token the tolerated retry gets", func(t *testing.T) {
		d := DecideRefresh(s, toks[2], testKeys, rot.Add(time.Second), grace)
		next := *s
		mustApply(&next, Event{SessionID: testSID, Time: rot.Add(time.Second), Seq: 9, Data: d.Event})
		retry := DecideRefresh(&next, toks[2], testKeys, rot.Add(2*time.Second), grace)
		if retry.Outcome != OutcomeTolerated || retry.Token != d.Token {
			t.Fatalf("retry got %q with a different token: %v", retry.Outcome, retry.Token != d.Token)
		}
	})
	t.Run("grace 0 disables tolerance", func(t *testing.T) {
		d := DecideRefresh(s, toks[1], testKeys, rot, 0)
		if d.Outcome != OutcomeReused {
			t.Fatalf("outcome %q, want reused", d.Outcome)
		}
	})
	t.Run("absolute lifetime at its edge", func(t *testing.T) {
		mobile := Policy{Name: "m", AccessTokenTTL: 60, AbsoluteLifetime: 3600}
		ms, mt := sessionAt(t0, mobile, 0, time.Time{})
		if d := DecideRefresh(ms, mt[0], testKeys, t0.Add(3599*time.Second), grace); d.Outcome != OutcomeRotated {
			t.Fatalf("one second before: %q", d.Outcome)
		}
		d := DecideRefresh(ms, mt[0], testKeys, t0.Add(3600*time.Second), grace)
		if d.Outcome != OutcomeExpired || d.Event.(SessionExpired).Reason != ExpiredAbsolute {
			t.Fatalf("at deadline: %q %+v", d.Outcome, d.Event)
		}
	})
	t.Run("ended session refuses genuine token without recording", func(t *testing.T) {
		ended := *s
		mustApply(&ended, Event{SessionID: testSID, Time: rot, Seq: 10, Data: SessionRevoked{Reason: ReasonAdminRevoked}})
		d := DecideRefresh(&ended, toks[2], testKeys, rot, grace)
		if d.Event != nil || !errors.Is(d.Err, ErrSessionEnded) {
			t.Fatalf("got %+v", d)
		}
	})
}

func TestApplyReuseRevocationIsPendingUntilRevoked(t *testing.T) {
	s, _ := sessionAt(time.Unix(0, 0), Policy{AccessTokenTTL: 1, AbsoluteLifetime: 10}, 1, time.Unix(1, 0))
	mustApply(s, Event{Seq: 5, Data: SessionReused{Outcome: ReuseFamilyRevoked}})
	if s.Live() || !s.RevocationPending || DecideCompleteRevocation(s) == nil {
		t.Fatalf("after family_revoked: live=%v pending=%v", s.Live(), s.RevocationPending)
	}
	mustApply(s, Event{Seq: 6, Data: DecideCompleteRevocation(s)})
	if s.RevocationPending || DecideCompleteRevocation(s) != nil || s.EndReason != ReasonReuseDetected {
		t.Fatalf("after revoked: pending=%v reason=%q", s.RevocationPending, s.EndReason)
	}
}

func TestApplyRejectsGenerationGap(t *testing.T) {
	s, _ := sessionAt(time.Unix(0, 0), Policy{AccessTokenTTL: 1, AbsoluteLifetime: 10}, 0, time.Time{})
	if err := s.Apply(Event{Seq: 2, Data: SessionRotated{Generation: 2}}); err == nil {
		t.Fatal("rotation skipping a generation was applied")
	}
}

func TestCodecRoundTrip(t *testing.T) {
	at := time.Date(2026, 11, 22, 10, 0, 0, 123, time.UTC)
	events := []Event{
		{ID: "01A", Time: at, SessionID: testSID, UserKey: "uk", Data: SessionIssued{UserID: "alice", Policy: presets[PolicyConsumer],
			Device: Device{IP: "10.0.0.1", UserAgent: "ua", Name: "n"}, Claims: json.RawMessage(`{"role":"x"}`), RefreshToken: testKeys.Digest(token0())}},
		{ID: "01B", Time: at, SessionID: testSID, UserKey: "uk", Data: SessionRotated{Generation: 1, RefreshToken: testKeys.Digest(token0())}},
		{ID: "01C", Time: at, SessionID: testSID, UserKey: "uk", Data: SessionReused{PresentedGeneration: 0, CurrentGeneration: 1, Outcome: ReuseTolerated}},
		{ID: "01D", Time: at, SessionID: testSID, UserKey: "uk", Data: SessionRevoked{Reason: ReasonSignedOut, Actor: ActorClient}},
		{ID: "01E", Time: at, SessionID: testSID, UserKey: "uk", Data: SessionExpired{Reason: ExpiredInactivity}},
		{ID: "01F", Time: at, UserKey: "uk", Data: UserSessionsRevoked{UserID: "alice", Actor: ActorAdmin}},
		{ID: "01G", Time: at, UserKey: "uk", Data: UserDeactivated{UserID: "alice", Actor: ActorAdmin}},
		{ID: "01H", Time: at, UserKey: "uk", Data: UserReactivated{UserID: "alice", Actor: ActorAdmin}},
	}
	for _, e := range events {
		b, err := EncodeEvent(e)
		if err != nil {
			t.Fatalf("%s: encode: %v", e.Type(), err)
		}
		var env map[string]any
		_ = json.Unmarshal(b, &env)
		for _, attr := range []string{"specversion", "id", "type", "source", "subject", "time", "data"} {
			if _, ok := env[attr]; !ok {
				t.Errorf("%s: CloudEvents attribute %q missing in %s", e.Type(), attr, b)
			}
		}
		got, err := DecodeEvent(b)
		if err != nil {
			t.Fatalf("%s: decode: %v", e.Type(), err)
		}
		again, _ := EncodeEvent(got)
		if !bytes.Equal(again, b) {
			t.Errorf("%s: round trip changed the event:\n got %s\nwant %s", e.Type(), again, b)
		}
	}
}

func TestDecodeRejects(t *testing.T) {
	valid, _ := EncodeEvent(Event{ID: "01A", Time: time.Unix(1, 0), SessionID: testSID, UserKey: "uk", Data: SessionRevoked{Reason: "x"}})
	swap := func(old, new string) []byte { return bytes.Replace(valid, []byte(old), []byte(new), 1) }
	for name, in := range map[string][]byte{
		"unknown type":       swap(`"session.revoked"`, `"session.teleported"`),
		"other spec version": swap(`"specversion":"1.0"`, `"specversion":"0.3"`),
		"newer schema":       swap(`"schemaversion":2`, `"schemaversion":3`),
		"no data":            swap(`"data":{"reason":"x","actor":""}`, `"data":null`),
		"not json":           []byte("{"),
		"no subject":         swap(`"subject":"`+testSID+`"`, `"subject":""`),
	} {
		if _, err := DecodeEvent(in); err == nil {
			t.Errorf("%s: decoded %s", name, in)
		}
	}
	if _, err := DecodeEvent(swap(`"session.revoked"`, `"session.teleported"`)); !errors.Is(err, ErrUnknownEventType) {
		t.Errorf("unknown type error = %v, want ErrUnknownEventType", err)
	}
}

func TestPolicyValidate(t *testing.T) {
	for _, name := range PresetNames() {
		p, err := Preset(name)
		if err != nil || p.Validate() != nil {
			t.Errorf("preset %s: %v %v", name, err, p.Validate())
		}
	}
	if _, err := Preset("gold"); !errors.Is(err, ErrInvalidInput) {
		t.Errorf("unknown preset: %v", err)
	}
	for _, tt := range []struct {
		p     Policy
		field string
	}{
		{Policy{AccessTokenTTL: 0, AbsoluteLifetime: 10}, "policy.access_token_ttl"},
		{Policy{AccessTokenTTL: 1, AbsoluteLifetime: 0}, "policy.absolute_lifetime"},
		{Policy{AccessTokenTTL: 20, AbsoluteLifetime: 10}, "policy.absolute_lifetime"},
		{Policy{AccessTokenTTL: 1, AbsoluteLifetime: 10, InactivityTimeout: -1}, "policy.inactivity_timeout"},
		{Policy{AccessTokenTTL: 1, AbsoluteLifetime: MaxPolicySeconds + 1}, "policy.absolute_lifetime"},
		{Policy{AccessTokenTTL: 1, AbsoluteLifetime: 10, InactivityTimeout: 1 << 40}, "policy.inactivity_timeout"},
	} {
		var ve *ValidationError
		if err := tt.p.Validate(); !errors.As(err, &ve) || ve.Field != tt.field {
			t.Errorf("%+v: got %v, want an error on %s", tt.p, err, tt.field)
		}
	}
}

func TestDigestFastPathAgrees(t *testing.T) {
	want := Digest{KeyID: "dk\"1", Value: [32]byte{9, 8, 7}}
	b, _ := json.Marshal(want)
	for _, in := range []string{string(b), strings.ReplaceAll(string(b), ":", " : "), `{"value":"` + base64.StdEncoding.EncodeToString(want.Value[:]) + `","kid":"dk\"1"}`} {
		var got Digest
		if err := json.Unmarshal([]byte(in), &got); err != nil || got != want {
			t.Fatalf("%s: got %+v, %v", in, got, err)
		}
	}
	var plain Digest
	if err := json.Unmarshal([]byte(`{"kid":"d1","value":"`+base64.StdEncoding.EncodeToString(make([]byte, 32))+`"}`), &plain); err != nil || plain.KeyID != "d1" {
		t.Fatalf("fast path: %+v %v", plain, err)
	}
	long := base64.StdEncoding.EncodeToString(make([]byte, 36)) // would overflow a 32-byte value
	for _, bad := range []string{`{"kid":"d1","value":"AAAA"}`, `{"kid":"d1","value":"!!"}`, `{"kid":"d1","value":"` + long + `"}`} {
		if err := json.Unmarshal([]byte(bad), &plain); err == nil {
			t.Errorf("%s accepted", bad)
		}
	}
}

func TestParseRefreshTokenAllocationIsBounded(t *testing.T) {
	huge := RefreshTokenPrefix + strings.Repeat("A", 1<<20)
	if n := testing.AllocsPerRun(20, func() { _, _ = ParseRefreshToken(huge) }); n != 0 {
		t.Fatalf("parsing a 1 MiB token allocates %v times; the length check must come first", n)
	}
	good := token0().Encode()
	if n := testing.AllocsPerRun(20, func() { _, _ = ParseRefreshToken(good) }); n > 1 {
		t.Fatalf("parsing a token allocates %v times", n)
	}
}

func TestSessionIDTime(t *testing.T) {
	at := time.Date(2026, 11, 23, 17, 0, 0, 123e6, time.UTC)
	id := ulid.MustNew(ulid.Timestamp(at), rand.Reader).String()
	if got, ok := SessionIDTime(id); !ok || !got.Equal(at) {
		t.Fatalf("SessionIDTime(%s) = %v %v, want %v", id, got, ok, at)
	}
	if _, ok := SessionIDTime("not a ulid"); ok {
		t.Fatal("a malformed id has a time")
	}
}
