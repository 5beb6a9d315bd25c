package domain

import (
	"testing"
	"time"
)

func BenchmarkParseRefreshToken(b *testing.B) {
	s := token0().Encode()
	b.ReportAllocs()
	for i := 0; i < b.N; i++ {
		if _, err := ParseRefreshToken(s); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkTokenDigest(b *testing.B) {
	t := token0()
	b.ReportAllocs()
	for i := 0; i < b.N; i++ {
		testKeys.Digest(t)
	}
}

func BenchmarkDecideRefresh(b *testing.B) {
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	s, toks := sessionAt(t0, Policy{AccessTokenTTL: 60, AbsoluteLifetime: 3600, InactivityTimeout: 600}, 2, t0.Add(time.Minute))
	now := t0.Add(2 * time.Minute)
	b.ReportAllocs()
	for i := 0; i < b.N; i++ {
		if d := DecideRefresh(s, toks[2], testKeys, now, 10*time.Second); d.Outcome != OutcomeRotated {
			b.Fatal(d.Outcome)
		}
	}
}

func benchRotated() Event {
	return Event{ID: "01JD3Z9V6Q4Q4WJ5X7K8M9N0PA", Time: time.Now(), SessionID: testSID, UserKey: "0123456789abcdef0123456789abcdef",
		Prev: make([]byte, 32), Data: SessionRotated{Generation: 3, RefreshToken: testKeys.Digest(token0())}}
}

func BenchmarkEncodeEvent(b *testing.B) {
	e := benchRotated()
	b.ReportAllocs()
	for i := 0; i < b.N; i++ {
		if _, err := EncodeEvent(e); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkDecodeEvent uses encoding/json; the stream is decoded with a faster
// engine (eventstore.BenchmarkDecodeStreamEvent).
func BenchmarkDecodeEvent(b *testing.B) {
	data, _ := EncodeEvent(benchRotated())
	b.ReportAllocs()
	for i := 0; i < b.N; i++ {
		if _, err := DecodeEvent(data); err != nil {
			b.Fatal(err)
		}
	}
}
