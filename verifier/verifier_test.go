package verifier_test

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"errors"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sessionledger/sessionledger/internal/poll"

	"github.com/golang-jwt/jwt/v5"
	"github.com/labstack/echo/v4"

	"github.com/sessionledger/sessionledger/accesstoken"
	"github.com/sessionledger/sessionledger/domain"
	"github.com/sessionledger/sessionledger/eventstore"
	"github.com/sessionledger/sessionledger/internal/ledgertest"
	"github.com/sessionledger/sessionledger/internal/natstest"
	"github.com/sessionledger/sessionledger/ledger"
	"github.com/sessionledger/sessionledger/verifier"
	"github.com/sessionledger/sessionledger/verifier/echoverifier"
)

const (
	issuer   = "https://ledger.test"
	audience = "api"
)

var signingKey = ledgertest.SigningKey

// env is a ledger on a real JetStream plus a JWKS endpoint, for verifiers to use.
type env struct {
	t          testing.TB
	srv        *natstest.Server
	ledger     *ledger.Ledger
	jwks       *httptest.Server
	jwksHits   atomic.Int64
	signer     *accesstoken.Signer
	ledgerTime func() time.Time
}

func newEnv(t testing.TB) *env {
	t.Helper()
	e := &env{t: t, srv: natstest.Start(t, ""), ledgerTime: time.Now}
	l := ledgertest.New(t, e.srv, issuer, audience, ledger.Config{Now: func() time.Time { return e.ledgerTime() }})
	e.ledger, e.signer = l.Ledger, l.Signer
	e.jwks = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		e.jwksHits.Add(1)
		_, _ = w.Write(e.signer.JWKS())
	}))
	t.Cleanup(e.jwks.Close)
	return e
}

func (e *env) verifier(cfg verifier.Config) *verifier.Verifier {
	e.t.Helper()
	cfg.JWKSURL, cfg.Issuer, cfg.Audience = e.jwks.URL, issuer, audience
	feed, err := eventstore.NewFeed(context.Background(), e.srv.Connect(e.t))
	if err != nil {
		e.t.Fatal(err)
	}
	v, err := verifier.New(context.Background(), cfg, feed)
	if err != nil {
		e.t.Fatal(err)
	}
	e.t.Cleanup(v.Close)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := v.WaitReady(ctx); err != nil {
		e.t.Fatal(err)
	}
	return v
}

func (e *env) issue(user string) ledger.TokenPair {
	e.t.Helper()
	p, err := e.ledger.Issue(context.Background(), ledger.IssueRequest{UserID: user, Claims: []byte(`{"tenant":"t1"}`)})
	if err != nil {
		e.t.Fatal(err)
	}
	return p
}

// eventuallyRevoked waits until v refuses token as revoked.
func eventuallyRevoked(t *testing.T, v *verifier.Verifier, token string) {
	t.Helper()
	poll.Until(t, 5*time.Second, func() error {
		if _, err := v.Verify(context.Background(), token); !errors.Is(err, verifier.ErrRevoked) {
			return errors.New("still accepted")
		}
		return nil
	})
}

func TestVerifyAndRevocations(t *testing.T) {
	e := newEnv(t)
	v := e.verifier(verifier.Config{})
	ctx := context.Background()

	a := e.issue("alice")
	c, err := v.Verify(ctx, a.AccessToken)
	if err != nil {
		t.Fatal(err)
	}
	if c.Subject != "alice" || c.SessionID != a.SessionID || c.Custom["tenant"] != "t1" || c.ID == "" {
		t.Fatalf("claims %+v", c)
	}
	if _, err := v.Verify(ctx, a.AccessToken); err != nil { // from the cache
		t.Fatal(err)
	}

	// Session revoked by an admin.
	if err := e.ledger.RevokeSession(ctx, a.SessionID); err != nil {
		t.Fatal(err)
	}
	eventuallyRevoked(t, v, a.AccessToken)

	// Reuse revokes the family.
	b := e.issue("bob")
	b1, _ := e.ledger.Refresh(ctx, b.RefreshToken)
	b2, _ := e.ledger.Refresh(ctx, b1.RefreshToken)
	_, _ = e.ledger.Refresh(ctx, b.RefreshToken)
	eventuallyRevoked(t, v, b2.AccessToken)

	// Revoke-all cuts the user's earlier sessions, not later ones.
	c1, c2 := e.issue("carol"), e.issue("carol")
	if err := e.ledger.RevokeUser(ctx, "carol"); err != nil {
		t.Fatal(err)
	}
	eventuallyRevoked(t, v, c1.AccessToken)
	eventuallyRevoked(t, v, c2.AccessToken)
	c3 := e.issue("carol") // in the same millisecond, as likely as not

	if _, err := v.Verify(ctx, c3.AccessToken); err != nil {
		t.Fatalf("a session issued after the cut-off is refused: %v", err)
	}

	// Deactivation.
	d := e.issue("dave")
	if err := e.ledger.Deactivate(ctx, "dave"); err != nil {
		t.Fatal(err)
	}
	eventuallyRevoked(t, v, d.AccessToken)

	// A verifier started later replays the recent past and forgets nothing.
	late := e.verifier(verifier.Config{})
	for _, tok := range []string{a.AccessToken, b2.AccessToken, c1.AccessToken, d.AccessToken} {
		if _, err := late.Verify(ctx, tok); !errors.Is(err, verifier.ErrRevoked) {
			t.Fatalf("a restarted verifier accepts a revoked session's token: %v", err)
		}
	}
	if _, err := late.Verify(ctx, c3.AccessToken); err != nil {
		t.Fatal(err)
	}
}

