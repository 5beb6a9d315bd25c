package transport

import (
	"errors"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/labstack/echo/v4"

	"github.com/sessionledger/sessionledger/domain"
	"github.com/sessionledger/sessionledger/ledger"
	"github.com/sessionledger/sessionledger/transmit"
)

// errBadForm carries an invalid_request description; it never holds a
// parameter's value.
type errBadForm struct {
	status      int
	description string
}

func (e *errBadForm) Error() string { return e.description }

// readForm reads an application/x-www-form-urlencoded body. Parameters in the
// URL query are refused, because URLs end up in logs; a repeated parameter is
// refused (RFC 6749 §3.2).
func readForm(c echo.Context) (url.Values, error) {
	r := c.Request()
	if r.URL.RawQuery != "" {
		return nil, &errBadForm{http.StatusBadRequest, "parameters must be sent in the request body, not the URL"}
	}
	if !isMediaType(r, echo.MIMEApplicationForm) {
		return nil, &errBadForm{http.StatusBadRequest, "the body must be application/x-www-form-urlencoded"}
	}
	if err := r.ParseForm(); err != nil {
		var he *echo.HTTPError
		if errors.As(err, &he) && he.Code == http.StatusRequestEntityTooLarge {
			return nil, &errBadForm{http.StatusRequestEntityTooLarge, "the request body is too large"}
		}
		return nil, &errBadForm{http.StatusBadRequest, "the body is not a valid form"}
	}
	for _, values := range r.PostForm {
		if len(values) > 1 {
			// The name is the client's input: not echoed.
			return nil, &errBadForm{http.StatusBadRequest, "a parameter is repeated"}
		}
	}
	return r.PostForm, nil
}

// tokenParam reads the form parameter "token" of the revocation and
// introspection endpoints.
func tokenParam(c echo.Context) (string, error) {
	form, err := readForm(c)
	if err != nil {
		return "", err
	}
	return formToken(form, "token")
}

// formToken reads a form parameter holding a token: required, and exactly
// the token (tokenWhitespace).
func formToken(form url.Values, name string) (string, error) {
	tok := form.Get(name)
	switch {
	case tok == "":
		return "", &errBadForm{http.StatusBadRequest, name + " is required"}
	case tokenWhitespace(tok):
		return "", &errBadForm{http.StatusBadRequest, name + " has leading or trailing whitespace; send the token exactly as it was issued"}
	}
	return tok, nil
}

func formError(c echo.Context, err error) error {
	var bf *errBadForm
	if errors.As(err, &bf) {
		return writeOAuthError(c, bf.status, "invalid_request", bf.description)
	}
	return writeOAuthError(c, http.StatusBadRequest, "invalid_request", "bad request")
}

type tokenResponse struct {
	AccessToken           string `json:"access_token"`
	TokenType             string `json:"token_type"`
	ExpiresIn             int64  `json:"expires_in"`
	RefreshToken          string `json:"refresh_token"`
	RefreshTokenExpiresAt string `json:"refresh_token_expires_at"`
	SessionID             string `json:"session_id"`
}

func newTokenResponse(p ledger.TokenPair) tokenResponse {
	return tokenResponse{
		AccessToken: p.AccessToken, TokenType: "Bearer", ExpiresIn: p.ExpiresIn,
		RefreshToken: p.RefreshToken, SessionID: p.SessionID,
		RefreshTokenExpiresAt: p.RefreshTokenExpiresAt.UTC().Format(timeFormat),
	}
}

// token is POST /oauth2/token: grant_type=refresh_token (RFC 6749 §6). Client
// credentials, if a client library sends them, are ignored: refresh tokens
// belong to public clients and are themselves the credential. SSF receivers
// use grant_type=client_credentials (receiverToken).
func (s *Server) token(c echo.Context) error {
	form, err := readForm(c)
	if err != nil {
		return formError(c, err)
	}
	switch gt := form.Get("grant_type"); gt {
	case "":
		return writeOAuthError(c, http.StatusBadRequest, "invalid_request", "grant_type is required")
	case "refresh_token":
	case "client_credentials":
		if s.cfg.Transmitter != nil {
			return s.receiverToken(c, form)
		}
		fallthrough
	default:
		return writeOAuthError(c, http.StatusBadRequest, "unsupported_grant_type", "only grant_type=refresh_token is supported, and client_credentials for SSF receivers")
	}
	rt, err := formToken(form, "refresh_token")
	if err != nil {
		return formError(c, err)
	}
	pair, err := s.refresh(c, rt)
	if err != nil {
		a := lookup(err)
		return writeOAuthError(c, oauthStatus(a), a.oauth, a.title)
	}
	c.Response().Header().Set("Cache-Control", "no-store")
	c.Response().Header().Set("Pragma", "no-cache")
	return c.JSON(http.StatusOK, newTokenResponse(pair))
}

// oauthStatus is the status of an OAuth error: every grant problem is a 400 (RFC 6749 §5.2).
func oauthStatus(a apiError) int {
	if a.oauth == "invalid_grant" {
		return http.StatusBadRequest
	}
	return a.status
}

