// Package transport is the ledger's HTTP API (echo): the OAuth2 token,
// revocation and introspection endpoints, the JWKS and metadata, the admin API
// and the operations endpoints. It is the only package that imports echo.
package transport

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"mime"
	"net"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/labstack/echo/v4"
	"github.com/labstack/echo/v4/middleware"
	"golang.org/x/time/rate"

	"github.com/sessionledger/sessionledger/accesstoken"
	"github.com/sessionledger/sessionledger/domain"
	"github.com/sessionledger/sessionledger/integrity"
	"github.com/sessionledger/sessionledger/ledger"
	"github.com/sessionledger/sessionledger/metrics"
	"github.com/sessionledger/sessionledger/secrets"
	"github.com/sessionledger/sessionledger/transmit"
)

// DefaultMaxBodyBytes bounds request bodies.
const DefaultMaxBodyBytes = 64 << 10

// Config configures the HTTP API.
type Config struct {
	// AdminTokens are the tokens that open the admin API (required), read
	// on each use so that one removed is refused at once.
	AdminTokens  *secrets.AdminTokenSource
	Issuer       string
	Logger       *slog.Logger
	Ready        func() error // nil error: the projection has caught up with the stream
	MaxBodyBytes int64
	// RateLimit, when above 0, limits /oauth2/token, /oauth2/revoke,
	// /browser/* and /v1/me/* together to this many requests per second per
	// client address (with RateBurst), in this instance. Off by default:
	// apps behind one proxy address would otherwise share one budget.
	RateLimit float64
	RateBurst int
	// TrustedProxyHeader names the header holding the client address set by
	// a trusted proxy (X-Forwarded-For: its last entry); empty: the peer address.
	TrustedProxyHeader string
	// Metrics, when set, records requests and refresh outcomes and is served at /metrics.
	Metrics *metrics.Metrics
	// CheckpointKeys returns the public keys that verify the stream's
	// checkpoints (every generation), served at CheckpointKeysPath for
	// auditors; nil: none.
	CheckpointKeys func() integrity.PublicKeys
	// JWKSMaxAge is the Cache-Control max-age of the JWKS: at most the time
	// a new signing key is published before it signs (keyring.JWKSMaxAge);
	// default 5 minutes.
	JWKSMaxAge time.Duration
	// Keys, when set, serves GET /v1/keys and POST /v1/keys/{kind}/rotate.
	Keys KeyManager
	// IntrospectionClients are the resource servers that may introspect
	// tokens with HTTP Basic authentication (client_secret_basic); nil: none.
	IntrospectionClients *secrets.ClientsSource
	// SeparateAdmin serves the admin API and /metrics on AdminHandler only,
	// so that Handler can face the internet alone: there, introspection
	// takes introspection clients and not the admin token.
	SeparateAdmin bool
	// BrowserOrigins, when not empty, turns cookie mode on (browser.go):
	// the origins (ParseOrigins) whose pages may sign in, refresh and sign
	// out with the refresh cookie, and call the API with CORS.
	BrowserOrigins []string
	// Transmitter, when set, serves the SSF transmitter's endpoints
	// (receivers' tokens or the admin token) and the admin API of
	// webhooks, SSF receivers and deliveries.
	Transmitter *transmit.Transmitter
}

// CheckpointKeysPath is where the checkpoint keys are served (a JWK Set).
const CheckpointKeysPath = "/.well-known/ledger-checkpoint-keys.json"

// Server is the HTTP API.
type Server struct {
	e        *echo.Echo
	admin    *echo.Echo // the admin listener's, when Config.SeparateAdmin
	ledger   *ledger.Ledger
	signer   *accesstoken.Signer
	log      *slog.Logger
	cfg      Config
	metadata []byte
	// limit is the one per-address rate limiter of the endpoints anyone may
	// call with a token: /oauth2/token and /revoke, /browser/*, /v1/me/*.
	limit echo.MiddlewareFunc
}

