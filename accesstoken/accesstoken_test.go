package accesstoken

import (
	"crypto/ed25519"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/sessionledger/sessionledger/jwk"
)

var now = time.Date(2026, 11, 22, 10, 0, 0, 0, time.UTC)

func newSigner(t testing.TB) (*Signer, ed25519.PrivateKey) {
	t.Helper()
	_, priv, _ := ed25519.GenerateKey(nil)
	s, err := NewSigner("https://ledger.example", "api", NewEd25519Key(priv))
	if err != nil {
		t.Fatal(err)
	}
	return s, priv
}

func claims() Claims {
	return Claims{Subject: "alice", SessionID: "S1", SessionSeq: 42, ClientID: "web-app", ID: "J1", IssuedAt: now, ExpiresAt: now.Add(time.Hour), Custom: json.RawMessage(`{"role":"admin"}`)}
}

func TestSignAndVerify(t *testing.T) {
	s, _ := newSigner(t)
	tok, err := s.Sign(claims())
	if err != nil {
		t.Fatal(err)
	}
	v, err := s.Verify(tok, now.Add(time.Minute))
	if err != nil {
		t.Fatal(err)
	}
	if v.Subject != "alice" || v.SessionID != "S1" || v.SessionSeq != 42 || v.ClientID != "web-app" || v.ID != "J1" || !v.ExpiresAt.Equal(now.Add(time.Hour)) {
		t.Fatalf("verified %+v", v)
	}
	payload, _ := jwt.NewParser().DecodeSegment(strings.Split(tok, ".")[1])
	var m map[string]any
	_ = json.Unmarshal(payload, &m)
	if m["role"] != "admin" || m["sid"] != "S1" || m["sid_seq"] != 42.0 || m["client_id"] != "web-app" {
		t.Fatalf("payload %s", payload)
	}
	if _, err := s.Verify(tok, now.Add(time.Hour)); !errors.Is(err, ErrInvalid) {
		t.Fatalf("expired token at exp: %v", err)
	}
}

// forge signs arbitrary header and claims with method and key.
func forge(t testing.TB, method jwt.SigningMethod, key any, header map[string]any, c jwt.MapClaims) string {
	t.Helper()
	tok := jwt.NewWithClaims(method, c)
	for k, v := range header {
		tok.Header[k] = v
	}
	str, err := tok.SignedString(key)
	if err != nil {
		t.Fatal(err)
	}
	return str
}

func TestVerifyRejects(t *testing.T) {
	s, priv := newSigner(t)
	kid := NewEd25519Key(priv).ID
	good := jwt.MapClaims{"iss": "https://ledger.example", "aud": "api", "sub": "alice", "sid": "S1", "iat": now.Unix(), "exp": now.Add(time.Hour).Unix()}
	with := func(k string, v any) jwt.MapClaims {
		c := jwt.MapClaims{}
		for a, b := range good {
			c[a] = b
		}
		if v == nil {
			delete(c, k)
		} else {
			c[k] = v
		}
		return c
	}
	hdr := map[string]any{"typ": TokenType, "kid": kid}
	_, otherPriv, _ := ed25519.GenerateKey(nil)
	none, _ := jwt.NewWithClaims(jwt.SigningMethodNone, good).SignedString(jwt.UnsafeAllowNoneSignatureType)
	pub := priv.Public().(ed25519.PublicKey)
	for name, tok := range map[string]string{
		"control (must verify)":     "",
		"alg none":                  none,
		"HS256 with the public key": forge(t, jwt.SigningMethodHS256, []byte(pub), hdr, good),
		"other key, same kid":       forge(t, jwt.SigningMethodEdDSA, otherPriv, hdr, good),
		"unknown kid":               forge(t, jwt.SigningMethodEdDSA, priv, map[string]any{"typ": TokenType, "kid": "nope"}, good),
		"path-like kid":             forge(t, jwt.SigningMethodEdDSA, priv, map[string]any{"typ": TokenType, "kid": "../../keys.json"}, good),
		"no typ":                    forge(t, jwt.SigningMethodEdDSA, priv, map[string]any{"kid": kid}, good),
		"typ JWT":                   forge(t, jwt.SigningMethodEdDSA, priv, map[string]any{"typ": "JWT", "kid": kid}, good),
		"crit (RFC 7797 b64)":       forge(t, jwt.SigningMethodEdDSA, priv, map[string]any{"typ": TokenType, "kid": kid, "crit": []string{"b64"}, "b64": true}, good),
		"wrong iss":                 forge(t, jwt.SigningMethodEdDSA, priv, hdr, with("iss", "https://evil")),
		"wrong aud":                 forge(t, jwt.SigningMethodEdDSA, priv, hdr, with("aud", "other")),
		"no exp":                    forge(t, jwt.SigningMethodEdDSA, priv, hdr, with("exp", nil)),
		"no sid":                    forge(t, jwt.SigningMethodEdDSA, priv, hdr, with("sid", nil)),
		"issued in the future":      forge(t, jwt.SigningMethodEdDSA, priv, hdr, with("iat", now.Add(time.Hour).Unix())),
		"sid_seq not a number":      forge(t, jwt.SigningMethodEdDSA, priv, hdr, with("sid_seq", "7")),
		"sid_seq zero":              forge(t, jwt.SigningMethodEdDSA, priv, hdr, with("sid_seq", 0)),
		"sid_seq fractional":        forge(t, jwt.SigningMethodEdDSA, priv, hdr, with("sid_seq", 7.5)),
		"sid_seq negative":          forge(t, jwt.SigningMethodEdDSA, priv, hdr, with("sid_seq", -7)),
		"sid_seq beyond 2^53":       forge(t, jwt.SigningMethodEdDSA, priv, hdr, with("sid_seq", 1e17)),
		"client_id not a string":    forge(t, jwt.SigningMethodEdDSA, priv, hdr, with("client_id", 7)),
		"client_id empty":           forge(t, jwt.SigningMethodEdDSA, priv, hdr, with("client_id", "")),
		"garbage":                   "a.b.c",
	} {
		if name == "control (must verify)" {
			if _, err := s.Verify(forge(t, jwt.SigningMethodEdDSA, priv, hdr, good), now); err != nil {
				t.Fatalf("control token rejected: %v", err)
			}
			continue
		}
		if _, err := s.Verify(tok, now); !errors.Is(err, ErrInvalid) {
			t.Errorf("%s: accepted (err %v)", name, err)
		}
	}
}

