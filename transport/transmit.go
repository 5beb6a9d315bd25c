package transport

import (
	"errors"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/labstack/echo/v4"

	"github.com/sessionledger/sessionledger/accesstoken"
	"github.com/sessionledger/sessionledger/transmit"
)

// Services that speak HTTP: the SSF transmitter's endpoints (streams,
// status, verification, poll), authenticated by a receiver's token or the
// admin token, and the admin API of webhooks, receivers and deliveries.

const ssfCallerKey = "sessionledger.ssf.caller"

func (s *Server) ssfRoutes(e *echo.Echo) {
	t := s.cfg.Transmitter
	e.GET(transmit.MetadataPath, func(c echo.Context) error {
		c.Response().Header().Set("Cache-Control", "public, max-age="+strconv.Itoa(int(s.cfg.JWKSMaxAge.Seconds())))
		return c.JSON(http.StatusOK, t.Metadata())
	})
	e.GET(transmit.SETKeysPath, func(c echo.Context) error {
		jwks := t.SETKeys()
		if jwks == nil {
			return writeProblem(c, http.StatusServiceUnavailable, "Service Unavailable", "the SET keys are not loaded yet")
		}
		c.Response().Header().Set("Cache-Control", "public, max-age="+strconv.Itoa(int(s.cfg.JWKSMaxAge.Seconds())))
		return c.Blob(http.StatusOK, "application/jwk-set+json", jwks)
	})
	read, manage := s.ssfAuth(transmit.ScopeRead), s.ssfAuth(transmit.ScopeManage)
	e.GET(transmit.ConfigurationPath, s.getStreams, s.limit, read)
	e.POST(transmit.ConfigurationPath, s.createStream, s.limit, manage)
	e.PATCH(transmit.ConfigurationPath, s.updateStream(false), s.limit, manage)
	e.PUT(transmit.ConfigurationPath, s.updateStream(true), s.limit, manage)
	e.DELETE(transmit.ConfigurationPath, s.deleteStream, s.limit, manage)
	e.GET(transmit.StatusPath, s.streamStatus, s.limit, read)
	e.POST(transmit.StatusPath, s.setStreamStatus, s.limit, manage)
	e.POST(transmit.VerificationPath, s.verifyStream, s.limit, manage)
	e.POST(transmit.PollPath+":stream_id", s.poll, s.limit, read)
}

func (s *Server) transmitAdminRoutes(admin *echo.Group) {
	admin.POST("/webhooks", s.createWebhook)
	admin.GET("/webhooks", s.listWebhooks)
	admin.GET("/webhooks/:id", s.getWebhook)
	admin.DELETE("/webhooks/:id", s.deleteWebhook)
	admin.POST("/webhooks/:id/rotate-secret", s.rotateWebhookSecret)
	admin.GET("/deliveries", s.deliveries)
	admin.GET("/deliveries/:id/failures", s.deliveryFailures)
	admin.POST("/deliveries/:id/failures/replay", s.replayFailures)
	admin.POST("/ssf/receivers", s.createReceiver)
	admin.GET("/ssf/receivers", s.listReceivers)
	admin.DELETE("/ssf/receivers/:id", s.deleteReceiver)
}

