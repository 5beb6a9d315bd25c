// Package accesstoken signs and verifies the ledger's JWT access tokens
// (RFC 9068 profile: typ at+jwt, kid in the header) and publishes their keys as
// a JWKS.
package accesstoken

import (
	"bytes"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/sessionledger/sessionledger/jwk"
)

// TokenType is the JWT typ header of access tokens (RFC 9068 §2.1).
const TokenType = "at+jwt"

// ReservedClaims may not be set by custom claims: the registered JWT claims
// (RFC 7519 §4.1) and those the ledger sets itself.
var ReservedClaims = []string{"iss", "sub", "aud", "exp", "nbf", "iat", "jti", "sid", SessionSeqClaim, "client_id", "scope"}

// SessionSeqClaim is the claim holding the stream sequence of the session's
// session.issued event. A user's revoke-all or deactivation at stream
// sequence c ends exactly the sessions issued before it, those whose
// sequence is below c: verifiers decide by it, as the ledger does, instead of
// comparing clocks.
const SessionSeqClaim = "sid_seq"

// maxSessionSeq is the largest sequence a JSON number carries exactly.
const maxSessionSeq = 1<<53 - 1

// MaxTokenLength is the longest access token, in bytes, that Parse (so
// Signer.Verify and the verifier too) accepts: a longer one is refused with
// ErrTooLong before any of it is decoded, hashed or looked up, and Sign
// refuses to make one.
//
// The ledger's tokens are a few hundred bytes. The largest it can issue is
// about 35 000 bytes: 4096 bytes of custom claims that JSON escaping can
// enlarge sixfold (each <, > and & becomes \u003c), a 255-byte user id
// likewise, and base64 adding a third. 64 KiB leaves room for that and for a
// long issuer and audience, and still keeps what a forged token can cost to
// refuse (one SHA-512 over at most 64 KiB and one signature check) within a
// few first verifications.
const MaxTokenLength = 64 << 10

// maxHeaderLength is the longest encoded JOSE header Parse decodes; it is the
// one part of a token decoded before the signature is checked. The ledger's
// is 110 characters ({"alg":"EdDSA","kid":<a 43-character thumbprint>,
// "typ":"at+jwt"}).
const maxHeaderLength = 512

// signatureLength is the length of the encoded signature segment: an Ed25519
// signature of 64 bytes is 86 base64url characters.
var signatureLength = base64.RawURLEncoding.EncodedLen(ed25519.SignatureSize)

// ErrInvalid is returned for any access token that does not verify.
var ErrInvalid = errors.New("access token is not valid")

// ErrTooLong is returned for a token longer than MaxTokenLength; it matches
// ErrInvalid too.
var ErrTooLong = fmt.Errorf("%w: longer than %d bytes", ErrInvalid, MaxTokenLength)

// Key is a signing key with its key id.
type Key struct {
	ID      string
	private ed25519.PrivateKey
	public  ed25519.PublicKey
	header  string // the encoded JOSE header of tokens it signs: the same for all
}

// NewEd25519Key wraps priv; its id is the RFC 7638 JWK thumbprint of the
// public key, so the same key always has the same id.
func NewEd25519Key(priv ed25519.PrivateKey) *Key {
	pub := priv.Public().(ed25519.PublicKey)
	x := base64.RawURLEncoding.EncodeToString(pub)
	sum := sha256.Sum256([]byte(`{"crv":"Ed25519","kty":"OKP","x":"` + x + `"}`))
	k := &Key{ID: base64.RawURLEncoding.EncodeToString(sum[:]), private: priv, public: pub}
	h, _ := json.Marshal(struct {
		Alg string `json:"alg"`
		Kid string `json:"kid"`
		Typ string `json:"typ"`
	}{"EdDSA", k.ID, TokenType})
	k.header = base64.RawURLEncoding.EncodeToString(h)
	return k
}