func TestJWKS(t *testing.T) {
	s, priv := newSigner(t)
	var set struct {
		Keys []map[string]string `json:"keys"`
	}
	if err := json.Unmarshal(s.JWKS(), &set); err != nil || len(set.Keys) != 1 {
		t.Fatalf("jwks %s: %v", s.JWKS(), err)
	}
	k := set.Keys[0]
	if k["kid"] != NewEd25519Key(priv).ID || k["alg"] != "EdDSA" || k["use"] != "sig" || k["kty"] != "OKP" || k["crv"] != "Ed25519" {
		t.Fatalf("jwk %v", k)
	}
	if strings.Contains(string(s.JWKS()), `"d"`) {
		t.Fatal("the JWKS publishes a private key")
	}
}

func BenchmarkSign(b *testing.B) {
	_, priv, _ := ed25519.GenerateKey(nil)
	s, _ := NewSigner("https://ledger.example", "api", NewEd25519Key(priv))
	c := claims()
	b.ReportAllocs()
	for i := 0; i < b.N; i++ {
		if _, err := s.Sign(c); err != nil {
			b.Fatal(err)
		}
	}
}

func FuzzVerify(f *testing.F) {
	s, priv := newSigner(f)
	kid := NewEd25519Key(priv).ID
	good, _ := s.Sign(claims())
	f.Add(good)
	f.Add(good[:len(good)-2])
	f.Add(forge(f, jwt.SigningMethodHS256, []byte(priv.Public().(ed25519.PublicKey)), map[string]any{"typ": TokenType, "kid": kid}, jwt.MapClaims{"sub": "x"}))
	none, _ := jwt.NewWithClaims(jwt.SigningMethodNone, jwt.MapClaims{"sub": "x"}).SignedString(jwt.UnsafeAllowNoneSignatureType)
	f.Add(none)
	f.Add("a.b.c")
	for _, v := range malleated(f, genuineWithTrailingBits(f, s)) {
		f.Add(v.tok)
	}
	f.Fuzz(func(t *testing.T, tok string) {
		v, err := s.Verify(tok, now)
		if err != nil {
			if !errors.Is(err, ErrInvalid) {
				t.Fatalf("error %v is not ErrInvalid", err)
			}
			return
		}
		if tok != good || v.Subject != "alice" {
			t.Fatalf("a token other than the one signed verified: %q", tok)
		}
	})
}

