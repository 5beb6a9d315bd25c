package transport

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"time"

	"github.com/labstack/echo/v4"
	"github.com/labstack/echo/v4/middleware"

	"github.com/sessionledger/sessionledger/domain"
	"github.com/sessionledger/sessionledger/ledger"
)

// Cookie mode: a browser app never holds a long-lived refresh token. Its
// backend hands the page a session's first refresh token, the page
// exchanges it at once (POST /browser/signin), and from then on the refresh
// token lives only in an httpOnly cookie that the ledger sets and reads
// (POST /browser/refresh, POST /browser/signout). Responses carry the access
// token only.
//
// CSRF defence, which holds even where SameSite does not: each request must
// come from a listed origin (the Origin header, which browsers set on every
// cross-origin request and on same-origin POSTs, and which a page cannot
// forge) and must be application/json, a request a cross-site form cannot
// send and a cross-origin fetch cannot send without a CORS preflight that
// only listed origins pass.

// RefreshCookiePrefix begins the name of the cookie that holds the refresh
// token in cookie mode. The __Host- prefix makes the browser refuse it
// unless it is Secure, has Path=/ and no Domain: a sibling subdomain cannot
// set or overwrite it.
const RefreshCookiePrefix = "__Host-sessionledger-refresh-"

// RefreshCookie is the name of the refresh cookie of pages of origin: one
// cookie per listed origin, so that a page of one (a blog with a script
// injected) cannot refresh or sign out the sessions signed in on another
// (the app), though the browser sends both cookies to the ledger.
func RefreshCookie(origin string) string {
	sum := sha256.Sum256([]byte(origin))
	return RefreshCookiePrefix + hex.EncodeToString(sum[:6])
}

// Browser paths (cookie mode).
const (
	BrowserSignInPath  = "/browser/signin"
	BrowserRefreshPath = "/browser/refresh"
	BrowserSignOutPath = "/browser/signout"
)

// ParseOrigins checks and normalizes the browser origins cookie mode
// allows: each exactly scheme://host[:port], as browsers send it in the
// Origin header (lower case, no default port, no path). https is required
// but for loopback hosts (localhost, 127.0.0.1, [::1]), where browsers
// treat http as a secure context.
func ParseOrigins(list []string) ([]string, error) {
	var out []string
	for _, raw := range list {
		raw = strings.TrimSpace(raw)
		if raw == "" {
			continue
		}
		o, err := parseOrigin(raw)
		if err != nil {
			return nil, fmt.Errorf("browser origin %q: %w", raw, err)
		}
		if !slices.Contains(out, o) {
			out = append(out, o)
		}
	}
	return out, nil
}

func parseOrigin(raw string) (string, error) {
	u, err := url.Parse(raw)
	switch {
	case err != nil:
		return "", errors.New("is not a URL")
	case u.Scheme != "http" && u.Scheme != "https":
		return "", errors.New("must be an http or https origin, scheme://host[:port]")
	case u.Host == "" || u.User != nil || (u.Path != "" && u.Path != "/") || u.RawQuery != "" || u.Fragment != "" || u.Opaque != "":
		return "", errors.New("must be exactly scheme://host[:port], with no path, query or credentials")
	}
	host, port := strings.ToLower(u.Hostname()), u.Port()
	if (u.Scheme == "http" && port == "80") || (u.Scheme == "https" && port == "443") {
		port = ""
	}
	if u.Scheme == "http" && !isLoopbackHost(host) {
		return "", errors.New("must be https (http only for localhost, 127.0.0.1 or [::1]): the refresh cookie is Secure")
	}
	if strings.Contains(host, ":") {
		host = "[" + host + "]"
	}
	if port != "" {
		host += ":" + port
	}
	return u.Scheme + "://" + host, nil
}