func TestExpiredSessionIsRefused(t *testing.T) {
	e := newEnv(t)
	v := e.verifier(verifier.Config{})
	ctx := context.Background()
	p := domain.Policy{AccessTokenTTL: 60, AbsoluteLifetime: 120, InactivityTimeout: 1}
	s, err := e.ledger.Issue(ctx, ledger.IssueRequest{UserID: "erin", CustomPolicy: &p})
	if err != nil {
		t.Fatal(err)
	}
	e.ledgerTime = func() time.Time { return time.Now().Add(2 * time.Second) }
	if n := e.ledger.ExpireDue(ctx); n != 1 {
		t.Fatalf("expired %d", n)
	}
	eventuallyRevoked(t, v, s.AccessToken)
}

func TestDenyListIsBoundedByTokenLifetime(t *testing.T) {
	e := newEnv(t)
	var now atomic.Int64
	now.Store(time.Now().UnixNano())
	clock := func() time.Time { return time.Unix(0, now.Load()) }
	v := e.verifier(verifier.Config{MaxTokenTTL: time.Hour, Now: clock, PruneInterval: 10 * time.Millisecond})
	ctx := context.Background()
	for i := 0; i < 5; i++ {
		s := e.issue("frank")
		if err := e.ledger.RevokeSession(ctx, s.SessionID); err != nil {
			t.Fatal(err)
		}
	}
	_ = e.ledger.RevokeUser(ctx, "frank")
	poll.Until(t, 5*time.Second, func() error {
		if s, u := v.DenyListSize(); s != 5 || u != 1 {
			return errors.New("revocations not all received")
		}
		return nil
	})
	now.Add(int64(time.Hour + time.Minute)) // every token they could have issued has expired
	poll.Until(t, 5*time.Second, func() error {
		if s, u := v.DenyListSize(); s != 0 || u != 0 {
			return errors.New("deny list not pruned")
		}
		return nil
	})
}

