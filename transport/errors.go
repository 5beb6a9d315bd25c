package transport

import (
	"context"
	"errors"
	"net/http"

	"github.com/labstack/echo/v4"

	"github.com/sessionledger/sessionledger/domain"
)

// apiError is how one domain error is answered: HTTP status, OAuth2 error code
// (RFC 6749 §5.2) on the OAuth endpoints, and a hint for the user. Operator
// detail goes to the log, never to the client.
type apiError struct {
	err    error
	status int
	oauth  string
	title  string
}

// errorTable maps domain errors to answers; the first match wins.
var errorTable = []apiError{
	{domain.ErrInvalidInput, http.StatusBadRequest, "invalid_request", "Invalid request"},
	{domain.ErrTokenMalformed, http.StatusBadRequest, "invalid_grant", "The refresh token is malformed"},
	{domain.ErrTokenUnknown, http.StatusBadRequest, "invalid_grant", "The refresh token is not valid"},
	{domain.ErrTokenReused, http.StatusBadRequest, "invalid_grant", "The refresh token was already used; the session is revoked"},
	{domain.ErrSessionEnded, http.StatusBadRequest, "invalid_grant", "The session has ended"},
	{domain.ErrSessionExpired, http.StatusBadRequest, "invalid_grant", "The session has expired"},
	{domain.ErrSessionNotFound, http.StatusNotFound, "invalid_grant", "No live session with that id"},
	{domain.ErrUserDeactivated, http.StatusConflict, "invalid_request", "The user is deactivated"},
	{domain.ErrConflict, http.StatusServiceUnavailable, "temporarily_unavailable", "Too many concurrent writes; retry"},
	{domain.ErrUnavailable, http.StatusServiceUnavailable, "temporarily_unavailable", "The ledger is temporarily unavailable; retry"},
	{domain.ErrProjectionFailed, http.StatusServiceUnavailable, "temporarily_unavailable", "The ledger has stopped; an operator must act"},
	// The request's budget ran out, or its client went away.
	{context.DeadlineExceeded, http.StatusServiceUnavailable, "temporarily_unavailable", "The ledger is temporarily unavailable; retry"},
	{context.Canceled, http.StatusServiceUnavailable, "temporarily_unavailable", "The ledger is temporarily unavailable; retry"},
}

var internalError = apiError{status: http.StatusInternalServerError, oauth: "server_error", title: "Internal error"}

// lookup finds the answer for err.
func lookup(err error) apiError {
	for _, a := range errorTable {
		if errors.Is(err, a.err) {
			return a
		}
	}
	return internalError
}

// detail is the user-facing text of err: a validation error names its field;
// anything else gets the table's hint, so operator detail stays in the log.
func detail(err error, a apiError) string {
	var v *domain.ValidationError
	if errors.As(err, &v) {
		return v.Error()
	}
	return a.title
}

// problem is an RFC 9457 problem document.
type problem struct {
	Type   string `json:"type"`
	Title  string `json:"title"`
	Status int    `json:"status"`
	Detail string `json:"detail,omitempty"`
}

func writeProblem(c echo.Context, status int, title, detail string) error {
	if status == http.StatusServiceUnavailable {
		c.Response().Header().Set("Retry-After", "1")
	}
	c.Response().Header().Set(echo.HeaderContentType, "application/problem+json")
	c.Response().WriteHeader(status)
	return encodeJSON(c, problem{Type: "about:blank", Title: title, Status: status, Detail: detail})
}

// oauthError is an RFC 6749 §5.2 error response.
type oauthError struct {
	Error       string `json:"error"`
	Description string `json:"error_description,omitempty"`
}

func writeOAuthError(c echo.Context, status int, code, description string) error {
	h := c.Response().Header()
	h.Set("Cache-Control", "no-store")
	h.Set("Pragma", "no-cache")
	if status == http.StatusServiceUnavailable {
		h.Set("Retry-After", "1")
	}
	return c.JSON(status, oauthError{Error: code, Description: description})
}