// Claims are what the ledger puts in an access token.
type Claims struct {
	Subject    string
	SessionID  string
	SessionSeq uint64 // sid_seq: the stream sequence of the session's issue
	ClientID   string // client_id (RFC 9068 §2.2): the client the session was issued for
	ID         string // jti
	IssuedAt   time.Time
	ExpiresAt  time.Time
	Custom     json.RawMessage // a JSON object whose members become top-level claims
}

// Verified are the claims of a verified access token.
type Verified struct {
	Subject   string
	SessionID string
	// SessionSeq is the stream sequence of the session's issue (sid_seq);
	// 0 in a token of a ledger older than the claim.
	SessionSeq uint64
	// ClientID is the client the session was issued for (client_id); empty
	// in a token of a ledger older than the claim.
	ClientID  string
	ID        string
	IssuedAt  time.Time
	ExpiresAt time.Time
	Issuer    string
	Audience  []string
	Custom    map[string]any // the custom claims; nil when there are none
}

// Signer signs access tokens with its active key and verifies tokens signed by
// any key it publishes.
type Signer struct {
	issuer   string
	audience string
	active   *Key
	keys     map[string]*Key
	jwks     []byte
}

// NewSigner returns a signer for issuer and audience that signs with active and
// also publishes (and accepts) others, for example a retired key whose tokens
// have not all expired yet.
func NewSigner(issuer, audience string, active *Key, others ...*Key) (*Signer, error) {
	if issuer == "" || audience == "" || active == nil {
		return nil, errors.New("accesstoken: issuer, audience and an active key are required")
	}
	s := &Signer{issuer: issuer, audience: audience, active: active, keys: map[string]*Key{active.ID: active}}
	set := jwk.Set{Keys: []jwk.Key{active.jwk()}}
	for _, k := range others {
		if _, dup := s.keys[k.ID]; !dup {
			s.keys[k.ID] = k
			set.Keys = append(set.Keys, k.jwk())
		}
	}
	var err error
	if s.jwks, err = json.Marshal(set); err != nil {
		return nil, fmt.Errorf("accesstoken: jwks: %w", err)
	}
	return s, nil
}

// Issuer returns the iss claim the signer sets.
func (s *Signer) Issuer() string { return s.issuer }

// JWKS returns the JSON Web Key Set of the published keys.
func (s *Signer) JWKS() []byte { return s.jwks }

func (k *Key) jwk() jwk.Key { return jwk.Ed25519(k.ID, k.public) }

// tokenClaims is the JWT payload: the registered claims and sid, followed by
// the custom claims as top-level members.
type tokenClaims struct {
	jwt.RegisteredClaims
	SessionID  string          `json:"sid"`
	SessionSeq uint64          `json:"sid_seq,omitempty"`
	ClientID   string          `json:"client_id,omitempty"`
	custom     json.RawMessage `json:"-"`
}

func (c tokenClaims) MarshalJSON() ([]byte, error) {
	b, err := json.Marshal(struct {
		jwt.RegisteredClaims
		SessionID  string `json:"sid"`
		SessionSeq uint64 `json:"sid_seq,omitempty"`
		ClientID   string `json:"client_id,omitempty"`
	}{c.RegisteredClaims, c.SessionID, c.SessionSeq, c.ClientID})
	if err != nil || len(c.custom) <= 2 {
		return b, err
	}
	// b ends in '}', custom is a validated object starting with '{'.
	out := make([]byte, 0, len(b)+len(c.custom))
	out = append(out, b[:len(b)-1]...)
	out = append(out, ',')
	return append(out, bytes.TrimSpace(c.custom)[1:]...), nil
}

// quotedReserved are the reserved names as they appear in JSON.
var quotedReserved = func() (out [][]byte) {
	for _, name := range ReservedClaims {
		out = append(out, []byte(`"`+name+`"`))
	}
	return out
}()

