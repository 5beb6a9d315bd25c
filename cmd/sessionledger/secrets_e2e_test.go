package main

import (
	"encoding/base64"
	"encoding/json"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/sessionledger/sessionledger/secrets"
)

// TestNoSecretInLogsOrStream runs every kind of action, then scans the log and
// every subject, header and body in the stream for tokens and key material.
func TestNoSecretInLogsOrStream(t *testing.T) {
	h := boot(t, "", nil)
	var secretsSeen []string
	keep := func(s session) session {
		secretsSeen = append(secretsSeen, s.Refresh, s.Access)
		return s
	}
	s0 := keep(h.issue(`{"user_id":"alice@example.com","claims":{"role":"x"},"device":{"ip":"203.0.113.1","user_agent":"UA","name":"n"}}`))
	s1 := keep(h.mustRefresh(s0.Refresh))
	keep(h.mustRefresh(s0.Refresh)) // tolerated retry
	s2 := keep(h.mustRefresh(s1.Refresh))
	h.wantInvalidGrant(s0.Refresh) // reuse
	h.wantInvalidGrant(s2.Refresh)
	o := keep(h.issue(`{"user_id":"alice@example.com"}`))
	h.mustForm("/oauth2/introspect", url.Values{"token": {o.Refresh}}, adminHeader, http.StatusOK)
	h.mustForm("/oauth2/revoke", url.Values{"token": {o.Refresh}}, nil, http.StatusOK)
	keep(h.issue(`{"user_id":"bob"}`))
	h.mustAdmin("DELETE", "/v1/users/bob/sessions", "", http.StatusNoContent)
	h.mustAdmin("POST", "/v1/users/bob/deactivate", "", http.StatusNoContent)
	h.wantInvalidGrant("slrt_garbage")

	// Key material: every key in keys.json, raw and encoded.
	raw, err := os.ReadFile(filepath.Join(h.dataDir, secrets.KeysFile))
	if err != nil {
		t.Fatal(err)
	}
	var keys map[string]any
	if err := json.Unmarshal(raw, &keys); err != nil {
		t.Fatal(err)
	}
	for name, v := range keys {
		if b64, ok := v.(string); ok && len(b64) > 20 {
			secretsSeen = append(secretsSeen, b64)
			if b, err := base64.StdEncoding.DecodeString(b64); err == nil {
				secretsSeen = append(secretsSeen, base64.RawURLEncoding.EncodeToString(b), string(b))
			}
		} else if name != "version" && !strings.HasSuffix(name, "_key_id") {
			t.Fatalf("unexpected key entry %s", name)
		}
	}
	secretsSeen = append(secretsSeen, testAdminToken)

	var haystack strings.Builder
	haystack.WriteString(h.logs.String())
	for _, m := range h.streamMessages() {
		haystack.WriteString(m.Subject)
		for k, v := range m.Header {
			haystack.WriteString(k + ":" + strings.Join(v, ","))
		}
		haystack.Write(m.Data)
	}
	all := haystack.String()
	for _, s := range secretsSeen {
		if s == "" {
			t.Fatal("a secret to look for is empty")
		}
		// Also look for a token's secret part alone.
		needle := strings.TrimPrefix(s, "slrt_")
		if strings.Contains(all, needle) {
			t.Fatalf("a token or key (%d chars) appears in the log or stream", len(s))
		}
	}
	for _, m := range h.streamMessages() {
		if strings.Contains(m.Subject, "alice") || strings.Contains(m.Subject, "bob") {
			t.Fatalf("subject %q carries a user id", m.Subject)
		}
	}
	if !strings.Contains(all, `"route":"/oauth2/token"`) {
		t.Fatal("the log holds no access-log lines: the scan looked at nothing")
	}
}
