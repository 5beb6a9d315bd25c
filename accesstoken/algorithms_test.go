package accesstoken

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/hmac"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/asn1"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/sessionledger/sessionledger/jwk"
)

var (
	testKeysOnce sync.Once
	testKeys     map[string]*Key // one key of each algorithm, generated once
)

// keyOf returns the test key of alg.
func keyOf(t testing.TB, alg string) *Key {
	t.Helper()
	testKeysOnce.Do(func() {
		testKeys = map[string]*Key{}
		for _, a := range Algorithms {
			k, err := NewRandomKey(a)
			if err != nil {
				panic(err)
			}
			testKeys[a] = k
		}
	})
	return testKeys[alg]
}

// signerOf returns a signer whose active key is that of alg.
func signerOf(t testing.TB, alg string, others ...*Key) *Signer {
	t.Helper()
	s, err := NewSigner("https://ledger.example", "api", keyOf(t, alg), others...)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

var rules = Rules{Issuer: "https://ledger.example", Audience: "api"}

// jwksKeys reads a signer's JWKS back through JSON, as a verifier does.
func jwksKeys(t testing.TB, s *Signer) func(string) (jwk.PublicKey, error) {
	t.Helper()
	var set jwk.Set
	if err := json.Unmarshal(s.JWKS(), &set); err != nil {
		t.Fatal(err)
	}
	keys := set.SigningKeys()
	return func(kid string) (jwk.PublicKey, error) {
		k, ok := keys[kid]
		if !ok {
			return jwk.PublicKey{}, errors.New("unknown kid")
		}
		return k, nil
	}
}

// TestEachAlgorithmRoundTrips: for each algorithm a token is signed with the
// key's algorithm and its precomputed header, verifies with Verify and with
// Parse given the JWKS read back from JSON, and golang-jwt (pinned to that
// algorithm) verifies it too; the key survives PKCS #8.
func TestEachAlgorithmRoundTrips(t *testing.T) {
	wantSig := map[string]int{EdDSA: 86, ES256: 86, RS256: 342}
	for _, alg := range Algorithms {
		t.Run(alg, func(t *testing.T) {
			k := keyOf(t, alg)
			if k.Alg() != alg || k.Public().Alg != alg {
				t.Fatalf("Alg %s, Public().Alg %s", k.Alg(), k.Public().Alg)
			}
			s := signerOf(t, alg)
			if s.Active() != k {
				t.Fatal("Active is not the key given")
			}
			tok, err := s.Sign(claims())
			if err != nil {
				t.Fatal(err)
			}
			segs := strings.Split(tok, ".")
			h, _ := base64.RawURLEncoding.DecodeString(segs[0])
			if want := `{"alg":"` + alg + `","kid":"` + k.ID + `","typ":"at+jwt"}`; string(h) != want || len(segs[0]) != 110 {
				t.Fatalf("header %s (%d characters), want %s (110)", h, len(segs[0]), want)
			}
			if len(segs[2]) != wantSig[alg] {
				t.Fatalf("signature of %d characters, want %d", len(segs[2]), wantSig[alg])
			}
			v, err := s.Verify(tok, now)
			if err != nil || v.Subject != "alice" || v.SessionSeq != 42 || v.Custom["role"] != "admin" {
				t.Fatalf("Verify: %+v, %v", v, err)
			}
			v, err = Parse(tok, now, rules, jwksKeys(t, s))
			if err != nil || v.Subject != "alice" {
				t.Fatalf("Parse with the JWKS: %+v, %v", v, err)
			}
			method := jwt.GetSigningMethod(alg)
			_, err = jwt.Parse(tok, func(*jwt.Token) (any, error) { return k.Public().Key, nil },
				jwt.WithValidMethods([]string{alg}), jwt.WithStrictDecoding(), jwt.WithTimeFunc(func() time.Time { return now }))
			if err != nil || method == nil {
				t.Fatalf("golang-jwt pinned to %s refuses it: %v", alg, err)
			}
			// And a token golang-jwt signs with the private key verifies.
			forged := forge(t, method, k.private, map[string]any{"typ": TokenType, "kid": k.ID}, jwt.MapClaims{"iss": rules.Issuer, "aud": rules.Audience, "sub": "bob", "sid": "S2", "iat": now.Unix(), "exp": now.Add(time.Hour).Unix()})
			if alg == ES256 {
				forged = lowSToken(t, forged)
			}
			if v, err := s.Verify(forged, now); err != nil || v.Subject != "bob" {
				t.Fatalf("a token golang-jwt signed: %+v, %v", v, err)
			}

			der, err := k.MarshalPrivate()
			if err != nil {
				t.Fatal(err)
			}
			back, err := ParsePrivateKey(der)
			if err != nil || back.ID != k.ID || back.Alg() != alg || back.header != k.header {
				t.Fatalf("ParsePrivateKey: %v (id %s, alg %s)", err, back.ID, back.Alg())
			}
			s2, _ := NewSigner("https://ledger.example", "api", back)
			tok2, err := s2.Sign(claims())
			if err != nil {
				t.Fatal(err)
			}
			if _, err := s.Verify(tok2, now); err != nil {
				t.Fatalf("a token of the key read back from PKCS #8: %v", err)
			}
		})
	}
}

// lowSToken returns tok, an ES256 token, with its s the lower of its two
// forms (what Sign makes; another signer makes either).
func lowSToken(t testing.TB, tok string) string {
	t.Helper()
	i := strings.LastIndexByte(tok, '.')
	sig, err := base64.RawURLEncoding.DecodeString(tok[i+1:])
	if err != nil || len(sig) != 64 {
		t.Fatalf("not an ES256 signature: %v", err)
	}
	lowS(sig)
	return tok[:i+1] + base64.RawURLEncoding.EncodeToString(sig)
}

// TestGenerateKey: each algorithm's key is of the type and size said; an
// unknown algorithm is refused with an error naming those accepted.
func TestGenerateKey(t *testing.T) {
	for alg, check := range map[string]func(crypto.Signer) bool{
		EdDSA: func(s crypto.Signer) bool {
			k, ok := s.(ed25519.PrivateKey)
			return ok && len(k) == ed25519.PrivateKeySize
		},
		ES256: func(s crypto.Signer) bool { k, ok := s.(*ecdsa.PrivateKey); return ok && k.Curve == elliptic.P256() },
		RS256: func(s crypto.Signer) bool { k, ok := s.(*rsa.PrivateKey); return ok && k.N.BitLen() == 2048 },
	} {
		priv, err := GenerateKey(alg)
		if err != nil || !check(priv) {
			t.Errorf("GenerateKey(%s): %T, %v", alg, priv, err)
		}
	}
	for _, alg := range []string{"", "HS256", "none", "es256", "RS512", "PS256", strings.Repeat("x", 200)} {
		_, err := GenerateKey(alg)
		if err == nil || !strings.Contains(err.Error(), "EdDSA, ES256, RS256") || strings.Contains(err.Error(), strings.Repeat("x", 20)) {
			t.Errorf("GenerateKey(%.20q): %v", alg, err)
		}
	}
}

// otherSigner is a crypto.Signer of no type NewKey knows.
type otherSigner struct{ crypto.Signer }

// TestNewKeyRefuses: keys of another curve, a small or huge RSA modulus,
// a malformed key or another type are refused, and the errors hold no key
// material.
func TestNewKeyRefuses(t *testing.T) {
	small, err := rsa.GenerateKey(rand.Reader, 1024)
	if err != nil {
		t.Fatal(err)
	}
	p384, _ := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	p224, _ := ecdsa.GenerateKey(elliptic.P224(), rand.Reader)
	p521, _ := ecdsa.GenerateKey(elliptic.P521(), rand.Reader)
	p256, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	mismatched := &ecdsa.PrivateKey{PublicKey: p384.PublicKey, D: p256.D}
	mismatched.Curve = elliptic.P256()
	_, edPriv, _ := ed25519.GenerateKey(rand.Reader)
	for name, priv := range map[string]crypto.Signer{
		"RSA 1024 bits":                 small,
		"ECDSA P-384":                   p384,
		"ECDSA P-224":                   p224,
		"ECDSA P-521":                   p521,
		"ECDSA, a P-384 point as P-256": mismatched,
		"ECDSA nil":                     (*ecdsa.PrivateKey)(nil),
		"RSA nil":                       (*rsa.PrivateKey)(nil),
		"Ed25519 of 63 bytes":           edPriv[:63],
		"another type":                  otherSigner{edPriv},
		"nil":                           nil,
	} {
		k, err := NewKey(priv)
		if err == nil {
			t.Errorf("%s: taken as %s", name, k.Alg())
			continue
		}
		t.Logf("%s: %v", name, err)
		for _, secret := range []string{small.N.String()[:16], small.D.String()[:16], fmt.Sprintf("%x", []byte(edPriv[:8]))} {
			if strings.Contains(err.Error(), secret) {
				t.Errorf("%s: the error holds key material: %v", name, err)
			}
		}
	}
	// Left out of a JWKS too, whoever publishes it.
	set := jwk.Set{Keys: []jwk.Key{jwk.RSA("small", &small.PublicKey), {Kty: "EC", Crv: "P-384", Kid: "p384", Alg: "ES384", Use: "sig"}}}
	if got := set.SigningKeys(); len(got) != 0 {
		t.Fatalf("SigningKeys took %d keys", len(got))
	}
	if _, err := ParsePrivateKey([]byte("not DER")); err == nil || strings.Contains(err.Error(), "not DER") {
		t.Fatalf("ParsePrivateKey of junk: %v", err)
	}
	der, _ := x509.MarshalPKCS8PrivateKey(small)
	if _, err := ParsePrivateKey(der); err == nil {
		t.Fatal("ParsePrivateKey took a 1024-bit RSA key")
	}
}

// TestKidOfEd25519KeysUnchanged: the kid of an Ed25519 key is what it was
// before other algorithms came (deployed kids must not change): the RFC 7638
// thumbprint computed as before, and the RFC 8037 (A.3) test vector.
func TestKidOfEd25519KeysUnchanged(t *testing.T) {
	d, _ := base64.RawURLEncoding.DecodeString("nWGxne_9WmC6hEr0kuwsxERJxWl7MmkZcDusAxyuf2A")
	k := NewEd25519Key(ed25519.NewKeyFromSeed(d))
	if want := "kPrK_qmxVWaYVA9wwBF6Iuo3vVzz7TxHCTwXBygrS4k"; k.ID != want {
		t.Fatalf("kid of the RFC 8037 key %s, want %s", k.ID, want)
	}
	for range 20 {
		_, priv, _ := ed25519.GenerateKey(rand.Reader)
		x := base64.RawURLEncoding.EncodeToString(priv.Public().(ed25519.PublicKey))
		sum := sha256.Sum256([]byte(`{"crv":"Ed25519","kty":"OKP","x":"` + x + `"}`))
		old := base64.RawURLEncoding.EncodeToString(sum[:])
		k1 := NewEd25519Key(priv)
		k2, err := NewKey(priv)
		if err != nil || k1.ID != old || k2.ID != old {
			t.Fatalf("kid %s / %s (%v), computed the old way %s", k1.ID, k2.ID, err, old)
		}
		h, _ := json.Marshal(map[string]string{"alg": "EdDSA", "kid": old, "typ": "at+jwt"})
		if k1.header != base64.RawURLEncoding.EncodeToString(h) {
			t.Fatal("the Ed25519 header changed")
		}
	}
}

// TestRFC7638Thumbprint: the RSA example of RFC 7638 §3.1.
func TestRFC7638Thumbprint(t *testing.T) {
	j := jwk.Key{Kty: "RSA", E: "AQAB", N: "0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tSoc_BJECPebWKRXjBZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65YGjQR0_FDW2QvzqY368QQMicAtaSqzs8KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91CbOpbISD08qNLyrdkt-bFTWhAI4vMQFh6WeZu0fM4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-kEgU8awapJzKnqDKgw"}
	if got, want := thumbprint(j), "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs"; got != want {
		t.Fatalf("thumbprint %s, want %s", got, want)
	}
}

// rawToken signs header.payload (JSON, encoded here) with sign, which
// returns the raw signature bytes.
func rawToken(header map[string]any, c jwt.MapClaims, sign func([]byte) []byte) string {
	h, _ := json.Marshal(header)
	p, _ := json.Marshal(c)
	in := base64.RawURLEncoding.EncodeToString(h) + "." + base64.RawURLEncoding.EncodeToString(p)
	return in + "." + base64.RawURLEncoding.EncodeToString(sign([]byte(in)))
}

// signAs signs in with k's private key by alg's rules, whatever k's own
// algorithm: a genuine signature by k, labelled as the caller likes.
func signAs(t testing.TB, k *Key, alg string, in []byte) []byte {
	t.Helper()
	h := sha256.Sum256(in)
	switch p := k.private.(type) {
	case ed25519.PrivateKey:
		return ed25519.Sign(p, in)
	case *ecdsa.PrivateKey:
		der, err := ecdsa.SignASN1(rand.Reader, p, h[:])
		if err != nil {
			t.Fatal(err)
		}
		if alg == "ES256-DER" {
			return der
		}
		sig := ecdsaRaw(der)
		lowS(sig)
		return sig
	case *rsa.PrivateKey:
		sig, err := rsa.SignPKCS1v15(nil, p, crypto.SHA256, h[:])
		if err != nil {
			t.Fatal(err)
		}
		return sig
	}
	t.Fatalf("no key")
	return nil
}

func goodClaims() jwt.MapClaims {
	return jwt.MapClaims{"iss": rules.Issuer, "aud": rules.Audience, "sub": "mallory", "sid": "S1", "iat": now.Unix(), "exp": now.Add(time.Hour).Unix()}
}

// publicForms are the byte strings an HMAC confusion attack might take as
// the secret: the forms in which a key's public half is found.
func publicForms(t testing.TB, s *Signer, k *Key) map[string][]byte {
	t.Helper()
	pkix, err := x509.MarshalPKIXPublicKey(k.Public().Key)
	if err != nil {
		t.Fatal(err)
	}
	jwkJSON, _ := json.Marshal(k.jwk())
	forms := map[string][]byte{
		"PKIX DER": pkix,
		"PEM":      pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: pkix}),
		"JWK":      jwkJSON,
		"JWKS":     s.JWKS(),
	}
	switch p := k.Public().Key.(type) {
	case ed25519.PublicKey:
		forms["raw"] = p
	case *ecdsa.PublicKey:
		forms["raw"], _ = p.Bytes()
	case *rsa.PublicKey:
		forms["raw"] = p.N.Bytes()
	}
	return forms
}