// withoutReserved returns custom claims without the names the ledger sets
// itself. Issue refuses them, but a session issued before a name was
// reserved (sid_seq) may carry it, and appended after the ledger's own it
// would win in a decoder that keeps the last duplicate. The check is a byte
// search; only claims that hold a reserved name are decoded.
func withoutReserved(custom json.RawMessage) json.RawMessage {
	if !slices.ContainsFunc(quotedReserved, func(q []byte) bool { return bytes.Contains(custom, q) }) {
		return custom
	}
	var m map[string]json.RawMessage
	if json.Unmarshal(custom, &m) != nil {
		return nil
	}
	for _, name := range ReservedClaims {
		delete(m, name)
	}
	out, err := json.Marshal(m)
	if err != nil {
		return nil
	}
	return out
}

// Sign returns a signed access token for c: EdDSA over the key's precomputed
// header and the claims (RFC 7515 compact serialization).
func (s *Signer) Sign(c Claims) (string, error) {
	payload, err := json.Marshal(tokenClaims{
		RegisteredClaims: jwt.RegisteredClaims{
			Issuer:    s.issuer,
			Subject:   c.Subject,
			Audience:  jwt.ClaimStrings{s.audience},
			ExpiresAt: jwt.NewNumericDate(c.ExpiresAt),
			IssuedAt:  jwt.NewNumericDate(c.IssuedAt),
			ID:        c.ID,
		},
		SessionID:  c.SessionID,
		SessionSeq: c.SessionSeq,
		ClientID:   c.ClientID,
		custom:     withoutReserved(c.Custom),
	})
	if err != nil {
		return "", fmt.Errorf("accesstoken: sign: %w", err)
	}
	enc := base64.RawURLEncoding
	h := s.active.header
	buf := make([]byte, 0, len(h)+1+enc.EncodedLen(len(payload))+1+enc.EncodedLen(ed25519.SignatureSize))
	buf = append(buf, h...)
	buf = append(buf, '.')
	buf = enc.AppendEncode(buf, payload)
	sig := ed25519.Sign(s.active.private, buf)
	buf = append(buf, '.')
	buf = enc.AppendEncode(buf, sig)
	if len(buf) > MaxTokenLength {
		return "", fmt.Errorf("accesstoken: sign: the token would be %d bytes, more than MaxTokenLength (%d)", len(buf), MaxTokenLength)
	}
	return string(buf), nil
}

// Verify checks token at now by the rules of Parse, with the signer's
// issuer, audience and published keys and no leeway (the ledger reads its own
// clock).
func (s *Signer) Verify(token string, now time.Time) (Verified, error) {
	return Parse(token, now, Rules{Issuer: s.issuer, Audience: s.audience}, func(kid string) (ed25519.PublicKey, error) {
		k, ok := s.keys[kid]
		if !ok {
			return nil, errors.New("unknown kid")
		}
		return k.public, nil
	})
}

// topLevelMembers counts the members of the JSON object payload, which the
// claims have already been decoded from (so it is valid JSON): the colons
// outside strings at depth one. Fewer decoded claims than members means a
// member is named twice, and decoders disagree on which copy wins.
func topLevelMembers(payload []byte) int {
	n, depth, inString, escaped := 0, 0, false, false
	for _, c := range payload {
		switch {
		case inString:
			switch {
			case escaped:
				escaped = false
			case c == '\\':
				escaped = true
			case c == '"':
				inString = false
			}
		case c == '"':
			inString = true
		case c == '{' || c == '[':
			depth++
		case c == '}' || c == ']':
			depth--
		case c == ':' && depth == 1:
			n++
		}
	}
	return n
}

// Rules are what Parse requires of a token besides its signature.
type Rules struct {
	Issuer   string
	Audience string
	// Leeway is the clock skew allowed on exp, nbf and iat.
	Leeway time.Duration
	// MaxLifetime, when positive, refuses tokens whose exp is further than
	// this after their iat.
	MaxLifetime time.Duration
}