// New returns the HTTP API for l.
func New(l *ledger.Ledger, signer *accesstoken.Signer, cfg Config) (*Server, error) {
	if cfg.AdminTokens == nil {
		// Tokens are checked where they are read (secrets.ValidateAdminToken).
		return nil, errors.New("transport: the admin tokens are required")
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.MaxBodyBytes <= 0 {
		cfg.MaxBodyBytes = DefaultMaxBodyBytes
	}
	if cfg.JWKSMaxAge <= 0 {
		cfg.JWKSMaxAge = 5 * time.Minute
	}
	if cfg.Ready == nil {
		cfg.Ready = func() error { return nil }
	}
	var err error
	if cfg.BrowserOrigins, err = ParseOrigins(cfg.BrowserOrigins); err != nil {
		return nil, err
	}
	if len(cfg.BrowserOrigins) > 0 {
		if err := CheckCookieIssuer(cfg.Issuer); err != nil {
			return nil, err
		}
	}
	s := &Server{ledger: l, signer: signer, log: cfg.Logger, cfg: cfg}
	s.limit = s.rateLimiter()
	if s.metadata, err = json.Marshal(metadata(strings.TrimRight(cfg.Issuer, "/"), cfg.Transmitter != nil)); err != nil {
		return nil, err
	}

	s.e = s.newEcho()
	if len(cfg.BrowserOrigins) > 0 {
		s.e.Use(s.corsMiddleware()...)
	}
	s.publicRoutes(s.e)
	if cfg.SeparateAdmin {
		s.admin = s.newEcho()
		s.admin.GET("/healthz", s.healthz)
		s.admin.GET("/readyz", s.readyzWithReason)
		s.adminRoutes(s.admin)
		s.admin.POST("/oauth2/introspect", s.introspect, s.requireIntrospector(true), s.requireReady)
	} else {
		s.adminRoutes(s.e)
	}
	return s, nil
}

// newEcho returns an echo instance with the middleware every listener has.
func (s *Server) newEcho() *echo.Echo {
	e := echo.New()
	e.HideBanner, e.HidePort = true, true
	e.HTTPErrorHandler = s.handleError
	e.Use(middleware.RequestID())
	e.Use(s.deadline)
	e.Use(s.accessLog)
	e.Use(middleware.RecoverWithConfig(middleware.RecoverConfig{
		DisableErrorHandler: true,
		LogErrorFunc: func(c echo.Context, err error, stack []byte) error {
			s.log.Error("http: panic", "route", c.Path(), "err", err, "stack", string(stack))
			return err
		},
	}))
	e.Use(middleware.BodyLimitWithConfig(middleware.BodyLimitConfig{Limit: bytesLimit(s.cfg.MaxBodyBytes)}))
	return e
}

// publicRoutes are what clients, verifiers and resource servers call: the
// OAuth endpoints, the published keys and metadata, and health.
func (s *Server) publicRoutes(e *echo.Echo) {
	e.GET("/healthz", s.healthz)
	if s.cfg.SeparateAdmin {
		e.GET("/readyz", s.readyz) // the reason is for operators, on the admin port
	} else {
		e.GET("/readyz", s.readyzWithReason)
	}
	e.GET("/.well-known/jwks.json", s.jwks)
	e.GET(CheckpointKeysPath, s.checkpointKeys)
	e.GET("/.well-known/oauth-authorization-server", s.serverMetadata)
	e.POST("/oauth2/token", s.token, s.limit, s.requireReady)
	e.POST("/oauth2/revoke", s.revoke, s.limit, s.requireReady)
	// With a separate admin listener, the admin token is not taken here.
	e.POST("/oauth2/introspect", s.introspect, s.requireIntrospector(!s.cfg.SeparateAdmin), s.requireReady)
	s.meRoutes(e)
	if s.cfg.Transmitter != nil {
		s.ssfRoutes(e)
	}
	if len(s.cfg.BrowserOrigins) > 0 {
		s.browserRoutes(e)
	}
}

// adminRoutes are the admin API and the metrics.
func (s *Server) adminRoutes(e *echo.Echo) {
	if s.cfg.Metrics != nil {
		e.GET("/metrics", echo.WrapHandler(s.cfg.Metrics.Handler()))
	}
	admin := e.Group("/v1", s.requireAdmin, s.requireReady)
	admin.POST("/sessions", s.issue)
	admin.DELETE("/sessions/:session_id", s.revokeSession)
	admin.GET("/sessions/:session_id/events", s.sessionEvents)
	admin.GET("/users/:user_id/sessions", s.listSessions)
	admin.DELETE("/users/:user_id/sessions", s.revokeUser)
	admin.POST("/users/:user_id/deactivate", s.deactivate)
	admin.POST("/users/:user_id/reactivate", s.reactivate)
	if s.cfg.Keys != nil {
		admin.GET("/keys", s.listKeys)
		admin.POST("/keys/:kind/rotate", s.rotateKey)
	}
	if s.cfg.Transmitter != nil {
		s.transmitAdminRoutes(admin)
	}
}

// Handler returns the API as an http.Handler: all of it, or, with
// Config.SeparateAdmin, the public part.
func (s *Server) Handler() http.Handler { return s.e }

// AdminHandler returns the admin API and /metrics (with introspection and
// health) when Config.SeparateAdmin is set; nil otherwise.
func (s *Server) AdminHandler() http.Handler {
	if s.admin == nil {
		return nil
	}
	return s.admin
}

// Routes lists the registered method and path pairs of every listener,
// each once.
func (s *Server) Routes() []string {
	var out []string
	for _, e := range []*echo.Echo{s.e, s.admin} {
		if e == nil {
			continue
		}
		for _, r := range e.Routes() {
			if route := r.Method + " " + r.Path; !slices.Contains(out, route) {
				out = append(out, route)
			}
		}
	}
	return out
}

// deadline gives each request its one budget from the moment it arrives,
// shared by everything the ledger does for it (ledger.Config.RequestTimeout).
// The ledger answers 503 with Retry-After, never a late success, when the
// budget runs out; a client that goes away ends the request's context early.
func (s *Server) deadline(next echo.HandlerFunc) echo.HandlerFunc {
	return func(c echo.Context) error {
		budget := s.ledger.RequestTimeout()
		if strings.HasPrefix(c.Request().URL.Path, transmit.PollPath) {
			budget += transmit.MaxLongPoll // a long poll waits up to that for a SET
		}
		ctx, cancel := context.WithTimeout(c.Request().Context(), budget)
		defer cancel()
		c.SetRequest(c.Request().WithContext(ctx))
		return next(c)
	}
}

// bytesLimit formats n for echo's body-limit middleware.
func bytesLimit(n int64) string { return strconv.FormatInt(n, 10) + "B" }

// accessLog logs one line per request with the route pattern, never the raw
// path or query (they may carry user ids or tokens) and never a header value.
func (s *Server) accessLog(next echo.HandlerFunc) echo.HandlerFunc {
	return func(c echo.Context) error {
		start := time.Now()
		err := next(c)
		if err != nil {
			c.Error(err)
		}
		d := time.Since(start)
		attrs := []any{
			"request_id", c.Response().Header().Get(echo.HeaderXRequestID),
			"method", c.Request().Method,
			"route", c.Path(),
			"status", c.Response().Status,
			"duration_ms", float64(d.Microseconds()) / 1000,
		}
		if name, ok := c.Get(adminTokenKey).(string); ok {
			attrs = append(attrs, "admin_token_name", name) // never the token
		}
		s.log.Info("http", attrs...)
		if s.cfg.Metrics != nil {
			s.cfg.Metrics.HTTPRequest(c.Path(), c.Request().Method, c.Response().Status, d)
		}
		return nil
	}
}

// handleError answers errors that reach echo: routing errors, body limits,
// and anything a handler returned without answering.
func (s *Server) handleError(err error, c echo.Context) {
	if c.Response().Committed {
		return
	}
	var he *echo.HTTPError
	if errors.As(err, &he) {
		title := http.StatusText(he.Code)
		if strings.HasPrefix(c.Path(), "/oauth2/") || strings.HasPrefix(c.Request().URL.Path, "/oauth2/") {
			_ = writeOAuthError(c, he.Code, "invalid_request", title)
			return
		}
		_ = writeProblem(c, he.Code, title, "")
		return
	}
	a := lookup(err)
	if a.status >= 500 {
		s.logFailure(c, "http: request failed", err)
	}
	_ = writeProblem(c, a.status, a.title, detail(err, a))
}

// logFailure logs a request the ledger could not answer. A client that went
// away before the answer is not the ledger's failure: that is logged at
// debug level, so the error log keeps to what an operator must look at.
func (s *Server) logFailure(c echo.Context, msg string, err error) {
	if errors.Is(c.Request().Context().Err(), context.Canceled) {
		s.log.Debug(msg, "route", c.Path(), "err", err, "cause", "the client went away")
		return
	}
	s.log.Error(msg, "route", c.Path(), "err", err)
}

// requireAdmin checks "Authorization: Bearer <admin token>" (the scheme in
// any case) in constant time, and gives handlers the token's name
// (adminTokenKey).
func (s *Server) requireAdmin(next echo.HandlerFunc) echo.HandlerFunc {
	return func(c echo.Context) error {
		token, ok := accesstoken.BearerToken(c.Request().Header.Get(echo.HeaderAuthorization))
		if ok && s.isAdminToken(c, token) {
			return next(c)
		}
		c.Response().Header().Set("WWW-Authenticate", `Bearer realm="sessionledger admin"`)
		return writeProblem(c, http.StatusUnauthorized, "Unauthorized", "an admin bearer token is required")
	}
}

// rateLimiter limits requests per client address when configured.
func (s *Server) rateLimiter() echo.MiddlewareFunc {
	if s.cfg.RateLimit <= 0 {
		return func(next echo.HandlerFunc) echo.HandlerFunc { return next }
	}
	burst := s.cfg.RateBurst
	if burst < 1 {
		burst = max(1, int(math.Ceil(s.cfg.RateLimit)))
	}
	retryAfter := strconv.Itoa(int(math.Ceil(1 / s.cfg.RateLimit)))
	return middleware.RateLimiterWithConfig(middleware.RateLimiterConfig{
		Store: middleware.NewRateLimiterMemoryStoreWithConfig(middleware.RateLimiterMemoryStoreConfig{
			Rate: rate.Limit(s.cfg.RateLimit), Burst: burst, ExpiresIn: 3 * time.Minute,
		}),
		IdentifierExtractor: func(c echo.Context) (string, error) { return s.clientAddress(c.Request()), nil },
		DenyHandler: func(c echo.Context, _ string, _ error) error {
			c.Response().Header().Set("Retry-After", retryAfter)
			return writeOAuthError(c, http.StatusTooManyRequests, "temporarily_unavailable", "too many requests from this address; retry later")
		},
		ErrorHandler: func(c echo.Context, _ error) error {
			return writeOAuthError(c, http.StatusBadRequest, "invalid_request", "the client address could not be determined")
		},
	})
}

// clientAddress is the address a request comes from: the trusted proxy's
// header when configured and present, the peer's IP otherwise.
func (s *Server) clientAddress(r *http.Request) string {
	if h := s.cfg.TrustedProxyHeader; h != "" {
		if v := strings.TrimSpace(r.Header.Get(h)); v != "" {
			if strings.EqualFold(h, "X-Forwarded-For") {
				// The trusted proxy appended the address it saw last.
				parts := strings.Split(v, ",")
				v = strings.TrimSpace(parts[len(parts)-1])
			}
			return v
		}
	}
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		return r.RemoteAddr
	}
	return host
}

