package verifier

import (
	"context"
	"errors"
	"net/http"

	"github.com/sessionledger/sessionledger/accesstoken"
)

type claimsKey struct{}

// WithClaims returns ctx carrying c.
func WithClaims(ctx context.Context, c *Claims) context.Context {
	return context.WithValue(ctx, claimsKey{}, c)
}

// ClaimsFrom returns the claims the middleware put in ctx.
func ClaimsFrom(ctx context.Context) (*Claims, bool) {
	c, ok := ctx.Value(claimsKey{}).(*Claims)
	return c, ok
}

// BearerToken returns the token of an "Authorization: Bearer" header: the
// scheme in any case, as accesstoken.BearerToken reads it, the ledger's rule.
func BearerToken(r *http.Request) (string, bool) {
	return accesstoken.BearerToken(r.Header.Get("Authorization"))
}

// Reject writes the RFC 6750 answer for a request whose token was refused by
// Verify with err (or that had none, err nil): 401 with WWW-Authenticate, or
// 503 when the verifier fails closed because the revocation feed is down.
func Reject(w http.ResponseWriter, err error) {
	switch {
	case err == nil:
		w.Header().Set("WWW-Authenticate", `Bearer realm="api"`)
		http.Error(w, "a bearer access token is required", http.StatusUnauthorized)
	case errors.Is(err, ErrFeedOffline):
		w.Header().Set("Retry-After", "1")
		http.Error(w, "token revocation status unavailable", http.StatusServiceUnavailable)
	case errors.Is(err, ErrRevoked):
		w.Header().Set("WWW-Authenticate", `Bearer realm="api", error="invalid_token", error_description="the session has been revoked"`)
		http.Error(w, "the session has been revoked", http.StatusUnauthorized)
	default:
		w.Header().Set("WWW-Authenticate", `Bearer realm="api", error="invalid_token", error_description="the access token is not valid"`)
		http.Error(w, "the access token is not valid", http.StatusUnauthorized)
	}
}

// Middleware verifies the bearer token of every request and puts its claims
// in the request context (ClaimsFrom); it answers 401 itself otherwise.
func (v *Verifier) Middleware(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		token, ok := BearerToken(r)
		if !ok {
			Reject(w, nil)
			return
		}
		c, err := v.Verify(r.Context(), token)
		if err != nil {
			Reject(w, err)
			return
		}
		next.ServeHTTP(w, r.WithContext(WithClaims(r.Context(), c)))
	})
}
