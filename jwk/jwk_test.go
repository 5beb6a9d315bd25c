package jwk

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"encoding/base64"
	"encoding/json"
	"math/big"
	"strings"
	"sync"
	"testing"
)

var (
	rsaOnce sync.Once
	rsa2048 *rsa.PrivateKey
	rsa1024 *rsa.PrivateKey
)

// rsaKeys generates the RSA keys once: that is the slow part.
func rsaKeys(t testing.TB) (*rsa.PrivateKey, *rsa.PrivateKey) {
	t.Helper()
	rsaOnce.Do(func() {
		var err error
		if rsa2048, err = rsa.GenerateKey(rand.Reader, 2048); err != nil {
			panic(err)
		}
		if rsa1024, err = rsa.GenerateKey(rand.Reader, 1024); err != nil {
			panic(err)
		}
	})
	return rsa2048, rsa1024
}

func mustEC(t testing.TB, c elliptic.Curve) *ecdsa.PrivateKey {
	t.Helper()
	k, err := ecdsa.GenerateKey(c, rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// roundTrip writes keys as a JWKS, reads it back from JSON and returns its
// signing keys.
func roundTrip(t *testing.T, keys ...Key) map[string]PublicKey {
	t.Helper()
	b, err := json.Marshal(Set{Keys: keys})
	if err != nil {
		t.Fatal(err)
	}
	var set Set
	if err := json.Unmarshal(b, &set); err != nil {
		t.Fatal(err)
	}
	return set.SigningKeys()
}

type equaler interface{ Equal(x crypto.PublicKey) bool }

// TestSigningKeysRoundTrip: each kind of key written by FromPublic comes back
// from the JSON the same key with its one algorithm.
func TestSigningKeysRoundTrip(t *testing.T) {
	r, _ := rsaKeys(t)
	edPub, _, _ := ed25519.GenerateKey(rand.Reader)
	ec := mustEC(t, elliptic.P256())
	want := map[string]PublicKey{
		"ed":  {Alg: "EdDSA", Key: edPub},
		"ec":  {Alg: "ES256", Key: &ec.PublicKey},
		"rsa": {Alg: "RS256", Key: &r.PublicKey},
	}
	var keys []Key
	for kid, pub := range want {
		k, err := FromPublic(kid, pub)
		if err != nil {
			t.Fatalf("%s: %v", kid, err)
		}
		if k.Use != "sig" || k.Alg != pub.Alg || k.Kid != kid {
			t.Fatalf("%s: %+v", kid, k)
		}
		keys = append(keys, k)
	}
	got := roundTrip(t, keys...)
	if len(got) != len(want) {
		t.Fatalf("%d keys back, want %d", len(got), len(want))
	}
	for kid, w := range want {
		g, ok := got[kid]
		if !ok || g.Alg != w.Alg || !w.Key.(equaler).Equal(g.Key) {
			t.Errorf("%s: got %s %T, want %s %T", kid, g.Alg, g.Key, w.Alg, w.Key)
		}
	}
	// The checkpoints' reader sees only the Ed25519 key.
	var set Set
	b, _ := json.Marshal(Set{Keys: keys})
	_ = json.Unmarshal(b, &set)
	if ed := set.Ed25519Keys(); len(ed) != 1 || !ed["ed"].Equal(edPub) {
		t.Fatalf("Ed25519Keys: %v", ed)
	}
}

// TestJSONShape: an OKP key is written as it always was (the checkpoints
// and existing verifiers read it), an RSA key has no crv, x or y, an EC key
// no n or e, and a P-256 coordinate is always 32 bytes, left-padded.
func TestJSONShape(t *testing.T) {
	pub := ed25519.PublicKey(make([]byte, 32))
	b, _ := json.Marshal(Ed25519("k", pub))
	if want := `{"kty":"OKP","crv":"Ed25519","x":"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA","kid":"k","alg":"EdDSA","use":"sig"}`; string(b) != want {
		t.Fatalf("OKP JWK\n%s\nwant\n%s", b, want)
	}
	r, _ := rsaKeys(t)
	var m map[string]any
	b, _ = json.Marshal(RSA("r", &r.PublicKey))
	_ = json.Unmarshal(b, &m)
	for _, absent := range []string{"crv", "x", "y", "d", "p", "q"} {
		if _, ok := m[absent]; ok {
			t.Errorf("RSA JWK has %q: %s", absent, b)
		}
	}
	if m["e"] != "AQAB" || m["kty"] != "RSA" || m["alg"] != "RS256" || m["use"] != "sig" {
		t.Errorf("RSA JWK %s", b)
	}
	if n, _ := base64.RawURLEncoding.DecodeString(m["n"].(string)); len(n) != 256 || n[0] == 0 {
		t.Errorf("RSA n of %d bytes", len(n))
	}
	// Find a P-256 key with a coordinate below 2^248 (one in 128 or so).
	for i := 0; ; i++ {
		if i == 5000 {
			t.Fatal("no P-256 key with a short coordinate in 5000")
		}
		k := mustEC(t, elliptic.P256())
		raw, _ := k.PublicKey.Bytes()
		if raw[1] != 0 && raw[33] != 0 {
			continue
		}
		j := ECP256("e", &k.PublicKey)
		if len(j.X) != 43 || len(j.Y) != 43 || j.N != "" || j.E != "" {
			t.Fatalf("EC JWK %+v: x and y must be 32 bytes each", j)
		}
		if got := roundTrip(t, j); !got["e"].Key.(equaler).Equal(&k.PublicKey) {
			t.Fatal("a P-256 key with a short coordinate does not round-trip")
		}
		b, _ := json.Marshal(j)
		m = nil
		_ = json.Unmarshal(b, &m)
		if _, ok := m["n"]; ok {
			t.Errorf("EC JWK has n: %s", b)
		}
		return
	}
}

// TestSigningKeysLeavesOut: what is not a usable signing key is left out,
// and the rest of the set is still read.
func TestSigningKeysLeavesOut(t *testing.T) {
	r, small := rsaKeys(t)
	edPub, _, _ := ed25519.GenerateKey(rand.Reader)
	ec := mustEC(t, elliptic.P256())
	p384 := mustEC(t, elliptic.P384())
	ed := Ed25519("x", edPub)
	es := ECP256("x", &ec.PublicKey)
	rs := RSA("x", &r.PublicKey)
	enc := base64.RawURLEncoding.EncodeToString
	dec := func(s string) []byte { b, _ := base64.RawURLEncoding.DecodeString(s); return b }
	with := func(k Key, f func(*Key)) Key { f(&k); return k }
	ecRaw, _ := ec.PublicKey.Bytes()
	offCurve := append([]byte(nil), ecRaw[33:]...)
	offCurve[31] ^= 1
	p384raw, _ := p384.PublicKey.Bytes()
	flipLast := func(s string) string { // set a trailing bit: the same bytes to a lenient decoder
		const alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
		i := strings.IndexByte(alphabet, s[len(s)-1])
		return s[:len(s)-1] + string(alphabet[i^1])
	}
	bad := map[string]Key{
		"OKP alg HS256":               with(ed, func(k *Key) { k.Alg = "HS256" }),
		"OKP alg none":                with(ed, func(k *Key) { k.Alg = "none" }),
		"OKP alg RS256":               with(ed, func(k *Key) { k.Alg = "RS256" }),
		"OKP use enc":                 with(ed, func(k *Key) { k.Use = "enc" }),
		"OKP no kid":                  with(ed, func(k *Key) { k.Kid = "" }),
		"OKP crv X25519":              with(ed, func(k *Key) { k.Crv = "X25519" }),
		"OKP x 31 bytes":              with(ed, func(k *Key) { k.X = enc(edPub[:31]) }),
		"OKP x padded":                with(ed, func(k *Key) { k.X += "=" }),
		"OKP x with a line break":     with(ed, func(k *Key) { k.X = k.X[:10] + "\n" + k.X[10:] }),
		"OKP x trailing bit":          with(ed, func(k *Key) { k.X = flipLast(k.X) }),
		"EC alg EdDSA":                with(es, func(k *Key) { k.Alg = "EdDSA" }),
		"EC alg ES384":                with(es, func(k *Key) { k.Alg = "ES384" }),
		"EC crv P-384":                {Kty: "EC", Crv: "P-384", X: enc(p384raw[1:49]), Y: enc(p384raw[49:]), Kid: "x", Alg: "ES384", Use: "sig"},
		"EC P-384 key labelled P-256": {Kty: "EC", Crv: "P-256", X: enc(p384raw[1:49]), Y: enc(p384raw[49:]), Kid: "x", Alg: "ES256", Use: "sig"},
		"EC point off the curve":      with(es, func(k *Key) { k.Y = enc(offCurve) }),
		"EC x 31 bytes (unpadded)":    with(es, func(k *Key) { k.X = enc(dec(k.X)[1:]) }),
		"EC x 33 bytes":               with(es, func(k *Key) { k.X = enc(append([]byte{0}, dec(k.X)...)) }),
		"EC no y":                     with(es, func(k *Key) { k.Y = "" }),
		"EC the point at infinity":    with(es, func(k *Key) { k.X, k.Y = enc(make([]byte, 32)), enc(make([]byte, 32)) }),
		"RSA 1024 bits":               RSA("x", &small.PublicKey),
		"RSA alg PS256":               with(rs, func(k *Key) { k.Alg = "PS256" }),
		"RSA alg RS512":               with(rs, func(k *Key) { k.Alg = "RS512" }),
		"RSA alg HS256":               with(rs, func(k *Key) { k.Alg = "HS256" }),
		"RSA e even":                  with(rs, func(k *Key) { k.E = enc([]byte{1, 0, 0}) }),
		"RSA e 1":                     with(rs, func(k *Key) { k.E = enc([]byte{1}) }),
		"RSA e of 5 bytes":            with(rs, func(k *Key) { k.E = enc([]byte{1, 0, 0, 0, 1}) }),
		"RSA e 2^31+1":                with(rs, func(k *Key) { k.E = enc([]byte{0x80, 0, 0, 1}) }),
		"RSA e leading zero":          with(rs, func(k *Key) { k.E = enc([]byte{0, 1, 0, 1}) }),
		"RSA n leading zero":          with(rs, func(k *Key) { k.N = enc(append([]byte{0}, dec(k.N)...)) }),
		"RSA n even":                  with(rs, func(k *Key) { n := dec(k.N); n[len(n)-1] &^= 1; k.N = enc(n) }),
		"RSA n of 8200 bits":          with(rs, func(k *Key) { k.N = enc(append([]byte{1}, make([]byte, 1025)...)) }),
		"RSA no n":                    with(rs, func(k *Key) { k.N = "" }),
		"RSA with crv":                with(rs, func(k *Key) { k.Crv = "P-256" }),
		"oct (HMAC)":                  {Kty: "oct", Kid: "x", Alg: "HS256", Use: "sig"},
		"no kty":                      {Kid: "x", X: ed.X, Crv: "Ed25519"},
	}
	for name, k := range bad {
		good := Ed25519("good", edPub)
		got := roundTrip(t, k, good)
		if _, ok := got[k.Kid]; ok && k.Kid != "" {
			t.Errorf("%s: taken as %s", name, got[k.Kid].Alg)
		}
		if len(got) != 1 || got["good"].Alg != "EdDSA" {
			t.Errorf("%s: the good key beside it is not read (%d keys)", name, len(got))
		}
	}
	// A 2^31-1 exponent is the largest taken; alg and use may be absent.
	if got := roundTrip(t, with(rs, func(k *Key) { k.E = enc([]byte{0x7f, 0xff, 0xff, 0xff}) })); got["x"].Alg != "RS256" {
		t.Error("e 2^31-1 refused")
	}
	for _, k := range []Key{ed, es, rs} {
		if got := roundTrip(t, with(k, func(k *Key) { k.Alg, k.Use = "", "" })); got["x"].Alg == "" {
			t.Errorf("%s without alg and use: left out", k.Kty)
		}
	}
}

// TestAmbiguousKid: a kid that names two different keys is left out; the
// same key listed twice is kept.
func TestAmbiguousKid(t *testing.T) {
	r, _ := rsaKeys(t)
	edPub, _, _ := ed25519.GenerateKey(rand.Reader)
	ec := mustEC(t, elliptic.P256())
	got := roundTrip(t, Ed25519("a", edPub), RSA("a", &r.PublicKey), Ed25519("a", edPub), ECP256("b", &ec.PublicKey), ECP256("b", &ec.PublicKey))
	if _, ok := got["a"]; ok {
		t.Error("a kid of two keys (EdDSA and RS256) is taken")
	}
	if got["b"].Alg != "ES256" {
		t.Error("a key listed twice is left out")
	}
	// An unusable key does not make a kid ambiguous.
	got = roundTrip(t, Ed25519("a", edPub), with2(RSA("a", &r.PublicKey), "HS256"))
	if got["a"].Alg != "EdDSA" {
		t.Error("an unusable key beside a usable one with its kid hides it")
	}
}

func with2(k Key, alg string) Key { k.Alg = alg; return k }

// TestFromPublicRefuses: FromPublic writes only what SigningKeys reads.
func TestFromPublicRefuses(t *testing.T) {
	r, small := rsaKeys(t)
	edPub, _, _ := ed25519.GenerateKey(rand.Reader)
	ec := mustEC(t, elliptic.P256())
	p384 := mustEC(t, elliptic.P384())
	for name, pub := range map[string]PublicKey{
		"Ed25519 as ES256":    {Alg: "ES256", Key: edPub},
		"Ed25519 of 31 bytes": {Alg: "EdDSA", Key: edPub[:31]},
		"P-256 as RS256":      {Alg: "RS256", Key: &ec.PublicKey},
		"P-384":               {Alg: "ES256", Key: &p384.PublicKey},
		"RSA as EdDSA":        {Alg: "EdDSA", Key: &r.PublicKey},
		"RSA 1024":            {Alg: "RS256", Key: &small.PublicKey},
		"RSA e 2":             {Alg: "RS256", Key: &rsa.PublicKey{N: r.N, E: 2}},
		"RSA nil":             {Alg: "RS256", Key: (*rsa.PublicKey)(nil)},
		"RSA no modulus":      {Alg: "RS256", Key: &rsa.PublicKey{E: 65537}},
		"EC nil":              {Alg: "ES256", Key: (*ecdsa.PublicKey)(nil)},
		"a private key":       {Alg: "RS256", Key: r},
		"nothing":             {Alg: "EdDSA"},
		"HS256 bytes":         {Alg: "HS256", Key: []byte("secret")},
		"RSA of 9000 bits":    {Alg: "RS256", Key: &rsa.PublicKey{N: new(big.Int).Lsh(big.NewInt(1), 9000), E: 65537}},
	} {
		if k, err := FromPublic("k", pub); err == nil {
			t.Errorf("%s: written as %+v", name, k)
		} else if strings.Contains(err.Error(), r.N.String()[:20]) {
			t.Errorf("%s: the error holds key material: %v", name, err)
		}
	}
}