// requireReady answers 503 until the projection has caught up with the stream
// (an answer from a half-replayed projection could wrongly refuse a token),
// and for good once it has stopped.
func (s *Server) requireReady(next echo.HandlerFunc) echo.HandlerFunc {
	return func(c echo.Context) error {
		if err := s.cfg.Ready(); err != nil {
			why := "the ledger is starting"
			switch {
			case errors.Is(err, domain.ErrHistoryLost):
				why = "the ledger has stopped: its stream lost history it had applied (deleted, replaced or truncated); an operator must act"
			case errors.Is(err, domain.ErrProjectionFailed):
				why = "the ledger has stopped: its projection met an event it cannot read; an operator must act"
			}
			if strings.HasPrefix(c.Path(), "/oauth2/") {
				return writeOAuthError(c, http.StatusServiceUnavailable, "temporarily_unavailable", why)
			}
			return writeProblem(c, http.StatusServiceUnavailable, "Service Unavailable", why)
		}
		return next(c)
	}
}

func (s *Server) healthz(c echo.Context) error {
	return c.JSON(http.StatusOK, map[string]string{"status": "ok"})
}

// readyzWithReason answers /readyz with the reason the ledger is not ready,
// for operators.
func (s *Server) readyzWithReason(c echo.Context) error {
	if err := s.cfg.Ready(); err != nil {
		return c.JSON(http.StatusServiceUnavailable, map[string]string{"status": "not ready", "reason": err.Error()})
	}
	return c.JSON(http.StatusOK, map[string]string{"status": "ready"})
}

