package verifier_test

import (
	"context"
	"crypto/ed25519"
	"testing"

	"github.com/golang-jwt/jwt/v5"

	"github.com/sessionledger/sessionledger/verifier"
)

// BenchmarkVerify compares the verifier's warm path (a token seen before:
// cache hit, expiry and revocation checks) with what a service does without
// it: a plain golang-jwt parse and signature check of the same token.
func BenchmarkVerify(b *testing.B) {
	e := newEnv(b)
	v := e.verifier(verifier.Config{})
	tok := e.issue("bench").AccessToken
	ctx := context.Background()
	if _, err := v.Verify(ctx, tok); err != nil {
		b.Fatal(err)
	}
	b.Run("verifier-cached", func(b *testing.B) {
		b.ReportAllocs()
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				if _, err := v.Verify(ctx, tok); err != nil {
					b.Fatal(err)
				}
			}
		})
	})
	pub := signingKey.Public().(ed25519.PublicKey)
	b.Run("golang-jwt-parse", func(b *testing.B) {
		b.ReportAllocs()
		b.RunParallel(func(pb *testing.PB) {
			p := jwt.NewParser(jwt.WithValidMethods([]string{"EdDSA"}), jwt.WithIssuer(issuer), jwt.WithAudience(audience))
			for pb.Next() {
				if _, err := p.Parse(tok, func(*jwt.Token) (any, error) { return pub, nil }); err != nil {
					b.Fatal(err)
				}
			}
		})
	})
}
