// Package jwk writes and reads the JSON Web Keys (RFC 7517) that
// sessionledger publishes: signing keys for access tokens (the JWKS) — Ed25519
// in the OKP form of RFC 8037 (alg EdDSA), ECDSA on P-256 (ES256) and RSA
// (RS256), RFC 7518 §6 — and Ed25519 keys for checkpoints. It imports only
// the standard library.
package jwk

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rsa"
	"encoding/base64"
	"errors"
	"fmt"
	"math/big"
	"strings"
)

// The JWS algorithms (RFC 7518 §3.1, RFC 8037 §3.1) of the signing keys this
// package writes and reads.
const (
	algEdDSA = "EdDSA"
	algES256 = "ES256"
	algRS256 = "RS256"
)

// The bounds on an RSA signing key's modulus, in bits. Below 2048 is too weak
// (RFC 7518 §3.3 requires 2048); above 8192 a key only makes every
// verification slower (a signature is as long as the modulus) and no
// deployment needs it.
const (
	minRSABits = 2048
	maxRSABits = 8192
)

// p256Coordinate is the length in bytes of a P-256 coordinate: x and y are
// always this long in a JWK (RFC 7518 §6.2.1.2), left-padded with zeros.
const p256Coordinate = 32

// Key is one JSON Web Key. Crv and X are those of an OKP or EC key, Y of an
// EC key, N and E of an RSA key; the members a key type does not have are
// left out of its JSON.
type Key struct {
	Kty string `json:"kty"`
	Crv string `json:"crv,omitempty"`
	X   string `json:"x,omitempty"`
	Y   string `json:"y,omitempty"`
	N   string `json:"n,omitempty"`
	E   string `json:"e,omitempty"`
	Kid string `json:"kid"`
	Alg string `json:"alg"`
	Use string `json:"use"`
}

// Set is a JSON Web Key Set.
type Set struct {
	Keys []Key `json:"keys"`
}

// PublicKey is a public signing key and the one JWS algorithm it verifies:
// Alg EdDSA with an ed25519.PublicKey, ES256 with an *ecdsa.PublicKey on
// P-256, or RS256 with an *rsa.PublicKey.
type PublicKey struct {
	Alg string
	Key crypto.PublicKey
}

var b64 = base64.RawURLEncoding

// Ed25519 is the JWK of an Ed25519 public key that signs (alg EdDSA).
func Ed25519(kid string, public ed25519.PublicKey) Key {
	return Key{Kty: "OKP", Crv: "Ed25519", X: b64.EncodeToString(public), Kid: kid, Alg: algEdDSA, Use: "sig"}
}

// ECP256 is the JWK of an ECDSA public key on P-256 that signs (alg ES256):
// x and y of 32 bytes each, left-padded with zeros. A key that is not a
// valid point of P-256 gives empty x and y, which no reader takes; FromPublic
// returns an error for it instead.
func ECP256(kid string, public *ecdsa.PublicKey) Key {
	k := Key{Kty: "EC", Crv: "P-256", Kid: kid, Alg: algES256, Use: "sig"}
	if x, y, ok := p256Coordinates(public); ok {
		k.X, k.Y = b64.EncodeToString(x), b64.EncodeToString(y)
	}
	return k
}

// p256Coordinates returns the coordinates of a valid P-256 public key.
func p256Coordinates(public *ecdsa.PublicKey) (x, y []byte, ok bool) {
	if public == nil || public.Curve != elliptic.P256() {
		return nil, nil, false
	}
	b, err := public.Bytes() // 0x04 || x || y; an error for a point off the curve
	if err != nil || len(b) != 1+2*p256Coordinate {
		return nil, nil, false
	}
	return b[1 : 1+p256Coordinate], b[1+p256Coordinate:], true
}