// readyz answers /readyz without the reason, on a public listener beside an
// admin one.
func (s *Server) readyz(c echo.Context) error {
	if err := s.cfg.Ready(); err != nil {
		return c.JSON(http.StatusServiceUnavailable, map[string]string{"status": "not ready"})
	}
	return c.JSON(http.StatusOK, map[string]string{"status": "ready"})
}

func (s *Server) jwks(c echo.Context) error {
	c.Response().Header().Set("Cache-Control", fmt.Sprintf("public, max-age=%d", int64(s.cfg.JWKSMaxAge/time.Second)))
	return c.Blob(http.StatusOK, "application/jwk-set+json", s.signer.JWKS())
}

func (s *Server) checkpointKeys(c echo.Context) error {
	var keys integrity.PublicKeys
	if s.cfg.CheckpointKeys != nil {
		keys = s.cfg.CheckpointKeys()
	}
	if len(keys) == 0 {
		return writeProblem(c, http.StatusNotFound, "No checkpoint keys", "this ledger signs no checkpoints")
	}
	b, err := json.Marshal(keys)
	if err != nil {
		return err
	}
	c.Response().Header().Set("Cache-Control", "public, max-age=300")
	return c.Blob(http.StatusOK, "application/jwk-set+json", b)
}

func metadata(issuer string, receivers bool) map[string]any {
	m := map[string]any{
		"issuer":                                        issuer,
		"token_endpoint":                                issuer + "/oauth2/token",
		"revocation_endpoint":                           issuer + "/oauth2/revoke",
		"introspection_endpoint":                        issuer + "/oauth2/introspect",
		"jwks_uri":                                      issuer + "/.well-known/jwks.json",
		"grant_types_supported":                         []string{"refresh_token"},
		"response_types_supported":                      []string{},
		"token_endpoint_auth_methods_supported":         []string{"none"},
		"revocation_endpoint_auth_methods_supported":    []string{"none"},
		"introspection_endpoint_auth_methods_supported": []string{"client_secret_basic"},
	}
	if receivers {
		// SSF receivers are confidential clients of the token endpoint.
		m["grant_types_supported"] = []string{"refresh_token", "client_credentials"}
		m["token_endpoint_auth_methods_supported"] = []string{"none", "client_secret_basic", "client_secret_post"}
		m["scopes_supported"] = []string{transmit.ScopeManage, transmit.ScopeRead}
	}
	return m
}

func (s *Server) serverMetadata(c echo.Context) error {
	return c.JSONBlob(http.StatusOK, s.metadata)
}

// encodeJSON writes v as the body of an already started response.
func encodeJSON(c echo.Context, v any) error {
	return json.NewEncoder(c.Response()).Encode(v)
}

// pathParam returns a path parameter, unescaped exactly once: echo matches on
// the escaped path when the request's path had escapes Go would not produce.
func pathParam(c echo.Context, name string) (string, error) {
	v := c.Param(name)
	if c.Request().URL.RawPath == "" {
		return v, nil
	}
	return url.PathUnescape(v)
}

// isMediaType reports whether the request's Content-Type is want.
func isMediaType(r *http.Request, want string) bool {
	mt, _, err := mime.ParseMediaType(r.Header.Get(echo.HeaderContentType))
	return err == nil && mt == want
}

func (s *Server) ctx(c echo.Context) context.Context { return c.Request().Context() }
