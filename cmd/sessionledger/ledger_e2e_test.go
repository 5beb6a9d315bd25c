package main

import (
	"context"
	"crypto/ed25519"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"golang.org/x/oauth2"

	"github.com/sessionledger/sessionledger/domain"
)

func TestOAuth2ClientLibraryRefreshes(t *testing.T) {
	h := boot(t, "", nil)
	s := h.issue(`{"user_id":"alice"}`)
	for _, style := range []oauth2.AuthStyle{oauth2.AuthStyleAutoDetect, oauth2.AuthStyleInParams, oauth2.AuthStyleInHeader} {
		conf := &oauth2.Config{ClientID: "web-app", Endpoint: oauth2.Endpoint{TokenURL: h.url + "/oauth2/token", AuthStyle: style}}
		ctx := context.WithValue(context.Background(), oauth2.HTTPClient, h.client) // the harness's client, whose connections it closes
		src := conf.TokenSource(ctx, &oauth2.Token{RefreshToken: s.Refresh, Expiry: time.Now().Add(-time.Minute)})
		tok, err := src.Token()
		if err != nil {
			t.Fatalf("auth style %d: golang.org/x/oauth2 refresh: %v", style, err)
		}
		if tok.AccessToken == "" || tok.RefreshToken == "" || tok.RefreshToken == s.Refresh || tok.TokenType != "Bearer" {
			t.Fatalf("auth style %d: token %+v", style, tok)
		}
		if tok.Extra("session_id") != s.ID {
			t.Fatalf("session_id = %v, want %s", tok.Extra("session_id"), s.ID)
		}
		if d := time.Until(tok.Expiry); d < 59*time.Minute || d > 61*time.Minute {
			t.Fatalf("access token expiry in %v, want the consumer preset's 1h", d)
		}
		s.Refresh = tok.RefreshToken
	}
}

// jwksKeys fetches the JWKS and returns its Ed25519 keys by kid.
func jwksKeys(t *testing.T, h *ledgerHarness) map[string]ed25519.PublicKey {
	t.Helper()
	st, body := h.do("GET", "/.well-known/jwks.json", "", "", nil)
	if st != http.StatusOK {
		t.Fatalf("jwks: %d", st)
	}
	keys := map[string]ed25519.PublicKey{}
	for _, k := range body["keys"].([]any) {
		m := k.(map[string]any)
		if m["kid"] == "" || m["alg"] != "EdDSA" || m["use"] != "sig" || m["kty"] != "OKP" || m["crv"] != "Ed25519" {
			t.Fatalf("jwks entry %v lacks kid/alg/use", m)
		}
		x, err := base64.RawURLEncoding.DecodeString(m["x"].(string))
		if err != nil {
			t.Fatal(err)
		}
		keys[m["kid"].(string)] = x
	}
	return keys
}

func verifyAccessToken(t *testing.T, keys map[string]ed25519.PublicKey, token string) (jwt.MapClaims, map[string]any) {
	t.Helper()
	claims := jwt.MapClaims{}
	parsed, err := jwt.ParseWithClaims(token, claims, func(tok *jwt.Token) (any, error) {
		return keys[tok.Header["kid"].(string)], nil
	}, jwt.WithValidMethods([]string{"EdDSA"}), jwt.WithIssuer("http://ledger.test"), jwt.WithAudience("http://ledger.test"))
	if err != nil {
		t.Fatalf("access token does not verify with the JWKS: %v", err)
	}
	return claims, parsed.Header
}

