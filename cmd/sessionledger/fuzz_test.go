package main

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/sessionledger/sessionledger/transmit"
	"github.com/sessionledger/sessionledger/transport"
)

// FuzzHTTPHandlers sends arbitrary requests to the token, revocation,
// introspection, session and user endpoints of a real ledger, to cookie
// mode's and self-service's with their credentials, and to the SSF
// transmitter's and the webhooks' with a receiver's or the admin token. Whatever comes
// in, the answer is a JSON body with a status below 500, and no token is
// echoed back.
func FuzzHTTPHandlers(f *testing.F) {
	h := boot(f, "", func(c *Config) {
		c.Issuer, c.BrowserOrigins = "https://ledger.example.com", []string{appOrigin}
	})
	live := h.issue(`{"user_id":"fuzz"}`)
	mine := h.issue(`{"user_id":"fuzz"}`)
	receiver := h.mustAdmin("POST", "/v1/ssf/receivers", `{"name":"fuzz","audience":"https://rp.example"}`, http.StatusCreated)["token"].(string)
	st, polled := h.do("POST", transmit.ConfigurationPath, "application/json", `{"delivery":{"method":"urn:ietf:rfc:8936"}}`,
		http.Header{"Authorization": {"Bearer " + receiver}})
	if st != http.StatusCreated {
		f.Fatalf("poll stream: %d %v", st, polled)
	}
	pollPath := transmit.PollPath + polled["stream_id"].(string)
	form := "application/x-www-form-urlencoded"
	for _, seed := range []struct {
		route       uint8
		contentType string
		body        string
	}{
		{0, form, "grant_type=refresh_token&refresh_token=" + url.QueryEscape(live.Refresh)},
		{0, form, "grant_type=refresh_token&refresh_token=slrt_AAAA"},
		{0, form, "grant_type=password"},
		{0, form, "grant_type=client_credentials&client_id=01JD3Z9V6Q4Q4WJ5X7K8M9N0PA&client_secret=" + url.QueryEscape(receiver) + "&scope=ssf.read"},
		{0, form, "grant_type=client_credentials&client_id=x&client_secret=slsr_x_y&scope=%zz"},
		{0, "application/json", `{"grant_type":"refresh_token"}`},
		{1, form, "token=" + url.QueryEscape(live.Access)},
		{1, form, "token=%zz"},
		{2, form, "token=" + url.QueryEscape(live.Refresh)},
		{3, "application/json", `{"user_id":"u","policy":{"access_token_ttl":1,"absolute_lifetime":2,"inactivity_timeout":0},"claims":{"a":[1]},"device":{"ip":"::1"}}`},
		{3, "application/json", `{"user_id":"u","policy":"mobile"}`},
		{3, "application/json", `{"user_id":`},
		{4, "", "alice"},
		{4, "", "%2e%2e%2f"},
		{6, "application/json", `{"refresh_token":"` + live.Refresh + `"}`},
		{6, "application/json", `{"refresh_token":1}`},
		{7, "application/json", live.Refresh},
		{7, "application/json; charset=utf-8", "slrt_\x00"},
		{8, "", mine.Access},
		{8, "", "eyJhbGciOiJub25lIn0.e30."},
		{9, "", mine.ID},
		{9, "", "../x"},
		{10, "application/json", `{"delivery":{"method":"urn:ietf:rfc:8935","endpoint_url":"https://10.0.0.1/x"},"events_requested":["https://schemas.openid.net/secevent/caep/event-type/session-revoked"]}`},
		{10, "application/json", `{"delivery":{"method":"urn:ietf:rfc:8936"},"aud":["a"],"description":"` + strings.Repeat("d", 300) + `"}`},
		{11, "application/json", `{"stream_id":"` + polled["stream_id"].(string) + `","description":"x","events_requested":[]}`},
		{12, "application/json", `{"maxEvents":1000,"ack":["x.y"],"setErrs":{"a":{"err":"invalid_key"}}}`},
		{12, "application/json", `{"returnImmediately":true}`},
		{13, "application/json", `{"url":"http://169.254.169.254/latest","events":["session.revoked"]}`},
		{13, "application/json", `{"url":"https://hooks.example.com/x","events":["nope"]}`},
		{14, "application/json", `{"stream_id":"` + polled["stream_id"].(string) + `","status":"paused"}`},
		{15, "", "slsr_01JD3Z9V6Q4Q4WJ5X7K8M9N0PA_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"},
		{16, "", polled["stream_id"].(string)},
	} {
		f.Add(seed.route, seed.contentType, []byte(seed.body))
	}
	handler := h.m.http.Handler
	f.Fuzz(func(t *testing.T, route uint8, contentType string, body []byte) {
		var req *http.Request
		const routes = 17
		bearer := testAdminToken
		switch route % routes {
		case 0:
			req = httptest.NewRequest(http.MethodPost, "/oauth2/token", bytes.NewReader(body))
		case 1:
			req = httptest.NewRequest(http.MethodPost, "/oauth2/revoke", bytes.NewReader(body))
		case 2:
			req = httptest.NewRequest(http.MethodPost, "/oauth2/introspect", bytes.NewReader(body))
		case 3:
			req = httptest.NewRequest(http.MethodPost, "/v1/sessions", bytes.NewReader(body))
		case 4:
			req = httptest.NewRequest(http.MethodGet, "/v1/users/x/sessions", nil)
			req.URL.Path = "/v1/users/" + string(body) + "/sessions"
			req.URL.RawPath = "/v1/users/" + url.PathEscape(string(body)) + "/sessions"
		case 5:
			req = httptest.NewRequest(http.MethodDelete, "/v1/sessions/x", nil)
			req.URL.Path = "/v1/sessions/" + string(body)
		case 6:
			req = httptest.NewRequest(http.MethodPost, "/browser/signin", bytes.NewReader(body))
			req.Header.Set("Origin", appOrigin)
		case 7:
			req = httptest.NewRequest(http.MethodPost, "/browser/refresh", nil)
			req.Header.Set("Origin", appOrigin)
			req.Header.Set("Cookie", transport.RefreshCookie(appOrigin)+"="+string(body))
		case 8:
			req = httptest.NewRequest(http.MethodGet, "/v1/me/sessions", nil)
			bearer = string(body)
		case 9:
			req = httptest.NewRequest(http.MethodDelete, "/v1/me/sessions/x", nil)
			req.URL.Path = "/v1/me/sessions/" + string(body)
			bearer = mine.Access
		case 10:
			req = httptest.NewRequest(http.MethodPost, transmit.ConfigurationPath, bytes.NewReader(body))
			bearer = receiver
		case 11:
			req = httptest.NewRequest(http.MethodPatch, transmit.ConfigurationPath, bytes.NewReader(body))
			bearer = receiver
		case 12:
			// A deadline of its own, so that a long poll does not wait.
			ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
			defer cancel()
			req = httptest.NewRequestWithContext(ctx, http.MethodPost, pollPath, bytes.NewReader(body))
			bearer = receiver
		case 13:
			req = httptest.NewRequest(http.MethodPost, "/v1/webhooks", bytes.NewReader(body))
		case 14:
			req = httptest.NewRequest(http.MethodPost, transmit.StatusPath, bytes.NewReader(body))
			bearer = receiver
		case 15:
			req = httptest.NewRequest(http.MethodGet, transmit.ConfigurationPath, nil)
			bearer = string(body)
		case 16:
			req = httptest.NewRequest(http.MethodGet, transmit.StatusPath+"?stream_id="+url.QueryEscape(string(body)), nil)
			bearer = receiver
		}
		if contentType != "" {
			req.Header.Set("Content-Type", contentType)
		}
		req.Header.Set("Authorization", "Bearer "+bearer)
		rec := httptest.NewRecorder()
		handler.ServeHTTP(rec, req)
		if rec.Code >= 500 {
			t.Fatalf("route %d: status %d for %q: %s", route%routes, rec.Code, body, rec.Body.String())
		}
		if rec.Body.Len() > 0 && !json.Valid(rec.Body.Bytes()) {
			t.Fatalf("route %d: body is not JSON: %q", route%routes, rec.Body.String())
		}
		if strings.Contains(rec.Body.String(), testAdminToken) || strings.Contains(rec.Body.String(), receiver) || strings.Contains(rec.Body.String(), live.Refresh) && route%routes != 0 {
			t.Fatalf("route %d: a token is echoed: %s", route%routes, rec.Body.String())
		}
	})
}
