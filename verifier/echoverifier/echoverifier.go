// Package echoverifier adapts the verifier's middleware to echo.
package echoverifier

import (
	"github.com/labstack/echo/v4"

	"github.com/sessionledger/sessionledger/verifier"
)

// ContextKey is the echo context key under which the claims are stored.
const ContextKey = "sessionledger.claims"

// Middleware verifies the bearer token of every request; the claims go in the
// request context (verifier.ClaimsFrom) and in the echo context (Claims).
// Refused requests get 401 with WWW-Authenticate.
func Middleware(v *verifier.Verifier) echo.MiddlewareFunc {
	return func(next echo.HandlerFunc) echo.HandlerFunc {
		return func(c echo.Context) error {
			r := c.Request()
			token, ok := verifier.BearerToken(r)
			if !ok {
				verifier.Reject(c.Response(), nil)
				return nil
			}
			claims, err := v.Verify(r.Context(), token)
			if err != nil {
				verifier.Reject(c.Response(), err)
				return nil
			}
			c.SetRequest(r.WithContext(verifier.WithClaims(r.Context(), claims)))
			c.Set(ContextKey, claims)
			return next(c)
		}
	}
}

// Claims returns the claims Middleware stored in c.
func Claims(c echo.Context) (*verifier.Claims, bool) {
	claims, ok := c.Get(ContextKey).(*verifier.Claims)
	return claims, ok
}