func TestAccessTokenClaimsAndJWKS(t *testing.T) {
	h := boot(t, "", nil)
	keys := jwksKeys(t, h)
	s := h.issue(`{"user_id":"alice","claims":{"role":"admin","org":{"id":7}}}`)
	for i, tok := range []string{s.Access, h.mustRefresh(s.Refresh).Access} {
		claims, header := verifyAccessToken(t, keys, tok)
		if header["typ"] != "at+jwt" || header["alg"] != "EdDSA" || header["kid"] == nil {
			t.Fatalf("token %d header %v", i, header)
		}
		for _, c := range []string{"iss", "sub", "aud", "exp", "iat", "jti", "sid"} {
			if _, ok := claims[c]; !ok {
				t.Fatalf("token %d lacks claim %s: %v", i, c, claims)
			}
		}
		if claims["sub"] != "alice" || claims["sid"] != s.ID || claims["role"] != "admin" || claims["org"].(map[string]any)["id"] != 7.0 {
			t.Fatalf("token %d claims %v (custom claims must survive rotation)", i, claims)
		}
		exp, _ := claims.GetExpirationTime()
		iat, _ := claims.GetIssuedAt()
		if exp.Sub(iat.Time) != time.Hour {
			t.Fatalf("token %d lives %v, want 1h", i, exp.Sub(iat.Time))
		}
	}
	for _, reserved := range []string{"sub", "sid", "exp", "iss"} {
		st, body := h.admin("POST", "/v1/sessions", fmt.Sprintf(`{"user_id":"alice","claims":{%q:"x"}}`, reserved))
		if st != http.StatusBadRequest || !strings.Contains(fmt.Sprint(body["detail"]), reserved) {
			t.Fatalf("reserved claim %s: %d %v", reserved, st, body)
		}
	}
	st, meta := h.do("GET", "/.well-known/oauth-authorization-server", "", "", nil)
	if st != http.StatusOK || meta["issuer"] != "http://ledger.test" || meta["token_endpoint"] != "http://ledger.test/oauth2/token" ||
		meta["revocation_endpoint"] != "http://ledger.test/oauth2/revoke" || meta["introspection_endpoint"] != "http://ledger.test/oauth2/introspect" ||
		meta["jwks_uri"] != "http://ledger.test/.well-known/jwks.json" {
		t.Fatalf("metadata %d %v", st, meta)
	}
}

func TestReuseRevokesTheWholeSession(t *testing.T) {
	h := boot(t, "", nil)
	s0 := h.issue(`{"user_id":"alice"}`)
	s1 := h.mustRefresh(s0.Refresh)
	s2 := h.mustRefresh(s1.Refresh)
	if !h.active(s2.Access) || !h.active(s2.Refresh) {
		t.Fatal("fresh tokens are not active")
	}
	h.wantInvalidGrant(s0.Refresh) // two rotations old: reuse
	h.wantInvalidGrant(s2.Refresh) // the family is revoked
	h.wantInvalidGrant(s1.Refresh)
	if h.active(s2.Access) || h.active(s2.Refresh) {
		t.Fatal("tokens of a reuse-revoked session still introspect as active")
	}
	got := h.history(s0.ID)
	want := []string{"session.issued", "session.rotated", "session.rotated", "session.reused", "session.revoked"}
	if !slices.Equal(got, want) {
		t.Fatalf("history %v, want %v", got, want)
	}
	st, body := h.admin("GET", "/v1/sessions/"+s0.ID+"/events", "")
	events := body["events"].([]any)
	reused := events[3].(map[string]any)["data"].(map[string]any)
	revoked := events[4].(map[string]any)["data"].(map[string]any)
	if st != 200 || reused["outcome"] != "family_revoked" || revoked["reason"] != "reuse_detected" {
		t.Fatalf("reuse events: %v / %v", reused, revoked)
	}
}

func TestConcurrentRefreshesGetOneSuccessor(t *testing.T) {
	h := boot(t, "", nil)
	s := h.issue(`{"user_id":"alice"}`)
	const n = 16
	var wg sync.WaitGroup
	results := make([]session, n)
	statuses := make([]int, n)
	start := make(chan struct{})
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			<-start
			st, body := h.refresh(s.Refresh)
			statuses[i], results[i] = st, toSession(body)
		}(i)
	}
	close(start)
	wg.Wait()
	for i := range results {
		if statuses[i] != http.StatusOK {
			t.Fatalf("refresh %d: status %d", i, statuses[i])
		}
		if results[i].Refresh != results[0].Refresh {
			t.Fatalf("refresh %d got a different successor: the family forked", i)
		}
	}
	types := h.history(s.ID)
	if count(types, "session.rotated") != 1 || count(types, "session.reused") != n-1 || count(types, "session.revoked") != 0 {
		t.Fatalf("history after %d concurrent refreshes: %v", n, types)
	}
	next := h.mustRefresh(results[0].Refresh)
	if next.Refresh == results[0].Refresh {
		t.Fatal("successor did not rotate")
	}
}

