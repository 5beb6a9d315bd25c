package accesstoken

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"math/big"
	"strings"

	"github.com/sessionledger/sessionledger/jwk"
)

// The JWS algorithms (RFC 7518 §3.1, RFC 8037 §3.1) access tokens are signed
// with. Each key signs and verifies with exactly one of them, which follows
// from its type.
const (
	EdDSA = "EdDSA" // Ed25519
	ES256 = "ES256" // ECDSA on P-256 with SHA-256, the signature r||s
	RS256 = "RS256" // RSASSA-PKCS1-v1_5 with SHA-256
)

// Algorithms are the accepted algorithms, for a flag's help or a check.
var Algorithms = []string{EdDSA, ES256, RS256}

// rsaBits is the modulus size of the RSA keys GenerateKey makes.
const rsaBits = 2048

// The sizes in bytes of signatures: Ed25519 (RFC 8032) and ES256, whose
// JWS signature is r and s of 32 bytes each (RFC 7518 §3.4). An RS256
// signature is as long as the key's modulus: 256 to 1024 bytes for the 2048
// to 8192 bits jwk.SigningKeys takes.
const (
	ed25519SignatureSize = ed25519.SignatureSize
	es256SignatureSize   = 64
	minRSASignatureSize  = 2048 / 8
	maxRSASignatureSize  = 8192 / 8
)

// Key is a signing key with its key id and algorithm. Make one with NewKey
// (or NewEd25519Key, ParsePrivateKey); it does not change afterwards.
type Key struct {
	// ID is the key id: the RFC 7638 JWK thumbprint (SHA-256) of the
	// public key, so the same key always has the same id.
	ID      string
	alg     string
	private crypto.Signer
	public  jwk.PublicKey
	pubJWK  jwk.Key
	sigSize int    // the size of its signatures, in bytes
	header  string // the encoded JOSE header of tokens it signs: the same for all
}

// NewRandomKey returns a new key for alg (GenerateKey, then NewKey).
func NewRandomKey(alg string) (*Key, error) {
	priv, err := GenerateKey(alg)
	if err != nil {
		return nil, err
	}
	return NewKey(priv)
}

// GenerateKey returns a new private key for alg: an Ed25519 key for EdDSA, an
// ECDSA key on P-256 for ES256, a 2048-bit RSA key for RS256.
func GenerateKey(alg string) (crypto.Signer, error) {
	switch alg {
	case EdDSA:
		_, priv, err := ed25519.GenerateKey(rand.Reader)
		return priv, err
	case ES256:
		return ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	case RS256:
		return rsa.GenerateKey(rand.Reader, rsaBits)
	}
	return nil, fmt.Errorf("accesstoken: unknown signing algorithm %s: use one of %s", short(alg), strings.Join(Algorithms, ", "))
}