// isLoopbackHost reports whether host (no port, no brackets) is localhost
// or a loopback address, where browsers treat plain http as secure.
func isLoopbackHost(host string) bool {
	if strings.EqualFold(host, "localhost") || strings.HasSuffix(strings.ToLower(host), ".localhost") {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// CheckCookieIssuer refuses cookie mode behind an issuer a browser would
// not keep a Secure cookie for: plain http on a host other than loopback.
func CheckCookieIssuer(issuer string) error {
	u, err := url.Parse(issuer)
	if err != nil {
		return fmt.Errorf("issuer: %w", err)
	}
	if u.Scheme == "https" || (u.Scheme == "http" && isLoopbackHost(u.Hostname())) {
		return nil
	}
	return fmt.Errorf("cookie mode (--browser-origins) needs an https issuer (or http on localhost): browsers keep the Secure refresh cookie only there, and %q is neither", issuer)
}

// allowedOrigin reports whether origin is one cookie mode allows.
func (s *Server) allowedOrigin(origin string) bool {
	return origin != "" && slices.Contains(s.cfg.BrowserOrigins, origin)
}

// corsMiddleware answers CORS for the listed origins on the paths browser
// apps call: with credentials on the cookie endpoints, without on the
// others (a bearer token in a header needs no cookie).
func (s *Server) corsMiddleware() []echo.MiddlewareFunc {
	allow := func(origin string) (bool, error) { return s.allowedOrigin(origin), nil }
	isCookiePath := func(c echo.Context) bool { return strings.HasPrefix(c.Request().URL.Path, "/browser/") }
	isBearerPath := func(c echo.Context) bool {
		p := c.Request().URL.Path
		return p == "/oauth2/token" || p == "/oauth2/revoke" || p == "/.well-known/jwks.json" ||
			p == "/.well-known/oauth-authorization-server" || p == MeSessionsPath || strings.HasPrefix(p, MeSessionsPath+"/")
	}
	return []echo.MiddlewareFunc{
		middleware.CORSWithConfig(middleware.CORSConfig{
			Skipper:          func(c echo.Context) bool { return !isCookiePath(c) },
			AllowOriginFunc:  allow,
			AllowMethods:     []string{http.MethodPost},
			AllowHeaders:     []string{echo.HeaderContentType},
			AllowCredentials: true,
			MaxAge:           600,
		}),
		middleware.CORSWithConfig(middleware.CORSConfig{
			Skipper:         func(c echo.Context) bool { return !isBearerPath(c) },
			AllowOriginFunc: allow,
			AllowMethods:    []string{http.MethodGet, http.MethodPost, http.MethodDelete},
			AllowHeaders:    []string{echo.HeaderAuthorization, echo.HeaderContentType},
			ExposeHeaders:   []string{"WWW-Authenticate", "Retry-After"},
			MaxAge:          600,
		}),
	}
}

// browserRoutes are cookie mode's endpoints.
func (s *Server) browserRoutes(e *echo.Echo) {
	e.POST(BrowserSignInPath, s.browserSignIn, s.requireBrowserRequest, s.limit, s.requireReady)
	e.POST(BrowserRefreshPath, s.browserRefresh, s.requireBrowserRequest, s.limit, s.requireReady)
	e.POST(BrowserSignOutPath, s.browserSignOut, s.requireBrowserRequest, s.limit, s.requireReady)
}

// requireBrowserRequest is the CSRF defence: a listed Origin and a JSON
// body, no query.
func (s *Server) requireBrowserRequest(next echo.HandlerFunc) echo.HandlerFunc {
	return func(c echo.Context) error {
		r := c.Request()
		switch {
		case !s.allowedOrigin(r.Header.Get(echo.HeaderOrigin)):
			return writeOAuthError(c, http.StatusForbidden, "invalid_request", "the request's Origin is missing or not one of the ledger's --browser-origins")
		case !isMediaType(r, echo.MIMEApplicationJSON):
			return writeOAuthError(c, http.StatusUnsupportedMediaType, "invalid_request", "the body must be application/json")
		case r.URL.RawQuery != "":
			return writeOAuthError(c, http.StatusBadRequest, "invalid_request", "parameters must be sent in the request body, not the URL")
		}
		return next(c)
	}
}

// browserBody reads a cookie-mode request's JSON object into v. An empty
// body reads as {}.
func browserBody(c echo.Context, v any) error {
	body, err := io.ReadAll(c.Request().Body)
	if err != nil {
		var he *echo.HTTPError
		if errors.As(err, &he) && he.Code == http.StatusRequestEntityTooLarge {
			return &errBadForm{http.StatusRequestEntityTooLarge, "the request body is too large"}
		}
		return &errBadForm{http.StatusBadRequest, "the body could not be read"}
	}
	if len(bytes.TrimSpace(body)) == 0 {
		return nil
	}
	if err := checkJSONText(body); err != nil {
		return &errBadForm{http.StatusBadRequest, err.Error()}
	}
	if err := checkMembers(body); err != nil {
		return &errBadForm{http.StatusBadRequest, err.Error()}
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return &errBadForm{http.StatusBadRequest, jsonProblem(err)}
	}
	if dec.More() {
		return &errBadForm{http.StatusBadRequest, "the body must hold one JSON object"}
	}
	return nil
}

// browserTokenResponse is what the page gets: the access token only.
type browserTokenResponse struct {
	AccessToken string `json:"access_token"`
	TokenType   string `json:"token_type"`
	ExpiresIn   int64  `json:"expires_in"`
	SessionID   string `json:"session_id"`
}

// browserSignIn is POST /browser/signin {"refresh_token"}: exchanges the
// session's first refresh token for an access token and the refresh cookie.
// The page held that token, so the exchange rotates twice: the token handed
// over is then two rotations behind the cookie's, and a replay of it is
// reuse even within --reuse-grace, where a tolerated retry would have
// answered with the cookie's token in the body. A cookie of another
// session, signed in before in this browser, is signed out.
func (s *Server) browserSignIn(c echo.Context) error {
	var body struct {
		RefreshToken string `json:"refresh_token"`
	}
	if err := browserBody(c, &body); err != nil {
		return formError(c, err)
	}
	rt, err := formToken(url.Values{"refresh_token": {body.RefreshToken}}, "refresh_token")
	if err != nil {
		return formError(c, err)
	}
	var previous string
	if ck, err := c.Cookie(RefreshCookie(c.Request().Header.Get(echo.HeaderOrigin))); err == nil {
		previous = ck.Value
	}
	pair, err := s.refresh(c, rt)
	if err == nil {
		pair, err = s.refresh(c, pair.RefreshToken)
	}
	if err != nil {
		return s.browserRefused(c, err)
	}
	if previous != "" {
		if t, err := domain.ParseRefreshToken(previous); err == nil && t.SessionID != pair.SessionID {
			if err := s.ledger.SignOut(s.ctx(c), previous); err != nil {
				s.logFailure(c, "http: sign-out of the browser's previous session failed", err)
			}
		}
	}
	return s.browserTokens(c, pair)
}

// browserRefresh is POST /browser/refresh: rotates the cookie's refresh
// token.
func (s *Server) browserRefresh(c echo.Context) error {
	var body struct{}
	if err := browserBody(c, &body); err != nil {
		return formError(c, err)
	}
	ck, err := c.Cookie(RefreshCookie(c.Request().Header.Get(echo.HeaderOrigin)))
	if err != nil || ck.Value == "" {
		return writeOAuthError(c, http.StatusBadRequest, "invalid_grant", "no session cookie: sign in first")
	}
	pair, err := s.refresh(c, ck.Value)
	if err != nil {
		return s.browserRefused(c, err)
	}
	return s.browserTokens(c, pair)
}

// browserRefused answers a refused exchange; a refused token clears the
// cookie.
func (s *Server) browserRefused(c echo.Context, err error) error {
	a := lookup(err)
	if oauthStatus(a) == http.StatusBadRequest {
		s.clearRefreshCookie(c)
	}
	return writeOAuthError(c, oauthStatus(a), a.oauth, a.title)
}

// browserTokens sets the cookie to pair's refresh token and answers with
// the access token.
func (s *Server) browserTokens(c echo.Context, pair ledger.TokenPair) error {
	maxAge := int(time.Until(pair.RefreshTokenExpiresAt) / time.Second)
	c.SetCookie(&http.Cookie{
		Name: RefreshCookie(c.Request().Header.Get(echo.HeaderOrigin)), Value: pair.RefreshToken, Path: "/", MaxAge: max(maxAge, 1),
		Secure: true, HttpOnly: true, SameSite: http.SameSiteStrictMode,
	})
	c.Response().Header().Set("Cache-Control", "no-store")
	c.Response().Header().Set("Pragma", "no-cache")
	return c.JSON(http.StatusOK, browserTokenResponse{
		AccessToken: pair.AccessToken, TokenType: "Bearer", ExpiresIn: pair.ExpiresIn, SessionID: pair.SessionID,
	})
}

// browserSignOut is POST /browser/signout: revokes the cookie's session and
// clears the cookie. Without a cookie (or with one of an ended session) it
// only clears it.
func (s *Server) browserSignOut(c echo.Context) error {
	var body struct{}
	if err := browserBody(c, &body); err != nil {
		return formError(c, err)
	}
	if ck, err := c.Cookie(RefreshCookie(c.Request().Header.Get(echo.HeaderOrigin))); err == nil && ck.Value != "" {
		if err := s.ledger.SignOut(s.ctx(c), ck.Value); err != nil {
			a := lookup(err)
			s.logFailure(c, "http: sign-out failed", err)
			return writeOAuthError(c, a.status, a.oauth, a.title)
		}
	}
	s.clearRefreshCookie(c)
	c.Response().Header().Set("Cache-Control", "no-store")
	return c.NoContent(http.StatusNoContent)
}

func (s *Server) clearRefreshCookie(c echo.Context) {
	c.SetCookie(&http.Cookie{
		Name: RefreshCookie(c.Request().Header.Get(echo.HeaderOrigin)), Value: "", Path: "/", MaxAge: -1,
		Secure: true, HttpOnly: true, SameSite: http.SameSiteStrictMode,
	})
}
