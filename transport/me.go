package transport

import (
	"net/http"

	"github.com/labstack/echo/v4"

	"github.com/sessionledger/sessionledger/accesstoken"
	"github.com/sessionledger/sessionledger/domain"
	"github.com/sessionledger/sessionledger/ledger"
)

// Self-service: a user sees and ends their own sessions, authenticated by
// their own access token (Ledger.Authenticate: the verifier's checks, and
// the session must be live, linearizably).

// MeSessionsPath is the user's own sessions.
const MeSessionsPath = "/v1/me/sessions"

const callerKey = "sessionledger.caller"

func (s *Server) meRoutes(e *echo.Echo) {
	e.GET(MeSessionsPath, s.mySessions, s.limit, s.requireReady, s.requireUser)
	e.DELETE(MeSessionsPath+"/:session_id", s.revokeMySession, s.limit, s.requireReady, s.requireUser)
	e.POST(MeSessionsPath+"/revoke-others", s.signOutOthers, s.limit, s.requireReady, s.requireUser)
}

// requireUser checks "Authorization: Bearer <access token>" and gives
// handlers the caller (callerKey). A missing token gets a bare challenge; a
// token that is not a live session's access token gets invalid_token
// (RFC 6750 §3.1), which tells a client to refresh and retry.
func (s *Server) requireUser(next echo.HandlerFunc) echo.HandlerFunc {
	return func(c echo.Context) error {
		raw, ok := accesstoken.BearerToken(c.Request().Header.Get(echo.HeaderAuthorization))
		if !ok {
			c.Response().Header().Set("WWW-Authenticate", `Bearer realm="sessionledger"`)
			return writeProblem(c, http.StatusUnauthorized, "Unauthorized", "the user's access token is required as a bearer token")
		}
		caller, ok, err := s.ledger.Authenticate(s.ctx(c), raw)
		if err != nil {
			return err
		}
		if !ok {
			c.Response().Header().Set("WWW-Authenticate", `Bearer realm="sessionledger", error="invalid_token", error_description="the access token is not valid, has expired or its session has ended"`)
			return writeProblem(c, http.StatusUnauthorized, "Unauthorized", "the access token is not valid, has expired or its session has ended")
		}
		c.Set(callerKey, caller)
		return next(c)
	}
}

func caller(c echo.Context) ledger.Caller { return c.Get(callerKey).(ledger.Caller) }

// mySession is one of the user's sessions as the user sees it.
type mySession struct {
	SessionID string        `json:"session_id"`
	ClientID  string        `json:"client_id"`
	Device    domain.Device `json:"device"`
	sessionTimes
	Current bool `json:"current"`
}

// mySessions is GET /v1/me/sessions?limit=&cursor=.
func (s *Server) mySessions(c echo.Context) error {
	me := caller(c)
	return writeSessionPage(s, c, me.UserID, func(ss *domain.Session) mySession {
		return mySession{
			SessionID: ss.ID, ClientID: s.ledger.ClientID(ss), Device: ss.Device,
			sessionTimes: timesOf(ss), Current: ss.ID == me.SessionID,
		}
	})
}

// revokeMySession is DELETE /v1/me/sessions/{session_id}: 404 unless it is
// one of the caller's live sessions.
func (s *Server) revokeMySession(c echo.Context) error {
	sid, err := pathParam(c, "session_id")
	if err != nil {
		return domain.ErrSessionNotFound
	}
	if err := s.ledger.RevokeOwnSession(s.ctx(c), caller(c), sid); err != nil {
		return err
	}
	return c.NoContent(http.StatusNoContent)
}

// signOutOthers is POST /v1/me/sessions/revoke-others: ends every session
// of the caller's user but the caller's.
func (s *Server) signOutOthers(c echo.Context) error {
	if c.Request().ContentLength > 0 {
		return writeProblem(c, http.StatusBadRequest, "Bad Request", "this endpoint takes no body")
	}
	n, err := s.ledger.SignOutOthers(s.ctx(c), caller(c))
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, map[string]int{"revoked": n})
}
