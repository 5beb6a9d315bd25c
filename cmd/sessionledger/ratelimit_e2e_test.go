package main

import (
	"net/http"
	"net/url"
	"testing"
)

func TestRateLimitPerClientAddress(t *testing.T) {
	h := boot(t, "", func(c *Config) { c.RateLimit, c.RateBurst, c.TrustedProxyHeader = 0.5, 3, "X-Forwarded-For" })
	from := func(addr string) http.Header { return http.Header{"X-Forwarded-For": {"198.51.100.1, " + addr}} }
	bad := url.Values{"grant_type": {"refresh_token"}, "refresh_token": {"x"}}
	for i := 0; i < 3; i++ {
		if st, _ := h.form("/oauth2/token", bad, from("203.0.113.1")); st != http.StatusBadRequest {
			t.Fatalf("request %d within the burst: %d", i, st)
		}
	}
	req, err := http.NewRequest("POST", h.url+"/oauth2/token", nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("X-Forwarded-For", "203.0.113.1")
	resp, err := h.client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusTooManyRequests || resp.Header.Get("Retry-After") != "2" {
		t.Fatalf("over the limit: %d, Retry-After %q", resp.StatusCode, resp.Header.Get("Retry-After"))
	}
	if st, body := h.form("/oauth2/revoke", url.Values{"token": {"x"}}, from("203.0.113.1")); st != http.StatusTooManyRequests || body["error"] == nil {
		t.Fatalf("revoke from the same address: %d %v", st, body)
	}
	// Another client address has its own budget; admin endpoints are not limited.
	if st, _ := h.form("/oauth2/token", bad, from("203.0.113.2")); st != http.StatusBadRequest {
		t.Fatalf("another address: %d", st)
	}
	for i := 0; i < 10; i++ {
		h.issue(`{"user_id":"a"}`)
	}
}

func TestNoRateLimitByDefault(t *testing.T) {
	h := boot(t, "", nil)
	for i := 0; i < 50; i++ {
		if st, _ := h.refresh("x"); st != http.StatusBadRequest {
			t.Fatalf("request %d: %d", i, st)
		}
	}
}
