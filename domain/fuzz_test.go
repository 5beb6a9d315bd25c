package domain

import (
	"bytes"
	"encoding/json"
	"testing"
	"time"
)

func FuzzParseRefreshToken(f *testing.F) {
	good := token0().Encode()
	for _, s := range []string{good, "", "slrt_", good[:len(good)-1], good + "A", "xxxx_" + good[5:], testSID, "eyJhbGciOiJub25lIn0.e30."} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		tok, err := ParseRefreshToken(s)
		if err != nil {
			return
		}
		// Whatever parses is a well-formed token that encodes back to itself.
		if !ValidSessionID(tok.SessionID) || tok.Encode() != s {
			t.Fatalf("%q parsed to a token that encodes as %q", s, tok.Encode())
		}
	})
}

func FuzzDecodeEvent(f *testing.F) {
	at := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	for _, e := range []Event{
		{ID: "A", Time: at, SessionID: testSID, UserKey: "u", Data: SessionIssued{UserID: "x", Claims: json.RawMessage(`{"a":1}`)}},
		{ID: "B", Time: at, SessionID: testSID, UserKey: "u", Prev: bytes.Repeat([]byte{1}, 32), Data: SessionRotated{Generation: 1}},
		{ID: "C", Time: at, UserKey: "u", Data: UserDeactivated{UserID: "x"}},
	} {
		b, _ := EncodeEvent(e)
		f.Add(b)
	}
	f.Add([]byte(`{"specversion":"1.0","type":"session.revoked","data":null}`))
	f.Add([]byte(`{`))
	f.Fuzz(func(t *testing.T, b []byte) {
		e, err := DecodeEvent(b)
		if err != nil {
			return
		}
		// A decoded event encodes, and decodes again to the same event.
		again, err := EncodeEvent(e)
		if err != nil {
			t.Fatalf("decoded event does not encode: %v", err)
		}
		e2, err := DecodeEvent(again)
		if err != nil || e2.ID != e.ID || e2.Type() != e.Type() || e2.SessionID != e.SessionID || !bytes.Equal(e2.Prev, e.Prev) {
			t.Fatalf("round trip changed the event: %v", err)
		}
	})
}
