package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"testing"
)

func TestBadInputGetsAClear4xx(t *testing.T) {
	h := boot(t, "", nil)
	s := h.issue(`{"user_id":"alice"}`)
	form := "application/x-www-form-urlencoded"
	big := strings.Repeat("a", 4<<20)
	bearer := func(tok string) http.Header { return http.Header{"Authorization": {"Bearer " + tok}} }
	tests := []struct {
		name        string
		method      string
		path        string
		contentType string
		body        string
		header      http.Header
		status      int
		oauthError  string // OAuth endpoints: the error code
		problemHas  string // admin endpoints: a word the problem detail must contain
	}{
		// OAuth token endpoint.
		{"token: no grant_type", "POST", "/oauth2/token", form, "refresh_token=x", nil, 400, "invalid_request", ""},
		{"token: other grant", "POST", "/oauth2/token", form, "grant_type=password&username=a&password=b", nil, 400, "unsupported_grant_type", ""},
		{"token: no refresh_token", "POST", "/oauth2/token", form, "grant_type=refresh_token", nil, 400, "invalid_request", ""},
		{"token: repeated parameter", "POST", "/oauth2/token", form, "grant_type=refresh_token&refresh_token=a&refresh_token=b", nil, 400, "invalid_request", ""},
		{"token: repeated unknown parameter", "POST", "/oauth2/token", form, "grant_type=refresh_token&refresh_token=a&ZZecho7=1&ZZecho7=2", nil, 400, "invalid_request", ""},
		{"token: JSON body", "POST", "/oauth2/token", "application/json", `{"grant_type":"refresh_token"}`, nil, 400, "invalid_request", ""},
		{"token: parameters in URL", "POST", "/oauth2/token?grant_type=refresh_token&refresh_token=" + url.QueryEscape(s.Refresh), form, "", nil, 400, "invalid_request", ""},
		{"token: bad form encoding", "POST", "/oauth2/token", form, "grant_type=refresh_token&refresh_token=%zz", nil, 400, "invalid_request", ""},
		{"token: 4 MiB body", "POST", "/oauth2/token", form, "grant_type=refresh_token&refresh_token=" + big, nil, 413, "invalid_request", ""},
		{"token: GET", "GET", "/oauth2/token", "", "", nil, 405, "invalid_request", ""},
		{"revoke: no token", "POST", "/oauth2/revoke", form, "", nil, 400, "invalid_request", ""},
		{"introspect: no token", "POST", "/oauth2/introspect", form, "", adminHeader, 400, "invalid_request", ""},
		// Admin API.
		{"admin: no token", "POST", "/v1/sessions", "application/json", `{"user_id":"a"}`, nil, 401, "", "admin"},
		{"admin: wrong token", "POST", "/v1/sessions", "application/json", `{"user_id":"a"}`, bearer("wrong-token-wrong-token"), 401, "", "admin"},
		{"admin: token as basic auth", "GET", "/v1/users/alice/sessions", "", "", http.Header{"Authorization": {"Basic " + testAdminToken}}, 401, "", "admin"},
		{"admin: refresh token as bearer", "GET", "/v1/users/alice/sessions", "", "", bearer(s.Refresh), 401, "", "admin"},
		{"issue: bad JSON", "POST", "/v1/sessions", "application/json", `{"user_id":`, adminHeader, 400, "", "syntax"},
		{"issue: not an object", "POST", "/v1/sessions", "application/json", `[1,2]`, adminHeader, 400, "", ""},
		{"issue: empty body", "POST", "/v1/sessions", "application/json", ``, adminHeader, 400, "", "empty"},
		{"issue: two objects", "POST", "/v1/sessions", "application/json", `{"user_id":"a"}{}`, adminHeader, 400, "", "one JSON object"},
		{"issue: unknown field", "POST", "/v1/sessions", "application/json", `{"user_id":"a","ZZecho1":"b"}`, adminHeader, 400, "", "field"},
		{"issue: empty user id", "POST", "/v1/sessions", "application/json", `{"user_id":""}`, adminHeader, 400, "", "user_id"},
		{"issue: no user id", "POST", "/v1/sessions", "application/json", `{}`, adminHeader, 400, "", "user_id"},
		{"issue: user id not a string", "POST", "/v1/sessions", "application/json", `{"user_id":7}`, adminHeader, 400, "", "user_id"},
		{"issue: control characters in user id", "POST", "/v1/sessions", "application/json", `{"user_id":"a\u0000b"}`, adminHeader, 400, "", "user_id"},
		{"issue: user id too long", "POST", "/v1/sessions", "application/json", fmt.Sprintf(`{"user_id":%q}`, strings.Repeat("u", 256)), adminHeader, 400, "", "user_id"},
		{"issue: unknown policy", "POST", "/v1/sessions", "application/json", `{"user_id":"a","policy":"ZZecho2"}`, adminHeader, 400, "", "policy"},
		{"issue: unknown policy field", "POST", "/v1/sessions", "application/json", `{"user_id":"a","policy":{"ZZecho3":1}}`, adminHeader, 400, "", "policy"},
		{"issue: reserved claim", "POST", "/v1/sessions", "application/json", `{"user_id":"a","claims":{"sid":"ZZecho4"}}`, adminHeader, 400, "", "claims"},
		{"issue: policy of wrong type", "POST", "/v1/sessions", "application/json", `{"user_id":"a","policy":7}`, adminHeader, 400, "", "policy"},
		{"issue: claims not an object", "POST", "/v1/sessions", "application/json", `{"user_id":"a","claims":[1]}`, adminHeader, 400, "", "claims"},
		{"issue: claims too large", "POST", "/v1/sessions", "application/json", fmt.Sprintf(`{"user_id":"a","claims":{"x":%q}}`, strings.Repeat("c", 5000)), adminHeader, 400, "", "claims"},
		{"issue: bad device ip", "POST", "/v1/sessions", "application/json", `{"user_id":"a","device":{"ip":"not-an-ip"}}`, adminHeader, 400, "", "device.ip"},
		{"issue: device of wrong type", "POST", "/v1/sessions", "application/json", `{"user_id":"a","device":"phone"}`, adminHeader, 400, "", "device"},
		{"issue: form body", "POST", "/v1/sessions", form, `user_id=a`, adminHeader, 415, "", "application/json"},
		{"issue: 4 MiB body", "POST", "/v1/sessions", "application/json", `{"user_id":"` + big + `"}`, adminHeader, 413, "", ""},
		{"revoke: unknown session", "DELETE", "/v1/sessions/01JD3Z9V6Q4Q4WJ5X7K8M9N0PA", "", "", adminHeader, 404, "", "session"},
		{"revoke: malformed session id", "DELETE", "/v1/sessions/..%2F..", "", "", adminHeader, 404, "", "session"},
		{"events: unknown session", "GET", "/v1/sessions/01JD3Z9V6Q4Q4WJ5X7K8M9N0PA/events", "", "", adminHeader, 404, "", "session"},
		{"events: wildcard session id", "GET", "/v1/sessions/*/events", "", "", adminHeader, 404, "", "session"},
		{"list: limit not a number", "GET", "/v1/users/alice/sessions?limit=ZZecho5", "", "", adminHeader, 400, "", "limit"},
		{"list: limit 0", "GET", "/v1/users/alice/sessions?limit=0", "", "", adminHeader, 400, "", "limit"},
		{"list: limit too large", "GET", "/v1/users/alice/sessions?limit=1001", "", "", adminHeader, 400, "", "limit"},
		{"list: two limits", "GET", "/v1/users/alice/sessions?limit=1&limit=2", "", "", adminHeader, 400, "", "limit"},
		{"list: forged cursor", "GET", "/v1/users/alice/sessions?cursor=ZZecho6", "", "", adminHeader, 400, "", "cursor"},
		{"list: cursor with leading zeros", "GET", "/v1/users/alice/sessions?cursor=s007", "", "", adminHeader, 400, "", "cursor"},
		{"list: empty cursor", "GET", "/v1/users/alice/sessions?cursor=", "", "", adminHeader, 400, "", "cursor"},
		{"list: user id too long", "GET", "/v1/users/" + strings.Repeat("u", 300) + "/sessions", "", "", adminHeader, 400, "", "user_id"},
		{"unknown route", "GET", "/v2/nothing", "", "", nil, 404, "", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req, err := http.NewRequest(tt.method, h.url+tt.path, strings.NewReader(tt.body))
			if err != nil {
				t.Fatal(err)
			}
			if tt.contentType != "" {
				req.Header.Set("Content-Type", tt.contentType)
			}
			for k, v := range tt.header {
				req.Header[k] = v
			}
			resp, err := h.client.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			var body map[string]any
			var raw bytes.Buffer
			_, _ = raw.ReadFrom(resp.Body)
			if err := json.Unmarshal(raw.Bytes(), &body); err != nil {
				t.Fatalf("status %d, body not JSON: %q", resp.StatusCode, raw.String())
			}
			if resp.StatusCode != tt.status {
				t.Fatalf("status %d %v, want %d", resp.StatusCode, body, tt.status)
			}
			if tt.oauthError != "" && body["error"] != tt.oauthError {
				t.Fatalf("error %v, want %q", body["error"], tt.oauthError)
			}
			if strings.HasPrefix(tt.path, "/v1/") {
				if ct := resp.Header.Get("Content-Type"); ct != "application/problem+json" {
					t.Fatalf("Content-Type %q, want application/problem+json", ct)
				}
				if body["status"] != float64(tt.status) || body["title"] == nil {
					t.Fatalf("problem %v", body)
				}
				if !strings.Contains(fmt.Sprint(body["detail"], body["title"]), tt.problemHas) {
					t.Fatalf("problem %v does not mention %q", body, tt.problemHas)
				}
			}
			if strings.Contains(raw.String(), s.Refresh) || strings.Contains(raw.String(), testAdminToken) {
				t.Fatalf("error body echoes a token: %s", raw.String())
			}
			if strings.Contains(raw.String(), "ZZecho") {
				t.Fatalf("error body echoes the input: %s", raw.String())
			}
		})
	}
	h.mustRefresh(s.Refresh) // none of the above touched the session
}
