package accesstoken_test

import (
	"crypto"
	"crypto/elliptic"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"errors"
	"maps"
	"math/big"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/lestrrat-go/jwx/v3/jwa"
	"github.com/lestrrat-go/jwx/v3/jwk"
	"github.com/lestrrat-go/jwx/v3/jws"
	"github.com/lestrrat-go/jwx/v3/jwt"
	"github.com/sessionledger/sessionledger/accesstoken"
	ourjwk "github.com/sessionledger/sessionledger/jwk"
)

// These tests hold the package against an independent JOSE implementation,
// lestrrat-go/jwx v3, for each algorithm: jwx reads our JWKS and verifies our
// tokens, computes our kids as RFC 7638 thumbprints, and signs tokens with
// our private keys that our Parse verifies.

// jwxAlg is jwx's name of each of our algorithms.
var jwxAlg = map[string]jwa.SignatureAlgorithm{
	accesstoken.EdDSA: jwa.EdDSA(),
	accesstoken.ES256: jwa.ES256(),
	accesstoken.RS256: jwa.RS256(),
}

// interopKey is a key of alg and a signer that signs with it and also
// publishes a key of another algorithm, so that a verifier has to pick the
// key by kid.
func interopKey(t *testing.T, alg string) (*accesstoken.Key, *accesstoken.Signer) {
	t.Helper()
	newKey := func(alg string) *accesstoken.Key {
		k, err := accesstoken.NewRandomKey(alg)
		if err != nil {
			t.Fatal(err)
		}
		return k
	}
	k := newKey(alg)
	other := accesstoken.EdDSA
	if alg == accesstoken.EdDSA {
		other = accesstoken.ES256
	}
	s, err := accesstoken.NewSigner(benchIssuer, benchAudience, k, newKey(other))
	if err != nil {
		t.Fatal(err)
	}
	return k, s
}

// jwxParse verifies token as a resource server using jwx would: against
// the JWKS, a kid required, iss, aud and the times checked at at.
func jwxParse(token string, set jwk.Set, at time.Time) (jwt.Token, error) {
	return jwt.Parse([]byte(token),
		jwt.WithKeySet(set, jws.WithRequireKid(true)),
		jwt.WithValidate(true),
		jwt.WithIssuer(benchIssuer),
		jwt.WithAudience(benchAudience),
		jwt.WithClock(jwt.ClockFunc(func() time.Time { return at })),
	)
}

// TestJWXVerifiesOurTokens: jwx parses our JWKS and verifies a token we
// sign, reading the header and claims we wrote; and it refuses the same token
// with a changed signature, for another audience or once expired, so that
// its acceptance means something.
func TestJWXVerifiesOurTokens(t *testing.T) {
	for _, alg := range accesstoken.Algorithms {
		t.Run(alg, func(t *testing.T) {
			k, s := interopKey(t, alg)
			set, err := jwk.Parse(s.JWKS())
			if err != nil {
				t.Fatalf("jwx refuses our JWKS: %v\n%s", err, s.JWKS())
			}
			if set.Len() != 2 {
				t.Fatalf("jwx reads %d keys in our JWKS, want 2:\n%s", set.Len(), s.JWKS())
			}
			tok, err := s.Sign(benchClaims())
			if err != nil {
				t.Fatal(err)
			}
			at := benchNow.Add(time.Minute)
			parsed, err := jwxParse(tok, set, at)
			if err != nil {
				t.Fatalf("jwx refuses our %s token: %v", alg, err)
			}

			msg, err := jws.Parse([]byte(tok))
			if err != nil {
				t.Fatal(err)
			}
			h := msg.Signatures()[0].ProtectedHeaders()
			gotAlg, _ := h.Algorithm()
			kid, _ := h.KeyID()
			typ, _ := h.Type()
			if gotAlg.String() != alg || kid != k.ID || typ != accesstoken.TokenType {
				t.Fatalf("jwx reads the header alg %v kid %q typ %q, want %s %q %s", gotAlg, kid, typ, alg, k.ID, accesstoken.TokenType)
			}
			sub, _ := parsed.Subject()
			exp, _ := parsed.Expiration()
			var sid, clientID, tenant string
			var seq float64
			for name, dst := range map[string]any{"sid": &sid, "client_id": &clientID, "tenant": &tenant, "sid_seq": &seq} {
				if err := parsed.Get(name, dst); err != nil {
					t.Fatalf("jwx: claim %s: %v", name, err)
				}
			}
			c := benchClaims()
			if sub != c.Subject || sid != c.SessionID || clientID != c.ClientID || tenant != "acme" || seq != float64(c.SessionSeq) || !exp.Equal(c.ExpiresAt) {
				t.Fatalf("jwx reads sub %q sid %q client_id %q tenant %q sid_seq %v exp %v", sub, sid, clientID, tenant, seq, exp)
			}

			// The controls: the verification above can fail.
			i := strings.LastIndexByte(tok, '.')
			sig, _ := base64.RawURLEncoding.DecodeString(tok[i+1:])
			sig[len(sig)/2] ^= 1
			if _, err := jwxParse(tok[:i+1]+base64.RawURLEncoding.EncodeToString(sig), set, at); err == nil {
				t.Fatal("jwx accepts our token with a changed signature")
			}
			if _, err := jwxParse(tok, set, c.ExpiresAt.Add(time.Minute)); err == nil {
				t.Fatal("jwx accepts our token after its exp")
			}
			if _, err := jwt.Parse([]byte(tok), jwt.WithKeySet(set, jws.WithRequireKid(true)), jwt.WithValidate(true),
				jwt.WithAudience("another-api"), jwt.WithClock(jwt.ClockFunc(func() time.Time { return at }))); err == nil {
				t.Fatal("jwx accepts our token for another audience")
			}
		})
	}
}