// NewKey wraps priv, whose type sets the algorithm it signs with: an
// ed25519.PrivateKey signs EdDSA, an *ecdsa.PrivateKey on P-256 ES256 (other
// curves are refused), an *rsa.PrivateKey of 2048 to 8192 bits RS256 (a
// smaller or larger modulus is refused). Its id is the RFC 7638 thumbprint of
// its public JWK. Errors name no key material.
func NewKey(priv crypto.Signer) (*Key, error) {
	var pub jwk.PublicKey
	var sigSize int
	switch p := priv.(type) {
	case ed25519.PrivateKey:
		if len(p) != ed25519.PrivateKeySize {
			return nil, fmt.Errorf("accesstoken: an Ed25519 private key of %d bytes, not %d", len(p), ed25519.PrivateKeySize)
		}
		pub, sigSize = jwk.PublicKey{Alg: EdDSA, Key: p.Public().(ed25519.PublicKey)}, ed25519SignatureSize
	case *ecdsa.PrivateKey:
		if p == nil || p.Curve == nil {
			return nil, errors.New("accesstoken: an ECDSA private key without a curve")
		}
		if p.Curve != elliptic.P256() {
			return nil, fmt.Errorf("accesstoken: an ECDSA key on %s: ES256 signs with P-256 only", p.Curve.Params().Name)
		}
		// Bytes checks the scalar and that the public point is its own.
		if _, err := p.Bytes(); err != nil {
			return nil, errors.New("accesstoken: not a valid P-256 private key")
		}
		point, err := p.PublicKey.Bytes()
		if err != nil {
			return nil, errors.New("accesstoken: not a valid P-256 public key")
		}
		own, err := ecdsa.ParseUncompressedPublicKey(elliptic.P256(), point) // a copy the caller cannot change
		if err != nil {
			return nil, errors.New("accesstoken: not a valid P-256 public key")
		}
		pub, sigSize = jwk.PublicKey{Alg: ES256, Key: own}, es256SignatureSize
	case *rsa.PrivateKey:
		if p == nil || p.N == nil {
			return nil, errors.New("accesstoken: an RSA private key without a modulus")
		}
		if bits := p.N.BitLen(); bits < 2048 || bits > 8192 {
			return nil, fmt.Errorf("accesstoken: a %d-bit RSA key: RS256 signs with 2048 to 8192 bits", bits)
		}
		if err := p.Validate(); err != nil {
			return nil, errors.New("accesstoken: not a valid RSA private key")
		}
		p.Precompute() // once, not on every signature
		pub = jwk.PublicKey{Alg: RS256, Key: &rsa.PublicKey{N: new(big.Int).Set(p.N), E: p.E}}
		sigSize = p.Size()
	default:
		return nil, fmt.Errorf("accesstoken: a %T key: access tokens are signed with Ed25519, ECDSA P-256 or RSA keys", priv)
	}
	j, err := jwk.FromPublic("", pub)
	if err != nil {
		return nil, fmt.Errorf("accesstoken: %w", err)
	}
	k := &Key{ID: thumbprint(j), alg: pub.Alg, private: priv, public: pub, sigSize: sigSize}
	j.Kid = k.ID
	k.pubJWK = j
	h, err := json.Marshal(struct {
		Alg string `json:"alg"`
		Kid string `json:"kid"`
		Typ string `json:"typ"`
	}{k.alg, k.ID, TokenType})
	if err != nil {
		return nil, fmt.Errorf("accesstoken: header: %w", err)
	}
	k.header = base64.RawURLEncoding.EncodeToString(h)
	return k, nil
}

// NewEd25519Key wraps priv (NewKey for an Ed25519 key, whose id is the same
// thumbprint as ever). It panics if priv is not 64 bytes long.
func NewEd25519Key(priv ed25519.PrivateKey) *Key {
	k, err := NewKey(priv)
	if err != nil {
		panic(err)
	}
	return k
}

// ParsePrivateKey reads a PKCS #8 private key (DER, as MarshalPrivate writes
// it) and wraps it with NewKey.
func ParsePrivateKey(der []byte) (*Key, error) {
	priv, err := x509.ParsePKCS8PrivateKey(der)
	if err != nil {
		return nil, fmt.Errorf("accesstoken: not a PKCS #8 private key: %v", err)
	}
	s, ok := priv.(crypto.Signer)
	if !ok {
		return nil, fmt.Errorf("accesstoken: a %T key does not sign", priv)
	}
	return NewKey(s)
}

// MarshalPrivate returns the private key in PKCS #8 (DER).
func (k *Key) MarshalPrivate() ([]byte, error) {
	der, err := x509.MarshalPKCS8PrivateKey(k.private)
	if err != nil {
		return nil, fmt.Errorf("accesstoken: private key: %v", err)
	}
	return der, nil
}

// Alg returns the algorithm the key signs with: EdDSA, ES256 or RS256.
func (k *Key) Alg() string { return k.alg }

// Public returns the public key with its algorithm. It is shared with the
// key: do not modify it.
func (k *Key) Public() jwk.PublicKey { return k.public }

func (k *Key) jwk() jwk.Key { return k.pubJWK }

// thumbprint is the RFC 7638 JWK thumbprint of j: the base64url SHA-256 of
// the JSON object of its required members, in lexicographic order, without
// whitespace. The members are base64url or fixed names, which JSON does not
// escape.
func thumbprint(j jwk.Key) string {
	var canonical string
	switch j.Kty {
	case "OKP":
		canonical = `{"crv":"` + j.Crv + `","kty":"OKP","x":"` + j.X + `"}`
	case "EC":
		canonical = `{"crv":"` + j.Crv + `","kty":"EC","x":"` + j.X + `","y":"` + j.Y + `"}`
	case "RSA":
		canonical = `{"e":"` + j.E + `","kty":"RSA","n":"` + j.N + `"}`
	}
	sum := sha256.Sum256([]byte(canonical))
	return base64.RawURLEncoding.EncodeToString(sum[:])
}