// Parse is the one definition of a valid access token, for the ledger and for
// the verifier other services import: at most MaxTokenLength bytes, three
// segments of canonical base64url (no padding, no character outside the URL
// alphabet, no line break, zero trailing bits: exactly one string encodes a
// token), an EdDSA signature of 64 bytes (the only algorithm accepted) by the
// key that key returns for the header's kid, typ at+jwt, no crit, iss and aud
// as in r, exp required and not passed, iat and nbf not in the future (each
// with r.Leeway), sub, sid, iat and exp present, sid_seq a positive integer
// and client_id a non-empty string when present, no claim named twice, and the lifetime within r.MaxLifetime.
// Members that are not ReservedClaims are returned as the custom claims.
//
// It checks the length first, then decodes only the header (itself bounded)
// and checks the signature over the token's own header.payload bytes before
// it decodes the claims: what it spends on a forged token is bounded and
// independent of the claims it carries.
//
// Any failure is ErrInvalid, with the reason wrapped for operators; it never
// contains the token.
func Parse(token string, now time.Time, r Rules, key func(kid string) (ed25519.PublicKey, error)) (Verified, error) {
	if len(token) > MaxTokenLength {
		return Verified{}, ErrTooLong
	}
	payload, err := verifySignature(token, key)
	if err != nil {
		return Verified{}, fmt.Errorf("%w: %v", ErrInvalid, err)
	}
	claims := jwt.MapClaims{}
	if err := json.Unmarshal(payload, &claims); err != nil {
		return Verified{}, fmt.Errorf("%w: claims: %v", ErrInvalid, err)
	}
	if topLevelMembers(payload) != len(claims) {
		return Verified{}, fmt.Errorf("%w: the claims name a member twice", ErrInvalid)
	}
	err = jwt.NewValidator(
		jwt.WithIssuer(r.Issuer),
		jwt.WithAudience(r.Audience),
		jwt.WithExpirationRequired(),
		jwt.WithIssuedAt(),
		jwt.WithLeeway(r.Leeway),
		jwt.WithTimeFunc(func() time.Time { return now }),
	).Validate(claims)
	if err != nil {
		return Verified{}, fmt.Errorf("%w: %v", ErrInvalid, err)
	}
	var v Verified
	v.Subject, _ = claims["sub"].(string)
	v.SessionID, _ = claims["sid"].(string)
	v.ID, _ = claims["jti"].(string)
	v.Issuer, _ = claims["iss"].(string)
	v.Audience, _ = claims.GetAudience()
	iat, _ := claims.GetIssuedAt()
	exp, _ := claims.GetExpirationTime()
	if v.Subject == "" || v.SessionID == "" || iat == nil || exp == nil {
		return Verified{}, fmt.Errorf("%w: sub, sid, iat and exp are required", ErrInvalid)
	}
	v.IssuedAt, v.ExpiresAt = iat.Time, exp.Time
	if raw, ok := claims[SessionSeqClaim]; ok {
		seq, ok := raw.(float64)
		if !ok || seq < 1 || seq > maxSessionSeq || seq != float64(uint64(seq)) {
			return Verified{}, fmt.Errorf("%w: %s must be a positive integer", ErrInvalid, SessionSeqClaim)
		}
		v.SessionSeq = uint64(seq)
	}
	if raw, ok := claims["client_id"]; ok {
		if v.ClientID, ok = raw.(string); !ok || v.ClientID == "" {
			return Verified{}, fmt.Errorf("%w: client_id must be a non-empty string", ErrInvalid)
		}
	}
	if r.MaxLifetime > 0 && v.ExpiresAt.Sub(v.IssuedAt) > r.MaxLifetime {
		return Verified{}, fmt.Errorf("%w: lifetime %v exceeds the configured maximum %v", ErrInvalid, v.ExpiresAt.Sub(v.IssuedAt), r.MaxLifetime)
	}
	for _, name := range ReservedClaims {
		delete(claims, name)
	}
	if len(claims) > 0 {
		v.Custom = claims
	}
	return v, nil
}

