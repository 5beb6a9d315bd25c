package main

import (
	"context"
	"net/http"
	"net/url"
	"strings"
	"testing"

	"golang.org/x/oauth2"
	"golang.org/x/oauth2/clientcredentials"

	"github.com/sessionledger/sessionledger/transmit"
)

// TestReceiverClientCredentials: an SSF receiver is an OAuth 2.0 client of
// the token endpoint (the CAEP Interoperability Profile's scheme,
// urn:ietf:rfc:6749): golang.org/x/oauth2's client credentials flow, with
// the receiver's id and token, gets an access token for the scopes asked,
// which manages streams as far as its scopes go; wrong credentials, a
// scope the receiver lacks, a forged or a deleted receiver's token are
// refused.
func TestReceiverClientCredentials(t *testing.T) {
	h := boot(t, "", nil)
	meta := h.mustAdmin("GET", "/.well-known/oauth-authorization-server", "", http.StatusOK)
	if g, _ := meta["grant_types_supported"].([]any); len(g) != 2 || g[1] != "client_credentials" {
		t.Fatalf("authorization server metadata: %v", meta)
	}
	ssf := h.mustAdmin("GET", transmit.MetadataPath, "", http.StatusOK)
	if schemes, _ := ssf["authorization_schemes"].([]any); len(schemes) == 0 || schemes[0].(map[string]any)["spec_urn"] != "urn:ietf:rfc:6749" {
		t.Fatalf("SSF metadata authorization_schemes: %v", ssf["authorization_schemes"])
	}
	r := h.mustAdmin("POST", "/v1/ssf/receivers", `{"name":"oauth","audience":"https://rp.example"}`, http.StatusCreated)
	id, secret := r["id"].(string), r["token"].(string)

	cfg := clientcredentials.Config{ClientID: id, ClientSecret: secret, TokenURL: h.url + "/oauth2/token", AuthStyle: oauth2.AuthStyleInHeader}
	tok, err := cfg.Token(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(tok.AccessToken, transmit.AccessTokenPrefix) || tok.TokenType != "Bearer" || tok.Extra("scope") != "ssf.manage ssf.read" || tok.Expiry.IsZero() {
		t.Fatalf("token %+v scope %v", tok, tok.Extra("scope"))
	}
	client := cfg.Client(context.Background())
	resp, err := client.Post(h.url+transmit.ConfigurationPath, "application/json", strings.NewReader(`{"delivery":{"method":"urn:ietf:rfc:8936"}}`))
	if err != nil || resp.StatusCode != http.StatusCreated {
		t.Fatalf("create a stream with the access token: %v %v", resp, err)
	}
	resp.Body.Close()

	// A read-only token (client_secret_post this time) reads but cannot change.
	read := clientcredentials.Config{ClientID: id, ClientSecret: secret, TokenURL: h.url + "/oauth2/token", Scopes: []string{"ssf.read"}, AuthStyle: oauth2.AuthStyleInParams}
	rtok, err := read.Token(context.Background())
	if err != nil || rtok.Extra("scope") != "ssf.read" {
		t.Fatalf("read-only token: %v %v", rtok, err)
	}
	bearer := http.Header{"Authorization": {"Bearer " + rtok.AccessToken}}
	if resp := h.raw("GET", transmit.ConfigurationPath, "", "", bearer); resp.status != http.StatusOK || !strings.Contains(resp.body, "stream_id") {
		t.Fatalf("read with ssf.read: %d %s", resp.status, resp.body)
	}
	if st, _ := h.do("POST", transmit.ConfigurationPath, "application/json", `{"delivery":{"method":"urn:ietf:rfc:8936"}}`, bearer); st != http.StatusForbidden {
		t.Fatalf("create with ssf.read: %d, want 403", st)
	}

	other := h.mustAdmin("POST", "/v1/ssf/receivers", `{"name":"other","audience":"https://other.example"}`, http.StatusCreated)
	for _, c := range []struct {
		name   string
		values url.Values
		want   int
		code   string
	}{
		{"wrong secret", url.Values{"client_id": {id}, "client_secret": {strings.TrimSuffix(secret, secret[len(secret)-2:]) + "AA"}}, 401, "invalid_client"},
		{"another receiver's token", url.Values{"client_id": {id}, "client_secret": {other["token"].(string)}}, 401, "invalid_client"},
		{"the admin token", url.Values{"client_id": {id}, "client_secret": {testAdminToken}}, 401, "invalid_client"},
		{"no secret", url.Values{"client_id": {id}}, 400, "invalid_request"},
		{"a scope it lacks", url.Values{"client_id": {id}, "client_secret": {secret}, "scope": {"ssf.admin"}}, 400, "invalid_scope"},
	} {
		c.values.Set("grant_type", "client_credentials")
		st, out := h.form("/oauth2/token", c.values, nil)
		if st != c.want || out["error"] != c.code {
			t.Errorf("%s: %d %v, want %d %s", c.name, st, out, c.want, c.code)
		}
		for _, v := range out {
			if s, ok := v.(string); ok && (strings.Contains(s, secret) || strings.Contains(s, testAdminToken)) {
				t.Errorf("%s: a secret is echoed: %v", c.name, out)
			}
		}
	}
	// A forged token: another expiry under the same tag.
	parts := strings.Split(tok.AccessToken, ".")
	parts[1] = "9999999999"
	if st, _ := h.do("GET", transmit.ConfigurationPath, "", "", http.Header{"Authorization": {"Bearer " + strings.Join(parts, ".")}}); st != http.StatusUnauthorized {
		t.Fatalf("a token with a changed expiry: %d, want 401", st)
	}
	// Deleting the receiver ends its access tokens at once.
	h.mustAdmin("DELETE", "/v1/ssf/receivers/"+id, "", http.StatusNoContent)
	if st, _ := h.do("GET", transmit.ConfigurationPath, "", "", bearer); st != http.StatusUnauthorized {
		t.Fatalf("a deleted receiver's access token: %d, want 401", st)
	}
	if strings.Contains(h.logs.String(), tok.AccessToken) || strings.Contains(h.logs.String(), secret) {
		t.Fatal("a receiver's token is in the log")
	}
}
