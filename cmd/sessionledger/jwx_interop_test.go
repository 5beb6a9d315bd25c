package main

import (
	"fmt"
	"time"

	"github.com/lestrrat-go/jwx/v3/jwk"
	"github.com/lestrrat-go/jwx/v3/jws"
	"github.com/lestrrat-go/jwx/v3/jwt"
)

// verifyWithJWX verifies an access token as a resource server using
// lestrrat-go/jwx would at instant at: against jwks (each key's own alg,
// a kid required), with iss, aud and the times checked, and the header's alg
// pinned to alg.
func verifyWithJWX(token string, jwks []byte, alg string, at time.Time) error {
	set, err := jwk.Parse(jwks)
	if err != nil {
		return fmt.Errorf("jwx: JWKS: %w", err)
	}
	msg, err := jws.Parse([]byte(token))
	if err != nil {
		return fmt.Errorf("jwx: %w", err)
	}
	if got, ok := msg.Signatures()[0].ProtectedHeaders().Algorithm(); !ok || got.String() != alg {
		return fmt.Errorf("jwx: header alg %v, want %s", got, alg)
	}
	_, err = jwt.Parse([]byte(token),
		jwt.WithKeySet(set, jws.WithRequireKid(true)),
		jwt.WithValidate(true),
		jwt.WithIssuer("http://ledger.test"),
		jwt.WithAudience("http://ledger.test"),
		jwt.WithClock(jwt.ClockFunc(func() time.Time { return at })),
	)
	if err != nil {
		return fmt.Errorf("jwx: %w", err)
	}
	return nil
}