// sign returns the JWS signature of signingInput (RFC 7515 §5.1) by the
// key's algorithm: Ed25519 over the bytes, or over their SHA-256 ECDSA
// P-256 as r||s (never ASN.1; s the lower of its two forms, see highS) or
// RSASSA-PKCS1-v1_5.
func (k *Key) sign(signingInput []byte) ([]byte, error) {
	var sig []byte
	switch p := k.private.(type) {
	case ed25519.PrivateKey:
		return ed25519.Sign(p, signingInput), nil
	case *ecdsa.PrivateKey:
		h := sha256.Sum256(signingInput)
		der, err := ecdsa.SignASN1(rand.Reader, p, h[:])
		if err != nil {
			return nil, err
		}
		if sig = ecdsaRaw(der); sig == nil {
			return nil, errors.New("ECDSA signature not in the expected ASN.1 form")
		}
		lowS(sig)
	case *rsa.PrivateKey:
		h := sha256.Sum256(signingInput)
		var err error
		if sig, err = rsa.SignPKCS1v15(nil, p, crypto.SHA256, h[:]); err != nil {
			return nil, err
		}
	}
	if len(sig) != k.sigSize {
		return nil, fmt.Errorf("a %s signature of %d bytes, not %d", k.alg, len(sig), k.sigSize)
	}
	return sig, nil
}

// signatureSize is the size in bytes of the signatures of pub, a key of the
// algorithm pub.Alg and no other; an error if it is not one.
func signatureSize(pub jwk.PublicKey) (int, error) {
	switch k := pub.Key.(type) {
	case ed25519.PublicKey:
		if pub.Alg == EdDSA && len(k) == ed25519.PublicKeySize {
			return ed25519SignatureSize, nil
		}
	case *ecdsa.PublicKey:
		if pub.Alg == ES256 && k != nil && k.Curve == elliptic.P256() {
			return es256SignatureSize, nil
		}
	case *rsa.PublicKey:
		if pub.Alg == RS256 && k != nil && k.N != nil {
			if n := k.Size(); n >= minRSASignatureSize && n <= maxRSASignatureSize {
				return n, nil
			}
		}
	}
	return 0, fmt.Errorf("not a usable %s key", short(pub.Alg))
}

// verify reports whether sig, of signatureSize(pub) bytes, is pub's
// signature of signingInput by pub's algorithm.
func verify(pub jwk.PublicKey, signingInput, sig []byte) bool {
	switch k := pub.Key.(type) {
	case ed25519.PublicKey:
		return pub.Alg == EdDSA && ed25519.Verify(k, signingInput, sig)
	case *ecdsa.PublicKey:
		if pub.Alg != ES256 || len(sig) != es256SignatureSize {
			return false
		}
		h := sha256.Sum256(signingInput)
		return ecdsa.VerifyASN1(k, h[:], ecdsaDER(sig))
	case *rsa.PublicKey:
		if pub.Alg != RS256 {
			return false
		}
		h := sha256.Sum256(signingInput)
		return rsa.VerifyPKCS1v15(k, crypto.SHA256, h[:], sig) == nil
	}
	return false
}

// p256Order is n, the order of P-256's base point, and p256HalfOrder n/2
// rounded down, both 32 bytes big-endian.
var (
	p256Order     = elliptic.P256().Params().N
	p256HalfOrder = new(big.Int).Rsh(p256Order, 1).FillBytes(make([]byte, 32))
)

// highS reports whether the s of the ES256 signature r||s is above n/2.
//
// An ECDSA signature (r, s) has a twin, (r, n-s), that verifies as well:
// anyone holding a token could make a second token string with the same
// claims from it, as a lenient base64 decoder would let them do with any
// token. Like the canonical encoding that makes the other segments
// unique, Sign makes s the lower of the two and Parse refuses the higher, so
// an ES256 token too has exactly one form (as an EdDSA one has: crypto/ed25519
// refuses an s that is not reduced; an RS256 one is unique anyway).
func highS(sig []byte) bool {
	return bytes.Compare(sig[32:], p256HalfOrder) > 0
}

// lowS replaces the s of the ES256 signature r||s by n-s when it is above
// n/2: the signature still verifies.
func lowS(sig []byte) {
	if highS(sig) {
		s := new(big.Int).SetBytes(sig[32:])
		s.Sub(p256Order, s).FillBytes(sig[32:])
	}
}