// TestAlgorithmIsPinnedToTheKey: a token is verified only by the algorithm
// of the key its kid names. A genuine signature of one key labelled with
// another algorithm, a signature by another key of the labelled algorithm,
// an HMAC keyed with the public key in any of its forms, alg none, and
// algorithms outside the three are all refused, for every kind of key; and
// so are they through Parse with the JWKS read back.
func TestAlgorithmIsPinnedToTheKey(t *testing.T) {
	ed, es, rs := keyOf(t, EdDSA), keyOf(t, ES256), keyOf(t, RS256)
	s := signerOf(t, EdDSA, es, rs)
	viaJWKS := jwksKeys(t, s)
	check := func(name, tok string, wantOK bool) {
		t.Helper()
		_, err1 := s.Verify(tok, now)
		_, err2 := Parse(tok, now, rules, viaJWKS)
		if wantOK {
			if err1 != nil || err2 != nil {
				t.Errorf("%s: refused: %v / %v", name, err1, err2)
			}
			return
		}
		if !errors.Is(err1, ErrInvalid) || !errors.Is(err2, ErrInvalid) {
			t.Errorf("%s: accepted (%v / %v)", name, err1, err2)
			return
		}
		sig := tok[strings.LastIndexByte(tok, '.')+1:]
		if strings.Contains(err1.Error(), tok) || (len(sig) > 8 && strings.Contains(err1.Error(), sig[:8])) {
			t.Errorf("%s: the error holds the token: %v", name, err1)
		}
	}
	hdr := func(alg string, k *Key) map[string]any {
		return map[string]any{"alg": alg, "kid": k.ID, "typ": TokenType}
	}
	for _, k := range []*Key{ed, es, rs} {
		// Control: the key's own algorithm.
		check(k.Alg()+" control", rawToken(hdr(k.Alg(), k), goodClaims(), func(in []byte) []byte { return signAs(t, k, k.Alg(), in) }), true)
		for _, other := range []*Key{ed, es, rs} {
			if other == k {
				continue
			}
			// k's genuine signature labelled other's algorithm, with k's kid.
			check(fmt.Sprintf("%s key, its own signature labelled %s", k.Alg(), other.Alg()),
				rawToken(hdr(other.Alg(), k), goodClaims(), func(in []byte) []byte { return signAs(t, k, k.Alg(), in) }), false)
			// other's genuine signature, labelled other's algorithm, with k's kid.
			check(fmt.Sprintf("%s kid, a genuine %s signature by the %s key", k.Alg(), other.Alg(), other.Alg()),
				rawToken(hdr(other.Alg(), k), goodClaims(), func(in []byte) []byte { return signAs(t, other, other.Alg(), in) }), false)
		}
		for form, secret := range publicForms(t, s, k) {
			for _, m := range []*jwt.SigningMethodHMAC{jwt.SigningMethodHS256, jwt.SigningMethodHS384, jwt.SigningMethodHS512} {
				check(fmt.Sprintf("%s kid, %s keyed with the public key (%s)", k.Alg(), m.Alg(), form),
					forge(t, m, secret, map[string]any{"typ": TokenType, "kid": k.ID}, goodClaims()), false)
			}
			mac := hmac.New(sha256.New, secret)
			// An HMAC of the length of the key's own signatures.
			check(fmt.Sprintf("%s kid, HS256 keyed with the public key (%s), labelled %s", k.Alg(), form, k.Alg()),
				rawToken(hdr(k.Alg(), k), goodClaims(), func(in []byte) []byte { mac.Reset(); mac.Write(in); return mac.Sum(nil) }), false)
		}
		for _, alg := range []string{"none", "None", "NONE", "", "HS256", "RS384", "RS512", "PS256", "ES384", "ES512", "ES256K", "Ed25519", "EdDSA ", "eddsa", "es256", "rs256"} {
			for what, sign := range map[string]func([]byte) []byte{
				"no signature":            func([]byte) []byte { return nil },
				"64 zero bytes":           func([]byte) []byte { return make([]byte, 64) },
				"the key's own signature": func(in []byte) []byte { return signAs(t, k, k.Alg(), in) },
			} {
				check(fmt.Sprintf("%s kid, alg %q, %s", k.Alg(), alg, what), rawToken(hdr(alg, k), goodClaims(), sign), false)
			}
		}
		// An alg that is not a string, or given twice.
		check(k.Alg()+" kid, alg a number", rawToken(map[string]any{"alg": 1, "kid": k.ID, "typ": TokenType}, goodClaims(), func(in []byte) []byte { return signAs(t, k, k.Alg(), in) }), false)
		twice := `{"alg":"HS256","alg":"` + k.Alg() + `","kid":"` + k.ID + `","typ":"at+jwt"}`
		p, _ := json.Marshal(goodClaims())
		in := base64.RawURLEncoding.EncodeToString([]byte(twice)) + "." + base64.RawURLEncoding.EncodeToString(p)
		check(k.Alg()+" kid, alg given twice", in+"."+base64.RawURLEncoding.EncodeToString(signAs(t, k, k.Alg(), []byte(in))), false)
	}
	none, _ := jwt.NewWithClaims(jwt.SigningMethodNone, goodClaims()).SignedString(jwt.UnsafeAllowNoneSignatureType)
	check("golang-jwt alg none without kid", none, false)
}