// RSA is the JWK of an RSA public key that signs (alg RS256): n and e as
// big-endian unsigned integers of the fewest bytes (RFC 7518 §6.3.1).
func RSA(kid string, public *rsa.PublicKey) Key {
	k := Key{Kty: "RSA", Kid: kid, Alg: algRS256, Use: "sig"}
	if public != nil && public.N != nil {
		k.N = b64.EncodeToString(public.N.Bytes())
		k.E = b64.EncodeToString(big.NewInt(int64(public.E)).Bytes())
	}
	return k
}

// FromPublic is the JWK of pub, which must be a key SigningKeys would take
// back: an Ed25519 key with alg EdDSA, a P-256 key with ES256, or an RSA key
// of 2048 to 8192 bits with a usable exponent with RS256.
func FromPublic(kid string, pub PublicKey) (Key, error) {
	switch k := pub.Key.(type) {
	case ed25519.PublicKey:
		if pub.Alg != algEdDSA || len(k) != ed25519.PublicKeySize {
			break
		}
		return Ed25519(kid, k), nil
	case *ecdsa.PublicKey:
		if _, _, ok := p256Coordinates(k); !ok || pub.Alg != algES256 {
			break
		}
		return ECP256(kid, k), nil
	case *rsa.PublicKey:
		if k == nil || pub.Alg != algRS256 || checkRSA(k) != nil {
			break
		}
		return RSA(kid, k), nil
	}
	return Key{}, fmt.Errorf("jwk: not a signing key this package writes: alg %q with a %s", pub.Alg, keyType(pub.Key))
}

// keyType names the type of a key for an error, without its material.
func keyType(k crypto.PublicKey) string {
	switch k := k.(type) {
	case ed25519.PublicKey:
		return fmt.Sprintf("%d-byte Ed25519 key", len(k))
	case *ecdsa.PublicKey:
		if k == nil || k.Curve == nil {
			return "ECDSA key without a curve"
		}
		return "ECDSA key on " + k.Curve.Params().Name
	case *rsa.PublicKey:
		if k == nil || k.N == nil {
			return "RSA key without a modulus"
		}
		return fmt.Sprintf("%d-bit RSA key (e %d)", k.N.BitLen(), k.E)
	}
	return fmt.Sprintf("%T", k)
}

// checkRSA refuses an RSA key that the ledger neither signs with nor accepts:
// a modulus outside 2048 to 8192 bits or even, an exponent that
// is even, below 3 or beyond 2³¹-1 (crypto/rsa refuses those too).
func checkRSA(k *rsa.PublicKey) error {
	switch {
	case k.N == nil || k.N.Sign() <= 0:
		return errors.New("no modulus")
	case k.N.BitLen() < minRSABits:
		return fmt.Errorf("a %d-bit modulus, fewer than %d", k.N.BitLen(), minRSABits)
	case k.N.BitLen() > maxRSABits:
		return fmt.Errorf("a %d-bit modulus, more than %d", k.N.BitLen(), maxRSABits)
	case k.N.Bit(0) == 0:
		return errors.New("an even modulus")
	case k.E < 3 || k.E > 1<<31-1 || k.E%2 == 0:
		return fmt.Errorf("exponent %d: not odd within 3 to 2^31-1", k.E)
	}
	return nil
}

// SigningKeys returns the set's usable signing keys by kid, each with the one
// algorithm it verifies:
//
//   - kty OKP, crv Ed25519, a 32-byte x: EdDSA;
//   - kty EC, crv P-256, x and y of 32 bytes each that are a point of the
//     curve: ES256;
//   - kty RSA, n of 2048 to 8192 bits, odd, and e odd within 3
//     to 2³¹-1, both of the fewest bytes: RS256;
//
// each with alg that algorithm (or none), use sig (or none) and a non-empty
// kid, its members in canonical base64url (no padding, no line break, zero
// trailing bits). Anything else is left out: other key types, curves and
// algorithms (HS256, none, RS384…), bad encodings, small RSA keys. A kid
// that names two different usable keys is left out too, since which of the
// two a token means cannot be told.
func (s Set) SigningKeys() map[string]PublicKey {
	keys := map[string]PublicKey{}
	ambiguous := map[string]bool{}
	for _, k := range s.Keys {
		if (k.Use != "" && k.Use != "sig") || k.Kid == "" || ambiguous[k.Kid] {
			continue
		}
		pub, ok := k.signingKey()
		if !ok {
			continue
		}
		if prev, dup := keys[k.Kid]; dup {
			if prev.Alg != pub.Alg || !prev.Key.(interface{ Equal(crypto.PublicKey) bool }).Equal(pub.Key) {
				delete(keys, k.Kid)
				ambiguous[k.Kid] = true
			}
			continue
		}
		keys[k.Kid] = pub
	}
	return keys
}