// ssfAuth checks "Authorization: Bearer" for a receiver's token carrying
// scope, or the admin token where the
// admin API is served on this listener too.
func (s *Server) ssfAuth(scope string) echo.MiddlewareFunc {
	return func(next echo.HandlerFunc) echo.HandlerFunc {
		return func(c echo.Context) error {
			token, ok := accesstoken.BearerToken(c.Request().Header.Get(echo.HeaderAuthorization))
			if !ok {
				c.Response().Header().Set("WWW-Authenticate", `Bearer realm="sessionledger ssf"`)
				return writeProblem(c, http.StatusUnauthorized, "Unauthorized", "a receiver's bearer token is required")
			}
			if !s.cfg.SeparateAdmin && s.isAdminToken(c, token) {
				c.Set(ssfCallerKey, transmit.Caller{Admin: true})
				return next(c)
			}
			r, err := s.cfg.Transmitter.Authenticate(s.ctx(c), token)
			if errors.Is(err, transmit.ErrUnauthenticated) {
				c.Response().Header().Set("WWW-Authenticate", `Bearer realm="sessionledger ssf", error="invalid_token"`)
				return writeProblem(c, http.StatusUnauthorized, "Unauthorized", "the bearer token is not a receiver's token")
			}
			if err != nil {
				return s.transmitError(c, err)
			}
			if scope != "" && !r.HasScope(scope) {
				c.Response().Header().Set("WWW-Authenticate", `Bearer realm="sessionledger ssf", error="insufficient_scope", scope="`+scope+`"`)
				return writeProblem(c, http.StatusForbidden, "Forbidden", "the receiver's token lacks the scope "+scope)
			}
			c.Set(ssfCallerKey, transmit.Caller{Receiver: r})
			return next(c)
		}
	}
}

func ssfCaller(c echo.Context) transmit.Caller { return c.Get(ssfCallerKey).(transmit.Caller) }

// transmitError answers an error of the transmitter.
func (s *Server) transmitError(c echo.Context, err error) error {
	msg := func(prefix error) string {
		return strings.TrimPrefix(strings.TrimPrefix(err.Error(), prefix.Error()), ": ")
	}
	switch {
	case errors.Is(err, transmit.ErrNotFound):
		return writeProblem(c, http.StatusNotFound, "Not Found", "no such stream, webhook or receiver")
	case errors.Is(err, transmit.ErrInvalid):
		return writeProblem(c, http.StatusBadRequest, "Invalid request", msg(transmit.ErrInvalid))
	case errors.Is(err, transmit.ErrTooSoon):
		c.Response().Header().Set("Retry-After", strconv.Itoa(transmit.MinVerificationInterval))
		return writeProblem(c, http.StatusTooManyRequests, "Too Many Requests", msg(transmit.ErrTooSoon))
	case errors.Is(err, transmit.ErrLimit):
		return writeProblem(c, http.StatusConflict, "Limit reached", msg(transmit.ErrLimit))
	}
	return err // a 503 or a 500 by the error table, logged
}

func (s *Server) getStreams(c echo.Context) error {
	t, caller := s.cfg.Transmitter, ssfCaller(c)
	c.Response().Header().Set("Cache-Control", "no-store")
	if id := c.QueryParam("stream_id"); id != "" {
		st, err := t.GetStream(s.ctx(c), caller, id)
		if err != nil {
			return s.transmitError(c, err)
		}
		return c.JSON(http.StatusOK, st)
	}
	all, err := t.ListStreams(s.ctx(c), caller)
	if err != nil {
		return s.transmitError(c, err)
	}
	return c.JSON(http.StatusOK, all)
}

func (s *Server) createStream(c echo.Context) error {
	var req transmit.StreamRequest
	if err := decodeJSONWith(c, &req, false); err != nil || c.Response().Committed {
		return err
	}
	st, err := s.cfg.Transmitter.CreateStream(s.ctx(c), ssfCaller(c), req)
	if err != nil {
		return s.transmitError(c, err)
	}
	return c.JSON(http.StatusCreated, st)
}

func (s *Server) updateStream(replace bool) echo.HandlerFunc {
	return func(c echo.Context) error {
		var req transmit.StreamRequest
		if err := decodeJSONWith(c, &req, false); err != nil || c.Response().Committed {
			return err
		}
		if req.StreamID == "" {
			return writeProblem(c, http.StatusBadRequest, "Invalid request", "stream_id is required")
		}
		st, err := s.cfg.Transmitter.UpdateStream(s.ctx(c), ssfCaller(c), req, replace)
		if err != nil {
			return s.transmitError(c, err)
		}
		return c.JSON(http.StatusOK, st)
	}
}