// TestParseRefusesAKeyOfAnotherAlgorithm: a callback that returns a key
// labelled with an algorithm it does not verify (an Ed25519 key as RS256, a
// P-384 key, a small RSA key) verifies nothing.
func TestParseRefusesAKeyOfAnotherAlgorithm(t *testing.T) {
	ed, es, rs := keyOf(t, EdDSA), keyOf(t, ES256), keyOf(t, RS256)
	small, _ := rsa.GenerateKey(rand.Reader, 1024)
	p384, _ := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	for _, k := range []*Key{ed, es, rs} {
		tok, err := signerOf(t, k.Alg()).Sign(claims())
		if err != nil {
			t.Fatal(err)
		}
		for name, pub := range map[string]jwk.PublicKey{
			"its key labelled otherwise":    {Alg: map[string]string{EdDSA: ES256, ES256: EdDSA, RS256: EdDSA}[k.Alg()], Key: k.Public().Key},
			"another type labelled its alg": {Alg: k.Alg(), Key: map[string]crypto.PublicKey{EdDSA: es.Public().Key, ES256: ed.Public().Key, RS256: ed.Public().Key}[k.Alg()]},
			"a P-384 key":                   {Alg: k.Alg(), Key: &p384.PublicKey},
			"a 1024-bit RSA key":            {Alg: k.Alg(), Key: &small.PublicKey},
			"no key":                        {Alg: k.Alg()},
		} {
			if _, err := Parse(tok, now, rules, func(string) (jwk.PublicKey, error) { return pub, nil }); !errors.Is(err, ErrInvalid) {
				t.Errorf("%s token, %s: %v", k.Alg(), name, err)
			}
		}
	}
}