// TestJWXThumbprintIsOurKid: our kid is the RFC 7638 SHA-256 thumbprint jwx
// computes, both of the key jwx reads from our JWKS and of the public half
// of our private key (PKCS #8), which does not go through our JWKS.
func TestJWXThumbprintIsOurKid(t *testing.T) {
	for _, alg := range accesstoken.Algorithms {
		t.Run(alg, func(t *testing.T) {
			k, s := interopKey(t, alg)
			set, err := jwk.Parse(s.JWKS())
			if err != nil {
				t.Fatal(err)
			}
			published, ok := set.LookupKeyID(k.ID)
			if !ok {
				t.Fatalf("jwx finds no key of kid %s in our JWKS", k.ID)
			}
			pub, err := jwk.PublicKeyOf(importPrivate(t, k))
			if err != nil {
				t.Fatal(err)
			}
			for what, key := range map[string]jwk.Key{"the JWKS key": published, "the public half of our private key": pub} {
				tp, err := key.Thumbprint(crypto.SHA256)
				if err != nil {
					t.Fatal(err)
				}
				if got := base64.RawURLEncoding.EncodeToString(tp); got != k.ID {
					t.Errorf("jwx's RFC 7638 thumbprint of %s is %s, our kid %s", what, got, k.ID)
				}
			}
		})
	}
}

// importPrivate gives jwx our private key the way a deployment would hand
// it over: PKCS #8 from MarshalPrivate, read by crypto/x509, imported by jwx.
func importPrivate(t *testing.T, k *accesstoken.Key) jwk.Key {
	t.Helper()
	der, err := k.MarshalPrivate()
	if err != nil {
		t.Fatal(err)
	}
	raw, err := x509.ParsePKCS8PrivateKey(der)
	if err != nil {
		t.Fatal(err)
	}
	jk, err := jwk.Import(raw)
	if err != nil {
		t.Fatalf("jwx cannot import our %s private key: %v", k.Alg(), err)
	}
	return jk
}

// jwxSign has jwx sign, with key, an access token of the claims Parse
// requires (iss, aud, sub, sid, iat, exp) and sid_seq and client_id, with
// the header typ and kid.
func jwxSign(t *testing.T, alg string, key jwk.Key, typ, kid string) string {
	t.Helper()
	tok, err := jwt.NewBuilder().
		Issuer(benchIssuer).
		Audience([]string{benchAudience}).
		Subject("alice").
		Claim("sid", "S1").
		Claim("sid_seq", 7).
		Claim("client_id", "web-app").
		IssuedAt(benchNow).
		Expiration(benchNow.Add(time.Hour)).
		Build()
	if err != nil {
		t.Fatal(err)
	}
	h := jws.NewHeaders()
	if err := h.Set(jws.TypeKey, typ); err != nil {
		t.Fatal(err)
	}
	if err := h.Set(jws.KeyIDKey, kid); err != nil {
		t.Fatal(err)
	}
	signed, err := jwt.Sign(tok, jwt.WithKey(jwxAlg[alg], key, jws.WithProtectedHeaders(h)))
	if err != nil {
		t.Fatalf("jwx cannot sign %s with our key: %v", alg, err)
	}
	return string(signed)
}

// p256Order is n, the order of P-256's base point.
var p256Order = elliptic.P256().Params().N

// splitES256 returns the signing input of an ES256 token and its r and s.
func splitES256(t *testing.T, tok string) (string, []byte, *big.Int) {
	t.Helper()
	i := strings.LastIndexByte(tok, '.')
	sig, err := base64.RawURLEncoding.DecodeString(tok[i+1:])
	if err != nil || len(sig) != 64 {
		t.Fatalf("jwx made an ES256 signature of %d bytes (%v), not r||s of 64", len(sig), err)
	}
	return tok[:i], sig[:32], new(big.Int).SetBytes(sig[32:])
}