func (s *Server) deleteStream(c echo.Context) error {
	id := c.QueryParam("stream_id")
	if id == "" {
		return writeProblem(c, http.StatusBadRequest, "Invalid request", "the stream_id query parameter is required")
	}
	if err := s.cfg.Transmitter.DeleteStream(s.ctx(c), ssfCaller(c), id); err != nil {
		return s.transmitError(c, err)
	}
	return c.NoContent(http.StatusNoContent)
}

func (s *Server) streamStatus(c echo.Context) error {
	id := c.QueryParam("stream_id")
	if id == "" {
		return writeProblem(c, http.StatusBadRequest, "Invalid request", "the stream_id query parameter is required")
	}
	st, err := s.cfg.Transmitter.Status(s.ctx(c), ssfCaller(c), id)
	if err != nil {
		return s.transmitError(c, err)
	}
	return c.JSON(http.StatusOK, st)
}

func (s *Server) setStreamStatus(c echo.Context) error {
	var req transmit.StreamStatus
	if err := decodeJSON(c, &req); err != nil || c.Response().Committed {
		return err
	}
	if req.StreamID == "" {
		return writeProblem(c, http.StatusBadRequest, "Invalid request", "stream_id is required")
	}
	st, err := s.cfg.Transmitter.SetStatus(s.ctx(c), ssfCaller(c), req)
	if err != nil {
		return s.transmitError(c, err)
	}
	return c.JSON(http.StatusOK, st)
}

func (s *Server) verifyStream(c echo.Context) error {
	var req struct {
		StreamID string `json:"stream_id"`
		State    string `json:"state,omitempty"`
	}
	if err := decodeJSON(c, &req); err != nil || c.Response().Committed {
		return err
	}
	if req.StreamID == "" {
		return writeProblem(c, http.StatusBadRequest, "Invalid request", "stream_id is required")
	}
	if err := s.cfg.Transmitter.Verify(s.ctx(c), ssfCaller(c), req.StreamID, req.State); err != nil {
		return s.transmitError(c, err)
	}
	return c.NoContent(http.StatusNoContent)
}

// poll answers RFC 8936 polls; a long poll waits within the request's
// budget.
func (s *Server) poll(c echo.Context) error {
	var req transmit.PollRequest
	if err := decodeJSON(c, &req); err != nil || c.Response().Committed {
		return err
	}
	deadline, ok := s.ctx(c).Deadline()
	if !ok {
		deadline = time.Now().Add(transmit.MaxLongPoll)
	}
	resp, err := s.cfg.Transmitter.Poll(s.ctx(c), ssfCaller(c), c.Param("stream_id"), req, deadline)
	if err != nil {
		return s.transmitError(c, err)
	}
	c.Response().Header().Set("Cache-Control", "no-store")
	return c.JSON(http.StatusOK, resp)
}

// Admin API.

func (s *Server) createWebhook(c echo.Context) error {
	var req struct {
		URL    string   `json:"url"`
		Events []string `json:"events"`
	}
	if err := decodeJSON(c, &req); err != nil || c.Response().Committed {
		return err
	}
	w, err := s.cfg.Transmitter.CreateWebhook(s.ctx(c), req.URL, req.Events)
	if err != nil {
		return s.transmitError(c, err)
	}
	c.Response().Header().Set("Cache-Control", "no-store")
	return c.JSON(http.StatusCreated, w)
}

func (s *Server) listWebhooks(c echo.Context) error {
	all, err := s.cfg.Transmitter.ListWebhooks(s.ctx(c))
	if err != nil {
		return s.transmitError(c, err)
	}
	return c.JSON(http.StatusOK, map[string]any{"webhooks": all})
}