// TestSignatureLengthIsCheckedFirst: a signature segment of another length
// than the key's signatures (an ES256 signature in ASN.1 DER, a 4096-bit RSA
// signature for a 2048-bit key, one byte more or less) is refused for its
// length, before it is decoded or verified; for a length no algorithm has,
// before the key is even looked up.
func TestSignatureLengthIsCheckedFirst(t *testing.T) {
	big4096, err := rsa.GenerateKey(rand.Reader, 4096)
	if err != nil {
		t.Fatal(err)
	}
	k4096, err := NewKey(big4096)
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range []*Key{keyOf(t, EdDSA), keyOf(t, ES256), keyOf(t, RS256)} {
		s := signerOf(t, k.Alg())
		lookups := 0
		keys := jwksKeys(t, s)
		key := func(kid string) (jwk.PublicKey, error) { lookups++; return keys(kid) }
		tok, err := s.Sign(claims())
		if err != nil {
			t.Fatal(err)
		}
		i := strings.LastIndexByte(tok, '.')
		in, sig := tok[:i], tok[i+1:]
		raw, _ := base64.RawURLEncoding.DecodeString(sig)
		enc := base64.RawURLEncoding.EncodeToString
		variants := map[string]struct {
			sig           string
			lookedUpFirst bool
		}{
			"one byte less":          {enc(raw[:len(raw)-1]), false}, // 340 characters: below any RS256 key's
			"one byte more":          {enc(append(append([]byte(nil), raw...), 0)), k.Alg() == RS256},
			"empty":                  {"", false},
			"4096-bit RSA signature": {enc(signAs(t, k4096, RS256, []byte(in))), k.Alg() == RS256},
			"1366 characters of A":   {strings.Repeat("A", 1366), k.Alg() == RS256},
			"1367 characters":        {strings.Repeat("A", 1367), false},
		}
		if k.Alg() == ES256 {
			variants["ASN.1 DER"] = struct {
				sig           string
				lookedUpFirst bool
			}{enc(signAs(t, k, "ES256-DER", []byte(in))), false}
		}
		for name, v := range variants {
			lookups = 0
			_, err := Parse(in+"."+v.sig, now, rules, key)
			if !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), "characters") || strings.Contains(err.Error(), "does not verify") {
				t.Errorf("%s, %s: err %v, want it refused for its length", k.Alg(), name, err)
			}
			if want := map[bool]int{true: 1, false: 0}[v.lookedUpFirst]; lookups != want {
				t.Errorf("%s, %s: %d key lookups, want %d", k.Alg(), name, lookups, want)
			}
		}
	}
}

