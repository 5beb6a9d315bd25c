// Package jwk writes and reads the JSON Web Keys (RFC 7517) that
// sessionledger publishes: Ed25519 signing keys in the OKP form of RFC 8037,
// for access tokens (the JWKS) and for checkpoints. It imports only the
// standard library.
package jwk

import (
	"crypto/ed25519"
	"encoding/base64"
)

// Key is one JSON Web Key.
type Key struct {
	Kty string `json:"kty"`
	Crv string `json:"crv"`
	X   string `json:"x"`
	Kid string `json:"kid"`
	Alg string `json:"alg"`
	Use string `json:"use"`
}

// Set is a JSON Web Key Set.
type Set struct {
	Keys []Key `json:"keys"`
}

// Ed25519 is the JWK of an Ed25519 public key that signs (alg EdDSA).
func Ed25519(kid string, public ed25519.PublicKey) Key {
	return Key{Kty: "OKP", Crv: "Ed25519", X: base64.RawURLEncoding.EncodeToString(public), Kid: kid, Alg: "EdDSA", Use: "sig"}
}

// Ed25519Keys returns the set's Ed25519 signing keys by kid: those of type
// OKP on curve Ed25519 with alg EdDSA (or none), use sig (or none), a kid and
// a 32-byte x. Other keys are left out.
func (s Set) Ed25519Keys() map[string]ed25519.PublicKey {
	keys := map[string]ed25519.PublicKey{}
	for _, k := range s.Keys {
		if k.Kty != "OKP" || k.Crv != "Ed25519" || (k.Alg != "" && k.Alg != "EdDSA") || (k.Use != "" && k.Use != "sig") || k.Kid == "" {
			continue
		}
		x, err := base64.RawURLEncoding.DecodeString(k.X)
		if err != nil || len(x) != ed25519.PublicKeySize {
			continue
		}
		keys[k.Kid] = ed25519.PublicKey(x)
	}
	return keys
}
