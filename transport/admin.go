package transport

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/labstack/echo/v4"

	"github.com/sessionledger/sessionledger/domain"
	"github.com/sessionledger/sessionledger/ledger"
)

const timeFormat = time.RFC3339

// decodeJSON reads the request body as one JSON value into v, refusing
// unknown fields, trailing data, and text the decoder would repair
// (checkJSONText).
func decodeJSON(c echo.Context, v any) error { return decodeJSONWith(c, v, true) }

// decodeJSONWith is decodeJSON, refusing unknown fields when strict.
func decodeJSONWith(c echo.Context, v any, strict bool) error {
	r := c.Request()
	if !isMediaType(r, echo.MIMEApplicationJSON) {
		return writeProblem(c, http.StatusUnsupportedMediaType, "Unsupported Media Type", "the body must be application/json")
	}
	body, err := io.ReadAll(r.Body)
	if err != nil {
		var he *echo.HTTPError
		if errors.As(err, &he) {
			return writeProblem(c, he.Code, http.StatusText(he.Code), "")
		}
		return writeProblem(c, http.StatusBadRequest, "Bad Request", "the body could not be read")
	}
	if err := checkJSONText(body); err != nil {
		return writeProblem(c, http.StatusBadRequest, "Invalid JSON", err.Error())
	}
	if err := checkMembers(body); err != nil {
		return writeProblem(c, http.StatusBadRequest, "Invalid JSON", err.Error())
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	if strict {
		dec.DisallowUnknownFields()
	}
	if err := dec.Decode(v); err != nil {
		return writeProblem(c, http.StatusBadRequest, "Invalid JSON", jsonProblem(err))
	}
	if dec.More() {
		return writeProblem(c, http.StatusBadRequest, "Invalid JSON", "the body must hold one JSON object")
	}
	return nil
}

// jsonProblem describes a JSON decoding error without echoing input values.
func jsonProblem(err error) string {
	var te *json.UnmarshalTypeError
	var se *json.SyntaxError
	switch {
	case errors.As(err, &te):
		if te.Field == "" {
			return "the body must be a JSON object"
		}
		return fmt.Sprintf("field %q must be %s", te.Field, jsonKind(te.Type))
	case errors.As(err, &se):
		return fmt.Sprintf("syntax error at offset %d", se.Offset)
	case strings.HasPrefix(err.Error(), "json: unknown field "):
		// The name is the client's input: not echoed.
		return "the body has a field that this endpoint does not take"
	case errors.Is(err, io.ErrUnexpectedEOF):
		return "syntax error: the body ends inside a JSON value"
	case errors.Is(err, io.EOF):
		return "the body is empty"
	}
	return "the body is not valid JSON"
}

type issueBody struct {
	UserID   string          `json:"user_id"`
	ClientID string          `json:"client_id"`
	Policy   json.RawMessage `json:"policy"`
	Claims   json.RawMessage `json:"claims"`
	Device   *domain.Device  `json:"device"`
}

// parsePolicy reads "policy": a preset name, or an object of whole seconds.
func parsePolicy(raw json.RawMessage, req *ledger.IssueRequest) error {
	raw = bytes.TrimSpace(raw)
	if len(raw) == 0 || string(raw) == "null" {
		return nil
	}
	if raw[0] == '"' {
		return json.Unmarshal(raw, &req.PolicyName)
	}
	var obj map[string]json.Number
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	if err := dec.Decode(&obj); err != nil {
		return &domain.ValidationError{Field: "policy", Reason: "must be a preset name or an object of whole seconds"}
	}
	fields := map[string]*domain.Seconds{}
	p := &domain.Policy{}
	fields["access_token_ttl"] = &p.AccessTokenTTL
	fields["absolute_lifetime"] = &p.AbsoluteLifetime
	fields["inactivity_timeout"] = &p.InactivityTimeout
	for name := range obj {
		if _, ok := fields[name]; !ok {
			// The name is the client's input: not echoed.
			return &domain.ValidationError{Field: "policy", Reason: "has a field other than access_token_ttl, absolute_lifetime and inactivity_timeout"}
		}
	}
	for _, name := range []string{"access_token_ttl", "absolute_lifetime", "inactivity_timeout"} {
		n, ok := obj[name]
		if !ok {
			return &domain.ValidationError{Field: "policy." + name, Reason: "is required"}
		}
		v, err := n.Int64()
		if err != nil {
			return &domain.ValidationError{Field: "policy." + name, Reason: "must be a whole number of seconds"}
		}
		*fields[name] = domain.Seconds(v)
	}
	req.CustomPolicy = p
	return nil
}

// issue is POST /v1/sessions.
func (s *Server) issue(c echo.Context) error {
	var body issueBody
	if err := decodeJSON(c, &body); err != nil || c.Response().Committed {
		return err
	}
	req := ledger.IssueRequest{UserID: body.UserID, ClientID: body.ClientID, Claims: body.Claims}
	if body.Device != nil {
		req.Device = *body.Device
	}
	if err := parsePolicy(body.Policy, &req); err != nil {
		return err
	}
	pair, err := s.ledger.Issue(s.ctx(c), req)
	if err != nil {
		return err
	}
	c.Response().Header().Set("Cache-Control", "no-store")
	return c.JSON(http.StatusCreated, newTokenResponse(pair))
}

type sessionView struct {
	SessionID string        `json:"session_id"`
	UserID    string        `json:"user_id"`
	ClientID  string        `json:"client_id"`
	Policy    domain.Policy `json:"policy"`
	Device    domain.Device `json:"device"`
	sessionTimes
	Generation uint32 `json:"generation"`
}

// sessionTimes are a session's times as every list of sessions shows them.
type sessionTimes struct {
	CreatedAt    string `json:"created_at"`
	LastActiveAt string `json:"last_active_at"`
	ExpiresAt    string `json:"expires_at"`
}

func timesOf(ss *domain.Session) sessionTimes {
	return sessionTimes{
		CreatedAt:    ss.IssuedAt.Time().Format(timeFormat),
		LastActiveAt: ss.LastActive.Time().Format(timeFormat),
		ExpiresAt:    ss.RefreshExpiresAt().UTC().Format(timeFormat),
	}
}

// listSessions is GET /v1/users/{user_id}/sessions?limit=&cursor=: one page,
// and next_cursor when more follow.
func (s *Server) listSessions(c echo.Context) error {
	userID, err := pathParam(c, "user_id")
	if err != nil {
		return &domain.ValidationError{Field: "user_id", Reason: "is not a valid path segment"}
	}
	return writeSessionPage(s, c, userID, func(ss *domain.Session) sessionView {
		return sessionView{
			SessionID: ss.ID, UserID: ss.UserID, ClientID: s.ledger.ClientID(ss), Policy: *ss.Policy, Device: ss.Device,
			sessionTimes: timesOf(ss), Generation: ss.Generation,
		}
	})
}

// writeSessionPage answers with one page of the user's live sessions
// (?limit=, ?cursor=), each as view shows it, and next_cursor when more
// follow.
func writeSessionPage[V any](s *Server, c echo.Context, userID string, view func(*domain.Session) V) error {
	page, err := pageParams(c)
	if err != nil {
		return err
	}
	sessions, next, err := s.ledger.Sessions(s.ctx(c), userID, page)
	if err != nil {
		return err
	}
	views := make([]V, 0, len(sessions))
	for i := range sessions {
		views = append(views, view(&sessions[i]))
	}
	body := map[string]any{"sessions": views}
	if next != "" {
		body["next_cursor"] = next
	}
	c.Response().Header().Set("Cache-Control", "no-store")
	return c.JSON(http.StatusOK, body)
}

// pageParams reads ?limit= and ?cursor= of a list of sessions.
func pageParams(c echo.Context) (ledger.Page, error) {
	var page ledger.Page
	q := c.QueryParams()
	if v, ok := q["limit"]; ok {
		n, err := strconv.Atoi(v[0])
		if err != nil || len(v) > 1 || n < 1 {
			return page, &domain.ValidationError{Field: "limit", Reason: fmt.Sprintf("must be one whole number from 1 to %d", ledger.MaxPageLimit)}
		}
		page.Limit = n
	}
	if v, ok := q["cursor"]; ok {
		if len(v) > 1 || v[0] == "" {
			return page, &domain.ValidationError{Field: "cursor", Reason: "must be one next_cursor value from a previous page"}
		}
		page.Cursor = v[0]
	}
	return page, nil
}

// revokeSession is DELETE /v1/sessions/{session_id}.
func (s *Server) revokeSession(c echo.Context) error {
	if err := s.ledger.RevokeSession(s.ctx(c), c.Param("session_id")); err != nil {
		return err
	}
	return c.NoContent(http.StatusNoContent)
}

// sessionEvents is GET /v1/sessions/{session_id}/events: CloudEvents, oldest first.
func (s *Server) sessionEvents(c echo.Context) error {
	sid := c.Param("session_id")
	events, err := s.ledger.History(s.ctx(c), sid)
	if err != nil {
		return err
	}
	out := make([]json.RawMessage, 0, len(events))
	for _, e := range events {
		b, err := domain.EncodeEvent(e)
		if err != nil {
			return err
		}
		out = append(out, b)
	}
	return c.JSON(http.StatusOK, map[string]any{"session_id": sid, "events": out})
}

// userCommand runs a command on the user named in the path and answers 204.
func (s *Server) userCommand(c echo.Context, run func(*ledger.Ledger, echo.Context, string) error) error {
	userID, err := pathParam(c, "user_id")
	if err != nil {
		return &domain.ValidationError{Field: "user_id", Reason: "is not a valid path segment"}
	}
	if err := run(s.ledger, c, userID); err != nil {
		return err
	}
	return c.NoContent(http.StatusNoContent)
}

func (s *Server) revokeUser(c echo.Context) error {
	return s.userCommand(c, func(l *ledger.Ledger, c echo.Context, id string) error { return l.RevokeUser(s.ctx(c), id) })
}

func (s *Server) deactivate(c echo.Context) error {
	return s.userCommand(c, func(l *ledger.Ledger, c echo.Context, id string) error { return l.Deactivate(s.ctx(c), id) })
}

func (s *Server) reactivate(c echo.Context) error {
	return s.userCommand(c, func(l *ledger.Ledger, c echo.Context, id string) error { return l.Reactivate(s.ctx(c), id) })
}