// TestES256DERSignatureIsRefused: a genuine ECDSA signature in the ASN.1
// DER form crypto/ecdsa makes (70 to 72 bytes) is refused; the same
// signature as r||s verifies.
func TestES256DERSignatureIsRefused(t *testing.T) {
	k := keyOf(t, ES256)
	s := signerOf(t, ES256)
	for range 20 {
		var der []byte
		tok := rawToken(map[string]any{"alg": ES256, "kid": k.ID, "typ": TokenType}, goodClaims(), func(in []byte) []byte {
			der = signAs(t, k, "ES256-DER", in)
			return der
		})
		if _, err := s.Verify(tok, now); !errors.Is(err, ErrInvalid) {
			t.Fatalf("a DER signature (%d bytes): %v", len(der), err)
		}
		raw := ecdsaRaw(der)
		lowS(raw)
		i := strings.LastIndexByte(tok, '.')
		if _, err := s.Verify(tok[:i+1]+base64.RawURLEncoding.EncodeToString(raw), now); err != nil {
			t.Fatalf("the same signature as r||s: %v", err)
		}
	}
}

// TestES256HighSIsRefused: an ECDSA signature (r, s) has a twin (r, n-s)
// that verifies too: a second string for a token the ledger issued, which
// golang-jwt accepts. Sign always makes the low one and Parse refuses the
// high one.
func TestES256HighSIsRefused(t *testing.T) {
	k := keyOf(t, ES256)
	s := signerOf(t, ES256)
	n := elliptic.P256().Params().N
	half := new(big.Int).Rsh(n, 1)
	for i := range 40 {
		c := claims()
		c.ID = fmt.Sprint("J", i)
		tok, err := s.Sign(c)
		if err != nil {
			t.Fatal(err)
		}
		j := strings.LastIndexByte(tok, '.')
		sig, _ := base64.RawURLEncoding.DecodeString(tok[j+1:])
		sv := new(big.Int).SetBytes(sig[32:])
		if sv.Cmp(half) > 0 {
			t.Fatalf("Sign made a high s")
		}
		twin := append(append([]byte(nil), sig[:32]...), new(big.Int).Sub(n, sv).FillBytes(make([]byte, 32))...)
		twinTok := tok[:j+1] + base64.RawURLEncoding.EncodeToString(twin)
		if _, err := jwt.Parse(twinTok, func(*jwt.Token) (any, error) { return k.Public().Key, nil }, jwt.WithValidMethods([]string{ES256}), jwt.WithTimeFunc(func() time.Time { return now })); err != nil {
			t.Fatalf("golang-jwt refuses the twin, so the test no longer shows it: %v", err)
		}
		if _, err := s.Verify(twinTok, now); !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), "above n/2") {
			t.Fatalf("the twin (r, n-s) of a genuine token: %v", err)
		}
		if _, err := s.Verify(tok, now); err != nil {
			t.Fatal(err)
		}
	}
}

