package transport

import (
	"encoding/base64"
	"net/http"
	"net/url"
	"strings"

	"github.com/labstack/echo/v4"

	"github.com/sessionledger/sessionledger/accesstoken"
)

// requireIntrospector lets a request to the introspection endpoint through
// when it authenticates an introspection client with HTTP Basic
// (client_secret_basic, RFC 6749 §2.3.1: the id and secret form-urlencoded,
// then joined by a colon) or, where acceptAdmin, carries the admin token as a
// bearer token. Anything else is 401 invalid_client (RFC 6749 §5.2) with a
// challenge for each scheme taken here.
func (s *Server) requireIntrospector(acceptAdmin bool) echo.MiddlewareFunc {
	return func(next echo.HandlerFunc) echo.HandlerFunc {
		return func(c echo.Context) error {
			h := c.Request().Header.Get(echo.HeaderAuthorization)
			if acceptAdmin {
				if token, ok := accesstoken.BearerToken(h); ok {
					if s.isAdminToken(c, token) {
						c.Set(introspectorKey, introspectorAdmin)
						return next(c)
					}
					return s.refuseIntrospector(c, acceptAdmin)
				}
			}
			id, secret, ok := basicCredentials(h)
			if ok && s.cfg.IntrospectionClients != nil {
				clients, err := s.cfg.IntrospectionClients.Current()
				if err != nil {
					// No client counts until it is fixed; the operator is told, once.
					s.log.Error("introspection clients file changed into one that cannot be used; no client counts until it is fixed", "err", err)
				}
				if clients.Authenticate(id, secret) {
					c.Set(introspectorKey, introspectorClient)
					return next(c)
				}
			}
			return s.refuseIntrospector(c, acceptAdmin)
		}
	}
}

// Who is introspecting, for the handler: an introspection client is told
// about access tokens only.
const (
	introspectorKey    = "sessionledger.introspector"
	introspectorAdmin  = "admin"
	introspectorClient = "client"
)

func (s *Server) refuseIntrospector(c echo.Context, acceptAdmin bool) error {
	h := c.Response().Header()
	h.Add("WWW-Authenticate", `Basic realm="sessionledger introspection", charset="UTF-8"`)
	if acceptAdmin {
		h.Add("WWW-Authenticate", `Bearer realm="sessionledger admin"`)
	}
	return writeOAuthError(c, http.StatusUnauthorized, "invalid_client", "client authentication failed: HTTP Basic with an introspection client's id and secret is required")
}

// basicCredentials reads the client id and secret of an HTTP Basic
// Authorization header value (RFC 7617; scheme in any case), each
// form-urlencoded as RFC 6749 §2.3.1 requires.
func basicCredentials(h string) (id, secret string, ok bool) {
	scheme, rest, found := strings.Cut(h, " ")
	if !found || !strings.EqualFold(scheme, "Basic") {
		return "", "", false
	}
	raw, err := base64.StdEncoding.DecodeString(strings.TrimLeft(rest, " "))
	if err != nil {
		return "", "", false
	}
	rawID, rawSecret, found := strings.Cut(string(raw), ":")
	if !found {
		return "", "", false
	}
	if id, err = url.QueryUnescape(rawID); err != nil {
		return "", "", false
	}
	if secret, err = url.QueryUnescape(rawSecret); err != nil {
		return "", "", false
	}
	return id, secret, id != ""
}

// adminTokenKey is where requireAdmin and requireIntrospector leave the
// name of the admin token a request authenticated with, for handlers and
// the access log: the name only, never the token.
const adminTokenKey = "sessionledger.admin_token"

// isAdminToken reports whether token is one of the admin tokens now,
// comparing digests in constant time (secrets.AdminTokens.Match), and if so
// sets its name in c.
func (s *Server) isAdminToken(c echo.Context, token string) bool {
	tokens, err := s.cfg.AdminTokens.Current()
	if err != nil {
		// Reported once per change of the file; its tokens do not count.
		s.log.Error("an admin tokens file changed into one that cannot be used; its tokens do not count until it is fixed", "err", err)
	}
	name, ok := tokens.Match(token)
	if ok {
		c.Set(adminTokenKey, name)
	}
	return ok
}