func TestForgedTokensRevokeNothing(t *testing.T) {
	h := boot(t, "", nil)
	s0 := h.issue(`{"user_id":"alice"}`)
	s1 := h.mustRefresh(s0.Refresh)
	tok, _ := domain.ParseRefreshToken(s1.Refresh)

	wrongBytes := []byte(s1.Refresh)
	i := len(domain.RefreshTokenPrefix) + 60 // inside the secret
	wrongBytes[i] = map[bool]byte{true: 'B', false: 'A'}[wrongBytes[i] == 'A']
	oldLooking := tok // generation 0 of this session, wrong secret: must not count as reuse
	oldLooking.Generation = 0
	oldLooking.Secret[3] ^= 0xff
	future := tok
	future.Generation = 5

	before := h.lastSeq()
	for name, forged := range map[string]string{
		"right prefix and length, wrong bytes": string(wrongBytes),
		"old generation, wrong secret":         oldLooking.Encode(),
		"future generation":                    future.Encode(),
		"garbage":                              "not-a-token",
		"access token":                         s1.Access,
		"session id":                           s1.ID,
		"admin token":                          testAdminToken,
	} {
		st, body := h.refresh(forged)
		if st != http.StatusBadRequest || body["error"] != "invalid_grant" {
			t.Errorf("%s: status %d %v, want 400 invalid_grant", name, st, body)
		}
	}
	if after := h.lastSeq(); after != before {
		t.Fatalf("forged tokens appended %d events", after-before)
	}
	h.mustRefresh(s1.Refresh) // the genuine token still works
}

func TestSignOut(t *testing.T) {
	h := boot(t, "", nil)
	s := h.issue(`{"user_id":"alice"}`)
	for _, tok := range []string{"unknown", s.ID, strings.Repeat("x", 300)} {
		if st, body := h.form("/oauth2/revoke", url.Values{"token": {tok}}, nil); st != http.StatusOK {
			t.Fatalf("revoke of an unknown token: %d %v, want 200", st, body)
		}
	}
	if !h.active(s.Refresh) {
		t.Fatal("revoking unknown tokens ended a session")
	}
	if st, _ := h.form("/oauth2/revoke", url.Values{"token": {s.Refresh}}, nil); st != http.StatusOK {
		t.Fatalf("revoke: %d", st)
	}
	h.wantInvalidGrant(s.Refresh)
	if h.active(s.Access) {
		t.Fatal("access token of a signed-out session is active")
	}
	if got := h.history(s.ID); got[len(got)-1] != "session.revoked" {
		t.Fatalf("history %v", got)
	}
	// An access token signs its session out too.
	s2 := h.issue(`{"user_id":"alice"}`)
	h.mustForm("/oauth2/revoke", url.Values{"token": {s2.Access}, "token_type_hint": {"access_token"}}, nil, http.StatusOK)
	h.wantInvalidGrant(s2.Refresh)
}