// TestECDSASignatureForms: r||s and DER convert both ways as encoding/asn1
// does, including values with leading zeros and the high bit set.
func TestECDSASignatureForms(t *testing.T) {
	type sig struct{ R, S *big.Int }
	edge := [][]byte{
		make([]byte, 32),
		append(make([]byte, 31), 1),
		append([]byte{0x80}, make([]byte, 31)...),
		append([]byte{0, 0x80}, make([]byte, 30)...),
		append([]byte{0, 0, 0x7f}, make([]byte, 29)...),
		[]byte(strings.Repeat("\xff", 32)),
	}
	for i := range 200 {
		raw := make([]byte, 64)
		_, _ = rand.Read(raw)
		if i < len(edge)*len(edge) {
			copy(raw[:32], edge[i/len(edge)])
			copy(raw[32:], edge[i%len(edge)])
		}
		want, err := asn1.Marshal(sig{new(big.Int).SetBytes(raw[:32]), new(big.Int).SetBytes(raw[32:])})
		if err != nil {
			t.Fatal(err)
		}
		if got := ecdsaDER(raw); string(got) != string(want) {
			t.Fatalf("ecdsaDER(%x) = %x, want %x", raw, got, want)
		}
		back := ecdsaRaw(want)
		zero := new(big.Int).SetBytes(raw[:32]).Sign() == 0 || new(big.Int).SetBytes(raw[32:]).Sign() == 0
		if zero != (back == nil) || (!zero && string(back) != string(raw)) {
			t.Fatalf("ecdsaRaw(%x) = %x, want %x", want, back, raw)
		}
	}
	for _, bad := range [][]byte{nil, {0x30}, {0x30, 0}, {0x31, 2, 2, 0}, {0x30, 6, 2, 1, 1, 2, 1, 1, 0}, {0x30, 6, 2, 1, 1, 2, 2, 1}, {0x30, 38, 2, 33, 1}} {
		if ecdsaRaw(bad) != nil {
			t.Errorf("ecdsaRaw(%x) took it", bad)
		}
	}
}