func (s *Server) getWebhook(c echo.Context) error {
	w, err := s.cfg.Transmitter.GetWebhook(s.ctx(c), c.Param("id"))
	if err != nil {
		return s.transmitError(c, err)
	}
	return c.JSON(http.StatusOK, w)
}

func (s *Server) deleteWebhook(c echo.Context) error {
	if err := s.cfg.Transmitter.DeleteWebhook(s.ctx(c), c.Param("id")); err != nil {
		return s.transmitError(c, err)
	}
	return c.NoContent(http.StatusNoContent)
}

func (s *Server) rotateWebhookSecret(c echo.Context) error {
	overlap := transmit.SecretOverlap
	if c.Request().ContentLength != 0 {
		var req struct {
			OverlapSeconds *int64 `json:"overlap_seconds"`
		}
		if err := decodeJSON(c, &req); err != nil || c.Response().Committed {
			return err
		}
		if req.OverlapSeconds != nil {
			if *req.OverlapSeconds < 0 || *req.OverlapSeconds > 7*24*3600 {
				return writeProblem(c, http.StatusBadRequest, "Invalid request", "overlap_seconds must be 0 to 604800 (a week)")
			}
			overlap = time.Duration(*req.OverlapSeconds) * time.Second
		}
	}
	w, err := s.cfg.Transmitter.RotateSecret(s.ctx(c), c.Param("id"), overlap)
	if err != nil {
		return s.transmitError(c, err)
	}
	c.Response().Header().Set("Cache-Control", "no-store")
	return c.JSON(http.StatusOK, w)
}

func (s *Server) deliveries(c echo.Context) error {
	all, err := s.cfg.Transmitter.Deliveries(s.ctx(c))
	if err != nil {
		return s.transmitError(c, err)
	}
	return c.JSON(http.StatusOK, map[string]any{"endpoints": all})
}

func (s *Server) deliveryFailures(c echo.Context) error {
	f, err := s.cfg.Transmitter.Failures(s.ctx(c), c.Param("id"))
	if err != nil {
		return s.transmitError(c, err)
	}
	return c.JSON(http.StatusOK, map[string]any{"failures": f})
}

func (s *Server) replayFailures(c echo.Context) error {
	res, err := s.cfg.Transmitter.Replay(s.ctx(c), c.Param("id"))
	if err != nil {
		return s.transmitError(c, err)
	}
	return c.JSON(http.StatusOK, res)
}

func (s *Server) createReceiver(c echo.Context) error {
	var req struct {
		Name     string   `json:"name"`
		Audience string   `json:"audience"`
		Scopes   []string `json:"scopes"`
	}
	if err := decodeJSON(c, &req); err != nil || c.Response().Committed {
		return err
	}
	r, token, err := s.cfg.Transmitter.CreateReceiver(s.ctx(c), req.Name, req.Audience, req.Scopes)
	if err != nil {
		return s.transmitError(c, err)
	}
	c.Response().Header().Set("Cache-Control", "no-store")
	return c.JSON(http.StatusCreated, map[string]any{
		"id": r.ID, "name": r.Name, "audience": r.Audience, "scopes": r.Scopes, "created": r.Created, "token": token,
	})
}

func (s *Server) listReceivers(c echo.Context) error {
	all, err := s.cfg.Transmitter.Receivers(s.ctx(c))
	if err != nil {
		return s.transmitError(c, err)
	}
	out := make([]map[string]any, 0, len(all))
	for _, r := range all {
		out = append(out, map[string]any{"id": r.ID, "name": r.Name, "audience": r.Audience, "scopes": r.Scopes, "created": r.Created})
	}
	return c.JSON(http.StatusOK, map[string]any{"receivers": out})
}

func (s *Server) deleteReceiver(c echo.Context) error {
	if err := s.cfg.Transmitter.DeleteReceiver(s.ctx(c), c.Param("id")); err != nil {
		return s.transmitError(c, err)
	}
	return c.NoContent(http.StatusNoContent)
}