func TestAdminRevocations(t *testing.T) {
	h := boot(t, "", nil)
	a := h.issue(`{"user_id":"bob","device":{"ip":"203.0.113.7","user_agent":"Firefox","name":"laptop"}}`)
	b := h.issue(`{"user_id":"bob","policy":"mobile","device":{"name":"phone"}}`)

	st, body := h.admin("GET", "/v1/users/bob/sessions", "")
	list := body["sessions"].([]any)
	if st != http.StatusOK || len(list) != 2 {
		t.Fatalf("list: %d %v", st, body)
	}
	first := list[0].(map[string]any)
	dev := first["device"].(map[string]any)
	if first["session_id"] != a.ID || dev["ip"] != "203.0.113.7" || dev["user_agent"] != "Firefox" || dev["name"] != "laptop" ||
		first["created_at"] == nil || first["last_active_at"] == nil || first["expires_at"] == nil {
		t.Fatalf("first session %v", first)
	}
	if list[1].(map[string]any)["policy"].(map[string]any)["name"] != "mobile" {
		t.Fatalf("second session %v", list[1])
	}

	// Revoke one.
	if st, _ := h.admin("DELETE", "/v1/sessions/"+a.ID, ""); st != http.StatusNoContent {
		t.Fatalf("revoke session: %d", st)
	}
	h.wantInvalidGrant(a.Refresh)
	if st, _ := h.admin("DELETE", "/v1/sessions/"+a.ID, ""); st != http.StatusNotFound {
		t.Fatalf("revoke revoked session: %d, want 404", st)
	}
	if st, body := h.admin("DELETE", "/v1/sessions/01JD3Z9V6Q4Q4WJ5X7K8M9N0PA", ""); st != http.StatusNotFound || body["status"] != 404.0 {
		t.Fatalf("revoke unknown session: %d %v", st, body)
	}

	// Revoke all: one cut-off event.
	c := h.issue(`{"user_id":"bob"}`)
	before := h.eventTypes()
	if st, _ := h.admin("DELETE", "/v1/users/bob/sessions", ""); st != http.StatusNoContent {
		t.Fatalf("revoke all: %d", st)
	}
	after := h.eventTypes()
	if len(after) != len(before)+1 || after[len(after)-1] != "user.sessions_revoked" {
		t.Fatalf("revoke-all appended %v", after[len(before):])
	}
	h.wantInvalidGrant(b.Refresh)
	h.wantInvalidGrant(c.Refresh)
	if h.active(c.Access) {
		t.Fatal("access token active after revoke-all")
	}
	if got := h.history(c.ID); got[len(got)-1] != "user.sessions_revoked" {
		t.Fatalf("history of a session ended by revoke-all: %v", got)
	}
	d := h.issue(`{"user_id":"bob"}`) // issued after the cut-off
	h.mustRefresh(d.Refresh)
	if sessions := h.userSessions("bob"); len(sessions) != 1 || sessions[0]["session_id"] != d.ID {
		t.Fatalf("sessions after revoke-all and a new login: %v", sessions)
	}
}

func TestDeactivateAndReactivate(t *testing.T) {
	h := boot(t, "", nil)
	s := h.issue(`{"user_id":"carol"}`)
	if st, _ := h.admin("POST", "/v1/users/carol/deactivate", ""); st != http.StatusNoContent {
		t.Fatalf("deactivate: %d", st)
	}
	h.wantInvalidGrant(s.Refresh)
	st, body := h.admin("POST", "/v1/sessions", `{"user_id":"carol"}`)
	if st != http.StatusConflict || body["title"] == nil {
		t.Fatalf("issue to a deactivated user: %d %v", st, body)
	}
	before := h.lastSeq()
	h.mustAdmin("POST", "/v1/users/carol/deactivate", "", http.StatusNoContent) // again: nothing to record
	if h.lastSeq() != before {
		t.Fatal("deactivating a deactivated user appended an event")
	}
	if st, _ := h.admin("POST", "/v1/users/carol/reactivate", ""); st != http.StatusNoContent {
		t.Fatalf("reactivate: %d", st)
	}
	h.mustRefresh(h.issue(`{"user_id":"carol"}`).Refresh)
	types := h.eventTypes()
	if count(types, "user.deactivated") != 1 || count(types, "user.reactivated") != 1 {
		t.Fatalf("events %v", types)
	}
}