// TestSetKeys: a key swap under concurrent Sign, Verify, JWKS and Active
// (run with -race), each token signed verifying with the keys of its
// moment; then a retired key's tokens are refused.
func TestSetKeys(t *testing.T) {
	ed, es, rs := keyOf(t, EdDSA), keyOf(t, ES256), keyOf(t, RS256)
	s := signerOf(t, EdDSA, es, rs)
	stop := make(chan struct{})
	var swaps atomic.Int64
	var wg sync.WaitGroup
	wg.Go(func() {
		orders := [][]*Key{{ed, es, rs}, {es, rs, ed}, {rs, ed, es}}
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			o := orders[i%3]
			if err := s.SetKeys(o[0], o[1:]...); err != nil {
				t.Error(err)
				return
			}
			swaps.Add(1)
			time.Sleep(100 * time.Microsecond)
		}
	})
	var seen sync.Map
	deadline := time.Now().Add(20 * time.Second)
	var workers sync.WaitGroup
	for w := range 4 {
		workers.Go(func() {
			for i := 0; i < 40 || time.Now().Before(deadline) && count(&seen) < 3; i++ {
				c := claims()
				c.ID = fmt.Sprint(w, "-", i)
				tok, err := s.Sign(c)
				if err != nil {
					t.Error(err)
					return
				}
				v, err := s.Verify(tok, now)
				if err != nil || v.ID != c.ID {
					t.Errorf("a token signed during swaps: %v", err)
					return
				}
				h, _ := base64.RawURLEncoding.DecodeString(tok[:strings.IndexByte(tok, '.')])
				var hd struct{ Alg string }
				_ = json.Unmarshal(h, &hd)
				seen.Store(hd.Alg, true)
				var set jwk.Set
				if err := json.Unmarshal(s.JWKS(), &set); err != nil || len(set.SigningKeys()) != 3 {
					t.Errorf("JWKS during swaps: %v", err)
					return
				}
				_ = s.Active().Alg()
			}
		})
	}
	workers.Wait()
	close(stop)
	wg.Wait()
	if count(&seen) != 3 || swaps.Load() < 3 {
		t.Fatalf("%d algorithms signed with in %d swaps, want all 3", count(&seen), swaps.Load())
	}

	// Retire the EdDSA and RS256 keys: their tokens are refused, ES256 signs.
	if err := s.SetKeys(ed, es, rs); err != nil {
		t.Fatal(err)
	}
	oldEd, _ := s.Sign(claims())
	_ = s.SetKeys(rs)
	oldRS, _ := s.Sign(claims())
	if err := s.SetKeys(es); err != nil {
		t.Fatal(err)
	}
	for name, tok := range map[string]string{"EdDSA": oldEd, "RS256": oldRS} {
		if _, err := s.Verify(tok, now); !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), "unknown kid") {
			t.Errorf("a token of the retired %s key: %v", name, err)
		}
		if _, err := Parse(tok, now, rules, jwksKeys(t, s)); !errors.Is(err, ErrInvalid) {
			t.Errorf("a token of the retired %s key, through the JWKS: %v", name, err)
		}
	}
	tok, err := s.Sign(claims())
	if err != nil || s.Active() != es {
		t.Fatal(err)
	}
	if _, err := s.Verify(tok, now); err != nil {
		t.Fatal(err)
	}
	var set jwk.Set
	_ = json.Unmarshal(s.JWKS(), &set)
	if len(set.Keys) != 1 || set.Keys[0].Kid != es.ID || set.Keys[0].Alg != ES256 {
		t.Fatalf("JWKS after retiring: %s", s.JWKS())
	}
}