// ecdsaDER encodes the JWS ES256 signature r||s (32 bytes each) as the
// ASN.1 DER SEQUENCE of two INTEGERs that crypto/ecdsa verifies. A zero r
// or s encodes as the INTEGER 0, which does not verify.
func ecdsaDER(sig []byte) []byte {
	r, s := derInteger(sig[:32]), derInteger(sig[32:])
	out := make([]byte, 0, 2+len(r)+len(s))
	out = append(out, 0x30, byte(len(r)+len(s))) // at most 70: the short form
	return append(append(out, r...), s...)
}

// derInteger is the DER INTEGER of the unsigned big-endian b (at most 32
// bytes): the fewest bytes, and a leading zero where the high bit is set.
func derInteger(b []byte) []byte {
	for len(b) > 1 && b[0] == 0 {
		b = b[1:]
	}
	pad := b[0] >= 0x80
	out := make([]byte, 0, 3+len(b))
	out = append(out, 0x02, byte(len(b)))
	if pad {
		out[1]++
		out = append(out, 0)
	}
	return append(out, b...)
}

// ecdsaRaw converts a DER ECDSA P-256 signature (crypto/ecdsa's) to the JWS
// form r||s, each left-padded to 32 bytes; nil if der is not such a
// signature.
func ecdsaRaw(der []byte) []byte {
	if len(der) < 2 || der[0] != 0x30 || int(der[1]) != len(der)-2 {
		return nil
	}
	out := make([]byte, es256SignatureSize)
	rest := der[2:]
	for i := range 2 {
		if len(rest) < 2 || rest[0] != 0x02 || int(rest[1]) > len(rest)-2 {
			return nil
		}
		v := rest[2 : 2+int(rest[1])]
		rest = rest[2+int(rest[1]):]
		for len(v) > 0 && v[0] == 0 {
			v = v[1:]
		}
		if len(v) == 0 || len(v) > 32 {
			return nil
		}
		copy(out[32*(i+1)-len(v):32*(i+1)], v)
	}
	if len(rest) != 0 {
		return nil
	}
	return out
}

// short quotes s for an error, cut to a few characters: a header's alg is
// the sender's to choose, and an error holds no more of a token than that.
func short(s string) string {
	const most = 16
	if len(s) > most {
		return fmt.Sprintf("%q…", s[:most])
	}
	return fmt.Sprintf("%q", s)
}

// SignJWS signs payload, a JSON object, as an RFC 7515 compact JWS with the
// header {"alg","kid","typ"}: for tokens of other kinds than access tokens
// (Security Event Tokens, typ "secevent+jwt"), by the same key code.
func (k *Key) SignJWS(typ string, payload []byte) (string, error) {
	h, err := json.Marshal(struct {
		Alg string `json:"alg"`
		Kid string `json:"kid"`
		Typ string `json:"typ"`
	}{k.alg, k.ID, typ})
	if err != nil {
		return "", fmt.Errorf("accesstoken: header: %w", err)
	}
	b, err := k.compact(base64.RawURLEncoding.EncodeToString(h), payload)
	if err != nil {
		return "", err
	}
	return string(b), nil
}

// compact returns the RFC 7515 compact serialization of payload signed by
// k under the encoded header h.
func (k *Key) compact(h string, payload []byte) ([]byte, error) {
	enc := base64.RawURLEncoding
	buf := make([]byte, 0, len(h)+1+enc.EncodedLen(len(payload))+1+enc.EncodedLen(k.sigSize))
	buf = append(buf, h...)
	buf = append(buf, '.')
	buf = enc.AppendEncode(buf, payload)
	sig, err := k.sign(buf)
	if err != nil {
		return nil, fmt.Errorf("accesstoken: sign (%s): %w", k.alg, err)
	}
	buf = append(buf, '.')
	return enc.AppendEncode(buf, sig), nil
}

// JWKS returns the JSON Web Key Set of the public halves of keys, each once.
func JWKS(keys ...*Key) ([]byte, error) {
	set := jwk.Set{Keys: []jwk.Key{}}
	seen := map[string]bool{}
	for _, k := range keys {
		if k == nil || seen[k.ID] {
			continue
		}
		seen[k.ID] = true
		set.Keys = append(set.Keys, k.jwk())
	}
	b, err := json.Marshal(set)
	if err != nil {
		return nil, fmt.Errorf("accesstoken: jwks: %w", err)
	}
	return b, nil
}