// signingKey reads k as a signing key; use and kid are the caller's.
func (k Key) signingKey() (PublicKey, bool) {
	switch {
	case k.Kty == "OKP" && k.Crv == "Ed25519" && (k.Alg == "" || k.Alg == algEdDSA):
		if k.Y != "" || k.N != "" || k.E != "" {
			return PublicKey{}, false
		}
		x, ok := decode(k.X)
		if !ok || len(x) != ed25519.PublicKeySize {
			return PublicKey{}, false
		}
		return PublicKey{Alg: algEdDSA, Key: ed25519.PublicKey(x)}, true
	case k.Kty == "EC" && k.Crv == "P-256" && (k.Alg == "" || k.Alg == algES256):
		if k.N != "" || k.E != "" {
			return PublicKey{}, false
		}
		x, okx := decode(k.X)
		y, oky := decode(k.Y)
		if !okx || !oky || len(x) != p256Coordinate || len(y) != p256Coordinate {
			return PublicKey{}, false
		}
		point := make([]byte, 0, 1+2*p256Coordinate)
		point = append(append(append(point, 4), x...), y...)
		pub, err := ecdsa.ParseUncompressedPublicKey(elliptic.P256(), point) // refuses a point off the curve
		if err != nil {
			return PublicKey{}, false
		}
		return PublicKey{Alg: algES256, Key: pub}, true
	case k.Kty == "RSA" && (k.Alg == "" || k.Alg == algRS256):
		if k.Crv != "" || k.X != "" || k.Y != "" {
			return PublicKey{}, false
		}
		n, okn := decode(k.N)
		e, oke := decode(k.E)
		// Bounded before big.Int sees them; the fewest bytes.
		if !okn || !oke || len(n) == 0 || len(n) > maxRSABits/8 || n[0] == 0 || len(e) == 0 || len(e) > 4 || e[0] == 0 {
			return PublicKey{}, false
		}
		exp := 0
		for _, b := range e {
			exp = exp<<8 | int(b)
		}
		pub := &rsa.PublicKey{N: new(big.Int).SetBytes(n), E: exp}
		if checkRSA(pub) != nil {
			return PublicKey{}, false
		}
		return PublicKey{Alg: algRS256, Key: pub}, true
	}
	return PublicKey{}, false
}

// strict refuses padding, characters outside the URL alphabet and non-zero
// trailing bits; decode refuses the line breaks it would skip.
var strict = b64.Strict()

func decode(s string) ([]byte, bool) {
	if strings.ContainsAny(s, "\r\n") {
		return nil, false
	}
	b, err := strict.DecodeString(s)
	return b, err == nil
}

// Ed25519Keys returns the set's Ed25519 signing keys by kid: those of type
// OKP on curve Ed25519 with alg EdDSA (or none), use sig (or none), a kid and
// a 32-byte x. Other keys are left out.
func (s Set) Ed25519Keys() map[string]ed25519.PublicKey {
	keys := map[string]ed25519.PublicKey{}
	for _, k := range s.Keys {
		if k.Kty != "OKP" || k.Crv != "Ed25519" || (k.Alg != "" && k.Alg != algEdDSA) || (k.Use != "" && k.Use != "sig") || k.Kid == "" {
			continue
		}
		x, err := b64.DecodeString(k.X)
		if err != nil || len(x) != ed25519.PublicKeySize {
			continue
		}
		keys[k.Kid] = ed25519.PublicKey(x)
	}
	return keys
}
