package accesstoken_test

import (
	"encoding/json"
	"testing"
	"time"

	"github.com/sessionledger/sessionledger/accesstoken"
)

// These benchmarks measure, for each algorithm, what a refresh costs the
// ledger in signing and what each verification costs a resource server,
// through the package's exported API only. They live in the external test
// package because the package's own tests already declare BenchmarkSign
// (EdDSA only, accesstoken_test.go) and BenchmarkVerify (genuine and refused
// EdDSA tokens, parse_bench_test.go); these add the sub-benchmarks
// BenchmarkSign/{EdDSA,ES256,RS256} and BenchmarkVerify/{EdDSA,ES256,RS256}.

// benchNow is the instant tokens are issued and verified at.
var benchNow = time.Date(2026, 11, 22, 10, 0, 0, 0, time.UTC)

const (
	benchIssuer   = "https://ledger.example"
	benchAudience = "api"
)

// benchClaims are the claims of a refresh's access token as the ledger
// issues it: a user, a session with its sequence, a client and a small custom
// claim.
func benchClaims() accesstoken.Claims {
	return accesstoken.Claims{
		Subject:    "user-8f14e45fceea167a",
		SessionID:  "01JD3Q7Y8K2M4N6P8R0T2V4X6Z",
		SessionSeq: 1_048_576,
		ClientID:   "web-app",
		ID:         "01JD3Q7Y8K2M4N6P8R0T2V4X70",
		IssuedAt:   benchNow,
		ExpiresAt:  benchNow.Add(15 * time.Minute),
		Custom:     json.RawMessage(`{"tenant":"acme","roles":["reader"]}`),
	}
}

// benchSigner returns a signer whose active key is a new key of alg.
func benchSigner(tb testing.TB, alg string) *accesstoken.Signer {
	tb.Helper()
	k, err := accesstoken.NewRandomKey(alg)
	if err != nil {
		tb.Fatal(err)
	}
	s, err := accesstoken.NewSigner(benchIssuer, benchAudience, k)
	if err != nil {
		tb.Fatal(err)
	}
	return s
}

// BenchmarkSign/<alg> measures Signer.Sign: the claims encoded and signed
// with the active key.
func BenchmarkSign(b *testing.B) {
	for _, alg := range accesstoken.Algorithms {
		b.Run(alg, func(b *testing.B) {
			s := benchSigner(b, alg)
			c := benchClaims()
			b.ReportAllocs()
			for b.Loop() {
				if _, err := s.Sign(c); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkVerify/<alg> measures Signer.Verify (Parse) of a genuine token:
// the header, the signature check, the claims decoded and validated.
func BenchmarkVerify(b *testing.B) {
	for _, alg := range accesstoken.Algorithms {
		b.Run(alg, func(b *testing.B) {
			s := benchSigner(b, alg)
			tok, err := s.Sign(benchClaims())
			if err != nil {
				b.Fatal(err)
			}
			if v, err := s.Verify(tok, benchNow); err != nil || v.SessionSeq != 1_048_576 || v.Custom["tenant"] != "acme" {
				b.Fatalf("the token does not verify as signed: %+v, %v", v, err)
			}
			b.ReportAllocs()
			for b.Loop() {
				if _, err := s.Verify(tok, benchNow); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