func count(m *sync.Map) (n int) {
	m.Range(func(any, any) bool { n++; return true })
	return n
}

// TestSetKeysRefuses: no active key, a key not made by NewKey, and two
// different keys under one id are refused, and the keys in use stay.
func TestSetKeysRefuses(t *testing.T) {
	ed, es := keyOf(t, EdDSA), keyOf(t, ES256)
	s := signerOf(t, EdDSA)
	forged := *es
	forged.ID = ed.ID
	for name, keys := range map[string][]*Key{
		"no active key":         {nil},
		"a nil other":           {ed, nil},
		"a zero key":            {{}},
		"two keys under one id": {ed, &forged},
	} {
		if err := s.SetKeys(keys[0], keys[1:]...); err == nil {
			t.Errorf("%s: taken", name)
		}
	}
	if _, err := NewSigner("https://ledger.example", "api", ed, &forged); err == nil {
		t.Error("NewSigner took two keys under one id")
	}
	if s.Active() != ed {
		t.Fatal("a refused SetKeys changed the keys")
	}
	if err := s.SetKeys(ed, ed, NewEd25519Key(ed.private.(ed25519.PrivateKey))); err != nil {
		t.Fatalf("the same key twice: %v", err)
	}
}

// TestErrorsHoldNoLongHeaderValue: an alg or typ of hundreds of characters
// is not copied into the error.
func TestErrorsHoldNoLongHeaderValue(t *testing.T) {
	s := signerOf(t, EdDSA)
	long := strings.Repeat("Z", 300)
	for _, h := range []map[string]any{
		{"alg": long, "kid": s.Active().ID, "typ": TokenType},
		{"alg": EdDSA, "kid": s.Active().ID, "typ": long},
	} {
		tok := rawToken(h, goodClaims(), func(in []byte) []byte { return signAs(t, s.Active(), EdDSA, in) })
		_, err := s.Verify(tok, now)
		if !errors.Is(err, ErrInvalid) || strings.Contains(err.Error(), strings.Repeat("Z", 17)) {
			t.Errorf("err %v", err)
		}
	}
}