func TestVerifyRefuses(t *testing.T) {
	e := newEnv(t)
	v := e.verifier(verifier.Config{Leeway: 5 * time.Second})
	ctx := context.Background()
	live := e.issue("gina")
	claims := func(mut func(jwt.MapClaims)) jwt.MapClaims {
		c := jwt.MapClaims{"iss": issuer, "aud": audience, "sub": "gina", "sid": live.SessionID, "iat": time.Now().Unix(), "exp": time.Now().Add(time.Minute).Unix()}
		if mut != nil {
			mut(c)
		}
		return c
	}
	sign := func(method jwt.SigningMethod, key any, header map[string]any, c jwt.MapClaims) string {
		tok := jwt.NewWithClaims(method, c)
		tok.Header["typ"] = "at+jwt"
		tok.Header["kid"] = accesstoken.NewEd25519Key(signingKey).ID
		for k, val := range header {
			tok.Header[k] = val
		}
		s, err := tok.SignedString(key)
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	none, _ := jwt.NewWithClaims(jwt.SigningMethodNone, claims(nil)).SignedString(jwt.UnsafeAllowNoneSignatureType)
	_, other, _ := ed25519.GenerateKey(nil)
	if _, err := v.Verify(ctx, sign(jwt.SigningMethodEdDSA, signingKey, nil, claims(nil))); err != nil {
		t.Fatalf("control token refused: %v", err)
	}
	if _, err := v.Verify(ctx, sign(jwt.SigningMethodEdDSA, signingKey, nil, claims(func(c jwt.MapClaims) { c["exp"] = time.Now().Add(-4 * time.Second).Unix() }))); err != nil {
		t.Fatalf("expired within the leeway: %v", err)
	}
	for name, tok := range map[string]string{
		"alg none":                  none,
		"HS256 with the public key": sign(jwt.SigningMethodHS256, []byte(signingKey.Public().(ed25519.PublicKey)), nil, claims(nil)),
		"another key":               sign(jwt.SigningMethodEdDSA, other, nil, claims(nil)),
		"unknown kid":               sign(jwt.SigningMethodEdDSA, signingKey, map[string]any{"kid": "k2"}, claims(nil)),
		"path-like kid":             sign(jwt.SigningMethodEdDSA, signingKey, map[string]any{"kid": "../../etc/passwd"}, claims(nil)),
		"typ JWT":                   sign(jwt.SigningMethodEdDSA, signingKey, map[string]any{"typ": "JWT"}, claims(nil)),
		"wrong iss":                 sign(jwt.SigningMethodEdDSA, signingKey, nil, claims(func(c jwt.MapClaims) { c["iss"] = "https://evil" })),
		"wrong aud":                 sign(jwt.SigningMethodEdDSA, signingKey, nil, claims(func(c jwt.MapClaims) { c["aud"] = "other" })),
		"expired past the leeway":   sign(jwt.SigningMethodEdDSA, signingKey, nil, claims(func(c jwt.MapClaims) { c["exp"] = time.Now().Add(-6 * time.Second).Unix() })),
		"not yet valid":             sign(jwt.SigningMethodEdDSA, signingKey, nil, claims(func(c jwt.MapClaims) { c["nbf"] = time.Now().Add(time.Minute).Unix() })),
		"lives longer than allowed": sign(jwt.SigningMethodEdDSA, signingKey, nil, claims(func(c jwt.MapClaims) { c["exp"] = time.Now().Add(2 * time.Hour).Unix() })),
		"no sid":                    sign(jwt.SigningMethodEdDSA, signingKey, nil, claims(func(c jwt.MapClaims) { delete(c, "sid") })),
		"a refresh token":           live.RefreshToken,
		"garbage":                   "x.y.z",
	} {
		if _, err := v.Verify(ctx, tok); !errors.Is(err, verifier.ErrInvalid) {
			t.Errorf("%s: err %v, want ErrInvalid", name, err)
		}
	}
	// Unknown kids refetch the JWKS at most once per interval.
	hits := e.jwksHits.Load()
	for i := 0; i < 20; i++ {
		_, _ = v.Verify(ctx, sign(jwt.SigningMethodEdDSA, signingKey, map[string]any{"kid": "rotated-" + string(rune('a'+i))}, claims(nil)))
	}
	if got := e.jwksHits.Load() - hits; got > 1 {
		t.Fatalf("%d JWKS fetches for 20 unknown kids within the interval", got)
	}
}

func TestFeedOutage(t *testing.T) {
	e := newEnv(t)
	open := e.verifier(verifier.Config{})
	closed := e.verifier(verifier.Config{FailClosed: true})
	s := e.issue("hank")
	if open.Health() != nil || closed.Health() != nil {
		t.Fatal("unhealthy while connected")
	}
	e.srv.Stop()
	poll.Until(t, 5*time.Second, func() error {
		if open.Health() == nil {
			return errors.New("healthy while NATS is down")
		}
		return nil
	})
	if _, err := open.Verify(context.Background(), s.AccessToken); err != nil {
		t.Fatalf("fail-open verifier refused a valid token during the outage: %v", err)
	}
	if _, err := closed.Verify(context.Background(), s.AccessToken); !errors.Is(err, verifier.ErrFeedOffline) {
		t.Fatalf("fail-closed verifier during the outage: %v", err)
	}
}

func TestMiddleware(t *testing.T) {
	e := newEnv(t)
	v := e.verifier(verifier.Config{})
	s := e.issue("ivy")
	handler := v.Middleware(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c, ok := verifier.ClaimsFrom(r.Context())
		if !ok {
			t.Error("no claims in the context")
			return
		}
		_, _ = w.Write([]byte(c.Subject))
	}))
	ec := echo.New()
	ec.Use(echoverifier.Middleware(v))
	ec.GET("/", func(c echo.Context) error {
		claims, ok := echoverifier.Claims(c)
		if !ok {
			t.Error("no claims in the echo context")
		}
		return c.String(200, claims.Subject)
	})
	for name, h := range map[string]http.Handler{"net/http": handler, "echo": ec} {
		do := func(auth string) *httptest.ResponseRecorder {
			r := httptest.NewRequest("GET", "/", nil)
			if auth != "" {
				r.Header.Set("Authorization", auth)
			}
			w := httptest.NewRecorder()
			h.ServeHTTP(w, r)
			return w
		}
		if w := do("Bearer " + s.AccessToken); w.Code != 200 || w.Body.String() != "ivy" {
			t.Fatalf("%s: valid token: %d %q", name, w.Code, w.Body.String())
		}
		if w := do(""); w.Code != 401 || w.Header().Get("WWW-Authenticate") != `Bearer realm="api"` {
			t.Fatalf("%s: no token: %d %q", name, w.Code, w.Header().Get("WWW-Authenticate"))
		}
		if w := do("Bearer nonsense"); w.Code != 401 || !bytes.Contains([]byte(w.Header().Get("WWW-Authenticate")), []byte(`error="invalid_token"`)) {
			t.Fatalf("%s: bad token: %d %q", name, w.Code, w.Header().Get("WWW-Authenticate"))
		}
	}
	_ = e.ledger.RevokeSession(context.Background(), s.SessionID)
	eventuallyRevoked(t, v, s.AccessToken)
	r := httptest.NewRequest("GET", "/", nil)
	r.Header.Set("Authorization", "Bearer "+s.AccessToken)
	w := httptest.NewRecorder()
	handler.ServeHTTP(w, r)
	if w.Code != 401 || !bytes.Contains([]byte(w.Header().Get("WWW-Authenticate")), []byte(`error="invalid_token"`)) {
		t.Fatalf("revoked: %d %q", w.Code, w.Header().Get("WWW-Authenticate"))
	}
}