// TestJWXSignedTokensParse: a token jwx signs with our private key (imported
// from PKCS #8), with typ at+jwt, our kid and the claims we require, verifies
// with our Parse against our JWKS, for each algorithm.
//
// ES256 has one more rule. An ECDSA signature (r, s) has a twin (r, n-s) that
// verifies too; Parse accepts only the one whose s is at most n/2, so that a
// token has exactly one form, and refuses the other. jwx, like crypto/ecdsa,
// makes either, about half the time each. So for ES256 the test requires:
// whatever jwx signs verifies once its s is low (as signed, if it is
// already; as (r, n-s) if not, which jwx verifies too), and a high s is
// refused for that reason and no other. It signs until it has seen both.
//
// The controls: the same token signed by another key of the algorithm under
// our kid, and one with jwx's default typ (JWT), are refused.
func TestJWXSignedTokensParse(t *testing.T) {
	half := new(big.Int).Rsh(p256Order, 1)
	for _, alg := range accesstoken.Algorithms {
		t.Run(alg, func(t *testing.T) {
			k, s := interopKey(t, alg)
			var set ourjwk.Set
			if err := json.Unmarshal(s.JWKS(), &set); err != nil {
				t.Fatal(err)
			}
			keys := set.SigningKeys()
			if len(keys) != 2 {
				t.Fatalf("our JWKS has %d signing keys: %v", len(keys), slices.Collect(maps.Keys(keys)))
			}
			parse := func(tok string) (accesstoken.Verified, error) {
				return accesstoken.Parse(tok, benchNow.Add(time.Minute), accesstoken.Rules{Issuer: benchIssuer, Audience: benchAudience},
					func(kid string) (ourjwk.PublicKey, error) {
						pk, ok := keys[kid]
						if !ok {
							return ourjwk.PublicKey{}, errors.New("unknown kid")
						}
						return pk, nil
					})
			}
			priv := importPrivate(t, k)
			check := func(tok string) {
				t.Helper()
				v, err := parse(tok)
				if err != nil {
					t.Fatalf("our Parse refuses jwx's %s token: %v\n%s", alg, err, tok)
				}
				if v.Subject != "alice" || v.SessionID != "S1" || v.SessionSeq != 7 || v.ClientID != "web-app" ||
					!v.IssuedAt.Equal(benchNow) || !v.ExpiresAt.Equal(benchNow.Add(time.Hour)) || v.Custom != nil {
					t.Fatalf("our Parse reads jwx's token as %+v", v)
				}
			}

			if alg != accesstoken.ES256 {
				check(jwxSign(t, alg, priv, accesstoken.TokenType, k.ID))
			} else {
				pubJWK, err := jwk.PublicKeyOf(priv)
				if err != nil {
					t.Fatal(err)
				}
				var sawLow, sawHigh bool
				for i := 0; i < 64 && !(sawLow && sawHigh); i++ {
					tok := jwxSign(t, alg, priv, accesstoken.TokenType, k.ID)
					input, r, sv := splitES256(t, tok)
					if sv.Cmp(half) <= 0 {
						sawLow = true
						check(tok)
						continue
					}
					sawHigh = true
					if _, err := parse(tok); !errors.Is(err, accesstoken.ErrInvalid) || !strings.Contains(err.Error(), "above n/2") {
						t.Fatalf("our Parse, given jwx's ES256 token with s above n/2: %v; want it refused for that s", err)
					}
					low := append(append([]byte(nil), r...), new(big.Int).Sub(p256Order, sv).FillBytes(make([]byte, 32))...)
					normalised := input + "." + base64.RawURLEncoding.EncodeToString(low)
					if _, err := jws.Verify([]byte(normalised), jws.WithKey(jwa.ES256(), pubJWK)); err != nil {
						t.Fatalf("jwx refuses the (r, n-s) twin of its own signature: %v", err)
					}
					check(normalised)
				}
				if !sawLow || !sawHigh {
					t.Fatalf("64 ES256 signatures by jwx, low s seen %v, high s seen %v: want both", sawLow, sawHigh)
				}
			}

			// The controls: Parse can refuse what jwx signs.
			strangerPriv, err := accesstoken.GenerateKey(alg)
			if err != nil {
				t.Fatal(err)
			}
			stranger, err := jwk.Import(strangerPriv)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := parse(lowS(t, alg, jwxSign(t, alg, stranger, accesstoken.TokenType, k.ID))); err == nil {
				t.Fatal("our Parse accepts a token signed by another key under our kid")
			}
			if _, err := parse(lowS(t, alg, jwxSign(t, alg, priv, "JWT", k.ID))); err == nil || !strings.Contains(err.Error(), "typ") {
				t.Fatalf("our Parse, given a token of typ JWT: %v; want it refused for its typ", err)
			}
		})
	}
}

// lowS returns tok with the lower of its two s for ES256, as is for the
// other algorithms, so that a control is refused for what it tests and not
// for a high s.
func lowS(t *testing.T, alg, tok string) string {
	t.Helper()
	if alg != accesstoken.ES256 {
		return tok
	}
	input, r, sv := splitES256(t, tok)
	if sv.Cmp(new(big.Int).Rsh(p256Order, 1)) > 0 {
		sv.Sub(p256Order, sv)
	}
	return input + "." + base64.RawURLEncoding.EncodeToString(append(append([]byte(nil), r...), sv.FillBytes(make([]byte, 32))...))
}