// TestParseRules checks what Parse adds to Verify for other services: the
// custom claims (without any reserved one), the leeway, and the lifetime cap.
func TestParseRules(t *testing.T) {
	s, priv := newSigner(t)
	pub := priv.Public().(ed25519.PublicKey)
	key := func(string) (jwk.PublicKey, error) { return jwk.PublicKey{Alg: EdDSA, Key: pub}, nil }
	tok, err := s.Sign(claims())
	if err != nil {
		t.Fatal(err)
	}
	rules := Rules{Issuer: "https://ledger.example", Audience: "api"}
	v, err := Parse(tok, now, rules, key)
	if err != nil {
		t.Fatal(err)
	}
	if len(v.Custom) != 1 || v.Custom["role"] != "admin" {
		t.Errorf("custom claims %v, want only role=admin", v.Custom)
	}
	for name, tc := range map[string]struct {
		at    time.Time
		rules Rules
		ok    bool
	}{
		"just expired, no leeway":          {now.Add(time.Hour), rules, false},
		"just expired, within leeway":      {now.Add(time.Hour + 4*time.Second), Rules{Issuer: rules.Issuer, Audience: rules.Audience, Leeway: 5 * time.Second}, true},
		"expired beyond the leeway":        {now.Add(time.Hour + 6*time.Second), Rules{Issuer: rules.Issuer, Audience: rules.Audience, Leeway: 5 * time.Second}, false},
		"lifetime within the cap":          {now, Rules{Issuer: rules.Issuer, Audience: rules.Audience, MaxLifetime: time.Hour}, true},
		"lifetime over the cap":            {now, Rules{Issuer: rules.Issuer, Audience: rules.Audience, MaxLifetime: 59 * time.Minute}, false},
		"another audience":                 {now, Rules{Issuer: rules.Issuer, Audience: "other"}, false},
		"issued in the future (no leeway)": {now.Add(-time.Second), rules, false},
	} {
		_, err := Parse(tok, tc.at, tc.rules, key)
		if tc.ok != (err == nil) {
			t.Errorf("%s: err %v, want ok=%v", name, err, tc.ok)
		}
		if err != nil && !errors.Is(err, ErrInvalid) {
			t.Errorf("%s: err %v does not match ErrInvalid", name, err)
		}
	}
}

// TestReservedNamesInCustomClaims: a session's custom claims that carry a
// reserved name (one issued before sid_seq was reserved) cannot override the
// ledger's own claim, and a token that names a member twice is refused.
func TestReservedNamesInCustomClaims(t *testing.T) {
	s, priv := newSigner(t)
	c := claims()
	c.Custom = json.RawMessage(`{"role":"admin","sid_seq":9007199254740991}`)
	tok, err := s.Sign(c)
	if err != nil {
		t.Fatal(err)
	}
	v, err := s.Verify(tok, now)
	if err != nil || v.SessionSeq != 42 || v.Custom["role"] != "admin" {
		t.Fatalf("verified %+v (%v): want the ledger's sid_seq 42 and the custom role", v, err)
	}

	// A payload with a member twice, correctly signed: refused.
	kid := NewEd25519Key(priv).ID
	enc := base64.RawURLEncoding
	header := enc.EncodeToString([]byte(`{"alg":"EdDSA","kid":"` + kid + `","typ":"at+jwt"}`))
	for name, payload := range map[string]string{
		"control (must verify)": fmt.Sprintf(`{"iss":"https://ledger.example","aud":"api","sub":"alice","sid":"S1","sid_seq":5,"iat":%d,"exp":%d}`, now.Unix(), now.Add(time.Hour).Unix()),
		"control, colons, quotes and braces in strings and nested (must verify)": fmt.Sprintf(`{"iss":"https://ledger.example","aud":"api","sub":"alice","sid":"S1","iat":%d,"exp":%d,"note":"a:b \\\"c\\\": {d} [","nested":{"x":1,"x":2,"y":[{"z":":"}]}}`, now.Unix(), now.Add(time.Hour).Unix()),
		"sid_seq twice": fmt.Sprintf(`{"iss":"https://ledger.example","aud":"api","sub":"alice","sid":"S1","sid_seq":5,"iat":%d,"exp":%d,"sid_seq":9}`, now.Unix(), now.Add(time.Hour).Unix()),
		"sub twice":     fmt.Sprintf(`{"iss":"https://ledger.example","aud":"api","sub":"alice","sid":"S1","iat":%d,"exp":%d,"sub":"mallory"}`, now.Unix(), now.Add(time.Hour).Unix()),
	} {
		signing := header + "." + enc.EncodeToString([]byte(payload))
		tok := signing + "." + enc.EncodeToString(ed25519.Sign(priv, []byte(signing)))
		_, err := s.Verify(tok, now)
		if strings.HasPrefix(name, "control") {
			if err != nil {
				t.Fatalf("%s: %v", name, err)
			}
			continue
		}
		if !errors.Is(err, ErrInvalid) {
			t.Errorf("%s: accepted (%v)", name, err)
		}
	}
}

func TestBearerToken(t *testing.T) {
	for header, want := range map[string]string{
		"Bearer abc": "abc", "bearer abc": "abc", "BEARER abc": "abc", "Bearer   abc": "abc",
		"Bearer": "", "Bearer ": "", "Bearerabc": "", "Basic abc": "", "Bearer a b": "", "Bearer a\tb": "", "": "",
	} {
		got, ok := BearerToken(header)
		if got != want || ok != (want != "") {
			t.Errorf("BearerToken(%q) = %q, %v; want %q", header, got, ok, want)
		}
	}
}