func TestIntrospect(t *testing.T) {
	h := boot(t, "", nil)
	s0 := h.issue(`{"user_id":"dave"}`)
	s1 := h.mustRefresh(s0.Refresh)
	st, body := h.form("/oauth2/introspect", url.Values{"token": {s1.Refresh}}, adminHeader)
	if st != 200 || body["active"] != true || body["token_type"] != "refresh_token" || body["sub"] != "dave" || body["sid"] != s1.ID || body["exp"] == nil {
		t.Fatalf("refresh introspection %d %v", st, body)
	}
	st, body = h.form("/oauth2/introspect", url.Values{"token": {s1.Access}}, adminHeader)
	if st != 200 || body["active"] != true || body["token_type"] != "access_token" || body["jti"] == nil {
		t.Fatalf("access introspection %d %v", st, body)
	}
	if h.active(s0.Refresh) {
		t.Fatal("a rotated-out refresh token is active")
	}
	for _, junk := range []string{"x", s1.ID, s1.Access + "x"} {
		if h.active(junk) {
			t.Fatalf("%q is active", junk)
		}
	}
	if st, _ := h.form("/oauth2/introspect", url.Values{"token": {s1.Refresh}}, nil); st != http.StatusUnauthorized {
		t.Fatalf("introspection without admin token: %d", st)
	}
}

func TestRevocationReachesSubscribers(t *testing.T) {
	h := boot(t, "", nil)
	nc := h.nats()
	sub, err := nc.SubscribeSync("ledger.*.*.revoked")
	if err != nil {
		t.Fatal(err)
	}
	users, err := nc.SubscribeSync("ledger.*.user.>")
	if err != nil {
		t.Fatal(err)
	}
	if err := nc.Flush(); err != nil { // the server knows both subscriptions before anything is revoked
		t.Fatal(err)
	}
	s := h.issue(`{"user_id":"erin"}`)
	h.mustAdmin("DELETE", "/v1/sessions/"+s.ID, "", http.StatusNoContent)
	msg, err := sub.NextMsg(time.Second)
	if err != nil {
		t.Fatalf("no revocation on ledger.*.*.revoked: %v", err)
	}
	var e struct {
		Subject string `json:"subject"`
		Data    struct {
			Reason, Actor string
		} `json:"data"`
	}
	if err := json.Unmarshal(msg.Data, &e); err != nil {
		t.Fatal(err)
	}
	if e.Subject != s.ID || e.Data.Reason != domain.ReasonAdminRevoked || e.Data.Actor != domain.ActorAdmin {
		t.Fatalf("revocation event %s", msg.Data)
	}
	if strings.Contains(msg.Subject, "erin") {
		t.Fatalf("subject %q carries the user id", msg.Subject)
	}
	h.mustAdmin("DELETE", "/v1/users/erin/sessions", "", http.StatusNoContent)
	if m, err := users.NextMsg(time.Second); err != nil || !strings.HasSuffix(m.Subject, ".user.sessions_revoked") {
		t.Fatalf("user event: %v %v", m, err)
	}
}

// TestRestartKeepsState restarts a ledger that has written no snapshot, so
// the new one replays the whole stream: the live session is listed and
// refreshes, the revoked one stays refused, and a refresh retried after the
// restart (its response lost) gets the same successor as before.
func TestRestartKeepsState(t *testing.T) {
	dir := t.TempDir()
	h := boot(t, dir, nil)
	live := h.issue(`{"user_id":"frank","device":{"name":"tablet"}}`)
	live1 := h.mustRefresh(live.Refresh)
	revoked := h.issue(`{"user_id":"frank"}`)
	h.mustAdmin("DELETE", "/v1/sessions/"+revoked.ID, "", http.StatusNoContent)
	if seq := h.m.snapshotSeq(t); seq != 0 {
		t.Fatalf("a snapshot covers %d events: the restart would not replay the whole stream", seq)
	}
	h.close()

	h2 := boot(t, dir, nil)
	if sessions := h2.userSessions("frank"); len(sessions) != 1 || sessions[0]["session_id"] != live.ID ||
		sessions[0]["device"].(map[string]any)["name"] != "tablet" {
		t.Fatalf("sessions after restart: %v", sessions)
	}
	h2.wantInvalidGrant(revoked.Refresh)
	if retry := h2.mustRefresh(live.Refresh); retry.Refresh != live1.Refresh {
		t.Fatal("a retry after restart got a different successor")
	}
	h2.mustRefresh(live1.Refresh)
}
