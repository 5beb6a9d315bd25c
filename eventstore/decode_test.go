package eventstore

import (
	"bytes"
	"encoding/json"
	"reflect"
	"testing"
	"time"

	gojson "github.com/goccy/go-json"

	"github.com/sessionledger/sessionledger/domain"
)

// The stream is decoded with goccy/go-json for speed; it must agree with
// encoding/json on every event, and refuse the same bad ones.
func TestFastDecodeAgreesWithStandardLibrary(t *testing.T) {
	sid := "01JD3Z9V6Q4Q4WJ5X7K8M9N0PA"
	at := time.Date(2026, 11, 22, 10, 0, 0, 123456789, time.UTC)
	d := domain.Digest{KeyID: "dk1", Value: [32]byte{1, 2, 3, 250}}
	prev := bytes.Repeat([]byte{7}, 32)
	events := []domain.Event{
		{ID: "A", Time: at, SessionID: sid, UserKey: "u", Data: domain.SessionIssued{UserID: "alïce \"q\"", Policy: domain.Policy{Name: "consumer", AccessTokenTTL: 3600, AbsoluteLifetime: 9, InactivityTimeout: 1},
			Device: domain.Device{IP: "::1", UserAgent: "UA/1.0", Name: "n"}, Claims: json.RawMessage(`{"a":[1,{"b":null}],"c":"\u00e9"}`), RefreshToken: d}},
		{ID: "B", Time: at, SessionID: sid, UserKey: "u", Prev: prev, Data: domain.SessionRotated{Generation: 4294967295, RefreshToken: d}},
		{ID: "C", Time: at, SessionID: sid, UserKey: "u", Prev: prev, Data: domain.SessionReused{PresentedGeneration: 1, CurrentGeneration: 2, Outcome: domain.ReuseTolerated}},
		{ID: "D", Time: at, SessionID: sid, UserKey: "u", Prev: prev, Data: domain.SessionRevoked{Reason: "x", Actor: "y"}},
		{ID: "E", Time: at, SessionID: sid, UserKey: "u", Prev: prev, Data: domain.SessionExpired{Reason: "absolute"}},
		{ID: "F", Time: at, UserKey: "u", Prev: prev, Data: domain.UserSessionsRevoked{UserID: "alice", Actor: "admin"}},
		{ID: "G", Time: at, UserKey: "u", Prev: prev, Data: domain.UserDeactivated{UserID: "alice", Actor: "admin"}},
		{ID: "H", Time: at, UserKey: "u", Prev: prev, Data: domain.UserReactivated{UserID: "alice", Actor: "admin"}},
	}
	for _, e := range events {
		b, err := domain.EncodeEvent(e)
		if err != nil {
			t.Fatal(err)
		}
		// Also a re-serialised form (other key order, spaces) another tool might write.
		var generic map[string]any
		_ = json.Unmarshal(b, &generic)
		other, _ := json.MarshalIndent(generic, "", "  ")
		for _, in := range [][]byte{b, other} {
			std, err1 := domain.DecodeEvent(in)
			fast, err2 := domain.DecodeEventWith(in, gojson.Unmarshal)
			if err1 != nil || err2 != nil {
				t.Fatalf("%s: std %v, fast %v", e.Type(), err1, err2)
			}
			if !reflect.DeepEqual(std, fast) {
				t.Fatalf("%s decodes differently:\n std %+v\nfast %+v", e.Type(), std, fast)
			}
		}
	}
	valid, _ := domain.EncodeEvent(events[3])
	for name, bad := range map[string][]byte{
		"unknown type":  bytes.Replace(valid, []byte(`session.revoked`), []byte(`session.vanished`), 1),
		"truncated":     valid[:len(valid)-5],
		"short digest":  bytes.Replace(mustEncode(t, events[1]), []byte(`"value":"`), []byte(`"value":"AAAA`), 1),
		"not an object": []byte(`[1,2,3]`),
		"null data":     bytes.Replace(valid, []byte(`"data":{"reason":"x","actor":"y"}`), []byte(`"data":null`), 1),
	} {
		_, err1 := domain.DecodeEvent(bad)
		_, err2 := domain.DecodeEventWith(bad, gojson.Unmarshal)
		if err1 == nil || err2 == nil {
			t.Errorf("%s: std err %v, fast err %v; both must refuse it", name, err1, err2)
		}
	}
}

func mustEncode(t *testing.T, e domain.Event) []byte {
	t.Helper()
	b, err := domain.EncodeEvent(e)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// BenchmarkDecodeStreamEvent is the decode the projection runs for every
// event it follows.
func BenchmarkDecodeStreamEvent(b *testing.B) {
	data, _ := domain.EncodeEvent(domain.Event{ID: "01JD3Z9V6Q4Q4WJ5X7K8M9N0PA", Time: time.Now(), SessionID: "01JD3Z9V6Q4Q4WJ5X7K8M9N0PA",
		UserKey: "0123456789abcdef0123456789abcdef", Prev: make([]byte, 32), Data: domain.SessionRotated{Generation: 3}})
	b.ReportAllocs()
	for i := 0; i < b.N; i++ {
		if _, err := domain.DecodeEventWith(data, gojson.Unmarshal); err != nil {
			b.Fatal(err)
		}
	}
}