// verifySignature checks the JWS compact serialization token (RFC 7515 §7.1)
// and returns its decoded payload, which it has not parsed: three segments,
// a header of at most maxHeaderLength characters with alg EdDSA, typ at+jwt,
// a kid and no crit, and a 64-byte Ed25519 signature over the token's own
// header.payload bytes by the key that key returns for the kid.
func verifySignature(token string, key func(kid string) (ed25519.PublicKey, error)) ([]byte, error) {
	header, rest, ok1 := strings.Cut(token, ".")
	payload, signature, ok2 := strings.Cut(rest, ".")
	if !ok1 || !ok2 || strings.Contains(signature, ".") {
		return nil, errors.New("not three segments")
	}
	if len(header) > maxHeaderLength {
		return nil, fmt.Errorf("header longer than %d characters", maxHeaderLength)
	}
	if len(signature) != signatureLength {
		return nil, fmt.Errorf("signature is not %d characters (%d bytes)", signatureLength, ed25519.SignatureSize)
	}
	sig, err := decodeSegment(signature)
	if err != nil {
		return nil, fmt.Errorf("signature: %v", err)
	}
	h, err := decodeSegment(header)
	if err != nil {
		return nil, fmt.Errorf("header: %v", err)
	}
	var fields map[string]any
	if err := json.Unmarshal(h, &fields); err != nil {
		return nil, fmt.Errorf("header: %v", err)
	}
	if alg, _ := fields["alg"].(string); alg != jwt.SigningMethodEdDSA.Alg() {
		return nil, fmt.Errorf("alg %q is not %s", alg, jwt.SigningMethodEdDSA.Alg())
	}
	if typ, _ := fields["typ"].(string); typ != TokenType {
		return nil, fmt.Errorf("typ %q is not %s", typ, TokenType)
	}
	if _, ok := fields["crit"]; ok {
		return nil, errors.New("header has crit: no extension is understood")
	}
	kid, _ := fields["kid"].(string)
	pub, err := key(kid)
	if err != nil {
		return nil, fmt.Errorf("key: %v", err)
	}
	if len(pub) != ed25519.PublicKeySize {
		return nil, errors.New("key: not an Ed25519 public key")
	}
	if !ed25519.Verify(pub, []byte(token[:len(header)+1+len(payload)]), sig) {
		return nil, errors.New("signature does not verify")
	}
	p, err := decodeSegment(payload)
	if err != nil {
		return nil, fmt.Errorf("payload: %v", err)
	}
	return p, nil
}

// strictBase64 refuses padding, characters outside the URL alphabet and
// non-zero trailing bits (RFC 4648 §3.5) but, like every encoding of
// encoding/base64, skips CR and LF, which decodeSegment refuses itself.
var strictBase64 = base64.RawURLEncoding.Strict()

// decodeSegment decodes a segment of a token that must be canonical
// base64url without padding (RFC 7515 §2): the only string that encodes its
// bytes, so that a token cannot be altered and still verify.
func decodeSegment(seg string) ([]byte, error) {
	if strings.IndexByte(seg, '\n') >= 0 || strings.IndexByte(seg, '\r') >= 0 {
		return nil, errors.New("not canonical base64url: a line break")
	}
	b, err := strictBase64.DecodeString(seg)
	if err != nil {
		return nil, fmt.Errorf("not canonical base64url: %v", err)
	}
	return b, nil
}

// BearerToken returns the token of an Authorization header value of the
// Bearer scheme (RFC 6750 §2.1): the scheme name in any case (RFC 9110
// §11.1), one or more spaces, then the token, which holds no whitespace.
// Whitespace around the whole value is the HTTP parser's to remove.
func BearerToken(header string) (string, bool) {
	scheme, rest, ok := strings.Cut(header, " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") {
		return "", false
	}
	token := strings.TrimLeft(rest, " ")
	if token == "" || strings.ContainsAny(token, " \t\r\n\v\f") {
		return "", false
	}
	return token, true
}