// revoke is POST /oauth2/revoke (RFC 7009): signs the token's session out.
// It answers 200 for an unknown or invalid token as well.
func (s *Server) revoke(c echo.Context) error {
	tok, err := tokenParam(c)
	if err != nil {
		return formError(c, err)
	}
	if err := s.ledger.SignOut(s.ctx(c), tok); err != nil {
		a := lookup(err)
		s.logFailure(c, "http: sign-out failed", err)
		return writeOAuthError(c, a.status, a.oauth, a.title)
	}
	c.Response().Header().Set("Cache-Control", "no-store")
	return c.NoContent(http.StatusOK)
}

type introspection struct {
	Active    bool   `json:"active"`
	TokenType string `json:"token_type,omitempty"`
	Subject   string `json:"sub,omitempty"`
	SessionID string `json:"sid,omitempty"`
	ClientID  string `json:"client_id,omitempty"`
	JTI       string `json:"jti,omitempty"`
	IssuedAt  int64  `json:"iat,omitempty"`
	ExpiresAt int64  `json:"exp,omitempty"`
	Issuer    string `json:"iss,omitempty"`
}

// introspect is POST /oauth2/introspect (RFC 7662), for refresh and access tokens.
func (s *Server) introspect(c echo.Context) error {
	tok, err := tokenParam(c)
	if err != nil {
		return formError(c, err)
	}
	c.Response().Header().Set("Cache-Control", "no-store")
	if c.Get(introspectorKey) == introspectorClient {
		// A resource server is sent access tokens, never refresh tokens: it
		// is told nothing about one (RFC 7662 §2.2 lets the answer depend
		// on who asks), and the lookup is not made.
		if _, err := domain.ParseRefreshToken(tok); err == nil {
			return c.JSON(http.StatusOK, introspection{})
		}
	}
	in, err := s.ledger.Introspect(s.ctx(c), tok)
	if err != nil {
		a := lookup(err)
		s.logFailure(c, "http: introspection failed", err)
		return writeOAuthError(c, a.status, a.oauth, a.title)
	}
	if !in.Active {
		return c.JSON(http.StatusOK, introspection{})
	}
	return c.JSON(http.StatusOK, introspection{
		Active: true, TokenType: in.TokenType, Subject: in.Subject, SessionID: in.SessionID, ClientID: in.ClientID, JTI: in.ID,
		IssuedAt: in.IssuedAt.Unix(), ExpiresAt: in.ExpiresAt.Unix(), Issuer: s.signer.Issuer(),
	})
}

// refresh runs a refresh and records its outcome.
func (s *Server) refresh(c echo.Context, rt string) (ledger.TokenPair, error) {
	start := time.Now()
	pair, err := s.ledger.Refresh(s.ctx(c), rt)
	if s.cfg.Metrics != nil {
		outcome := string(pair.Outcome)
		if err != nil && lookup(err).status >= 500 {
			outcome = "error"
		}
		s.cfg.Metrics.Refresh(outcome, time.Since(start))
	}
	if err != nil && lookup(err).status >= 500 {
		s.logFailure(c, "http: refresh failed", err)
	}
	return pair, err
}

// receiverToken answers grant_type=client_credentials (RFC 6749 §4.4) for an
// SSF receiver: its id and token as client_secret_basic or
// client_secret_post credentials, an optional scope; a short-lived access
// token for the SSF endpoints.
func (s *Server) receiverToken(c echo.Context, form url.Values) error {
	id, secret, basic := basicCredentials(c.Request().Header.Get(echo.HeaderAuthorization))
	if !basic {
		var err error
		if id, err = formToken(form, "client_id"); err == nil {
			secret, err = formToken(form, "client_secret")
		}
		if err != nil {
			return formError(c, err)
		}
	}
	token, scopes, ttl, err := s.cfg.Transmitter.IssueAccessToken(s.ctx(c), id, secret, form.Get("scope"))
	switch {
	case errors.Is(err, transmit.ErrInvalidClient):
		if basic {
			c.Response().Header().Set("WWW-Authenticate", `Basic realm="sessionledger ssf", charset="UTF-8"`)
		}
		return writeOAuthError(c, http.StatusUnauthorized, "invalid_client", "not an SSF receiver's id and token")
	case errors.Is(err, transmit.ErrInvalidScope):
		return writeOAuthError(c, http.StatusBadRequest, "invalid_scope", strings.TrimPrefix(err.Error(), transmit.ErrInvalidScope.Error()+": "))
	case err != nil:
		a := lookup(err)
		if a.status >= 500 {
			s.logFailure(c, "http: receiver token failed", err)
		}
		return writeOAuthError(c, a.status, a.oauth, a.title)
	}
	c.Response().Header().Set("Cache-Control", "no-store")
	c.Response().Header().Set("Pragma", "no-cache")
	return c.JSON(http.StatusOK, map[string]any{
		"access_token": token, "token_type": "Bearer", "expires_in": int(ttl.Seconds()), "scope": strings.Join(scopes, " "),
	})
}
