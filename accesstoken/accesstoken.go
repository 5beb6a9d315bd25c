// Package accesstoken signs and verifies the ledger's JWT access tokens
// (RFC 9068 profile: typ at+jwt, kid in the header) and publishes their keys as
// a JWKS. A token is signed with EdDSA (Ed25519), ES256 (ECDSA P-256) or
// RS256 (RSA PKCS #1 v1.5), whichever its key's type is: each key signs and
// verifies with that one algorithm only, so a token whose header names another
// for the key of its kid is refused.
package accesstoken

import (
	"bytes"
	"crypto"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync/atomic"
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
// refuse (one SHA-512 or SHA-256 over at most 64 KiB and one signature check)
// within a few first verifications.
const MaxTokenLength = 64 << 10

// maxHeaderLength is the longest encoded JOSE header Parse decodes; it is the
// one part of a token decoded before the signature is checked. The ledger's
// is 110 characters whatever the algorithm ({"alg":"EdDSA","kid":<a
// 43-character thumbprint>,"typ":"at+jwt"}, and ES256 and RS256 are as long
// as EdDSA).
const maxHeaderLength = 512

// The lengths of the encoded signature segment, checked before it is decoded:
// exactly signatureLength for EdDSA and ES256 (64 bytes, 86 base64url
// characters), from minRSASignatureLength to maxRSASignatureLength for RS256
// before the key is looked up, and then exactly that of the key's modulus
// (342 characters for a 2048-bit key).
var (
	signatureLength       = base64.RawURLEncoding.EncodedLen(ed25519SignatureSize)
	minRSASignatureLength = base64.RawURLEncoding.EncodedLen(minRSASignatureSize)
	maxRSASignatureLength = base64.RawURLEncoding.EncodedLen(maxRSASignatureSize)
)

// ErrInvalid is returned for any access token that does not verify.
var ErrInvalid = errors.New("access token is not valid")

// ErrTooLong is returned for a token longer than MaxTokenLength; it matches
// ErrInvalid too.
var ErrTooLong = fmt.Errorf("%w: longer than %d bytes", ErrInvalid, MaxTokenLength)

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
// any key it publishes. It is safe for concurrent use, SetKeys included.
type Signer struct {
	issuer   string
	audience string
	state    atomic.Pointer[keySet]
}

// keySet is what SetKeys replaces at once: never modified once stored.
type keySet struct {
	active *Key
	keys   map[string]*Key
	jwks   []byte
}

// NewSigner returns a signer for issuer and audience that signs with active and
// also publishes (and accepts) others, for example a retired key whose tokens
// have not all expired yet.
func NewSigner(issuer, audience string, active *Key, others ...*Key) (*Signer, error) {
	if issuer == "" || audience == "" || active == nil {
		return nil, errors.New("accesstoken: issuer, audience and an active key are required")
	}
	s := &Signer{issuer: issuer, audience: audience}
	if err := s.SetKeys(active, others...); err != nil {
		return nil, err
	}
	return s, nil
}

// SetKeys replaces, at once, the key the signer signs with and the keys it
// publishes and accepts: active and others (a key given twice counts once).
// A Sign, Verify or JWKS running meanwhile sees either the keys before or
// those after, never a mix; tokens of a key left out no longer verify.
func (s *Signer) SetKeys(active *Key, others ...*Key) error {
	if active == nil {
		return errors.New("accesstoken: an active key is required")
	}
	ks := &keySet{active: active, keys: map[string]*Key{}}
	set := jwk.Set{Keys: []jwk.Key{}}
	for _, k := range append([]*Key{active}, others...) {
		if k == nil || k.private == nil || k.header == "" {
			return errors.New("accesstoken: a key not made by NewKey")
		}
		if prev, dup := ks.keys[k.ID]; dup {
			if prev.alg != k.alg || !prev.public.Key.(interface{ Equal(crypto.PublicKey) bool }).Equal(k.public.Key) {
				return fmt.Errorf("accesstoken: two different keys with the id %s", k.ID)
			}
			continue
		}
		ks.keys[k.ID] = k
		set.Keys = append(set.Keys, k.jwk())
	}
	var err error
	if ks.jwks, err = json.Marshal(set); err != nil {
		return fmt.Errorf("accesstoken: jwks: %w", err)
	}
	s.state.Store(ks)
	return nil
}

// Active returns the key the signer signs with now.
func (s *Signer) Active() *Key { return s.state.Load().active }

// Issuer returns the iss claim the signer sets.
func (s *Signer) Issuer() string { return s.issuer }

// JWKS returns the JSON Web Key Set of the published keys. It is shared: do
// not modify it.
func (s *Signer) JWKS() []byte { return s.state.Load().jwks }

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

// Sign returns a signed access token for c, signed by the active key of the
// moment with its algorithm over the key's precomputed header and the claims
// (RFC 7515 compact serialization).
func (s *Signer) Sign(c Claims) (string, error) {
	k := s.state.Load().active
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
	buf, err := k.compact(k.header, payload)
	if err != nil {
		return "", err
	}
	if len(buf) > MaxTokenLength {
		return "", fmt.Errorf("accesstoken: sign: the token would be %d bytes, more than MaxTokenLength (%d)", len(buf), MaxTokenLength)
	}
	return string(buf), nil
}

// Verify checks token at now by the rules of Parse, with the signer's
// issuer, audience and published keys (those of the moment) and no leeway
// (the ledger reads its own clock). Each key verifies by its own algorithm
// only.
func (s *Signer) Verify(token string, now time.Time) (Verified, error) {
	keys := s.state.Load().keys
	return Parse(token, now, Rules{Issuer: s.issuer, Audience: s.audience}, func(kid string) (jwk.PublicKey, error) {
		k, ok := keys[kid]
		if !ok {
			return jwk.PublicKey{}, errors.New("unknown kid")
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
// token), a header of at most maxHeaderLength characters that names no member
// twice, typ at+jwt, no crit, and a signature by the key that key returns for
// the header's kid, made with that key's one algorithm, which the header's
// alg must name exactly:
//
//   - EdDSA: an Ed25519 signature of 64 bytes;
//   - ES256: ECDSA P-256 over SHA-256 as r||s, 64 bytes, never ASN.1, with s
//     at most n/2 (an ECDSA signature has two forms, and only this one is
//     taken, so that the token too has exactly one);
//   - RS256: RSASSA-PKCS1-v1_5 over SHA-256, as long as the key's modulus;
//
// and alg none, HS256 or any other is refused. Then the claims: iss and aud
// as in r, exp required and not passed, iat and nbf not in the future (each
// with r.Leeway), sub, sid, iat and exp present, sid_seq a positive integer
// and client_id a non-empty string when present, no claim named twice, and
// the lifetime within r.MaxLifetime.
// Members that are not ReservedClaims are returned as the custom claims.
//
// It checks the length first, then decodes only the header (itself bounded),
// checks the signature segment's length for the header's alg before the key
// is looked up and for the key's size before it is decoded, and checks the
// signature over the token's own header.payload bytes before it decodes the
// claims: what it spends on a forged token is bounded and independent of the
// claims it carries.
//
// Any failure is ErrInvalid, with the reason wrapped for operators; it never
// contains the token.
func Parse(token string, now time.Time, r Rules, key func(kid string) (jwk.PublicKey, error)) (Verified, error) {
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
// a header of at most maxHeaderLength characters with an accepted alg, typ
// at+jwt, a kid, no crit and no member twice, and a signature over the
// token's own header.payload bytes by the key that key returns for the kid,
// whose algorithm is exactly the header's alg and whose signature size the
// segment has.
func verifySignature(token string, key func(kid string) (jwk.PublicKey, error)) ([]byte, error) {
	header, rest, ok1 := strings.Cut(token, ".")
	payload, signature, ok2 := strings.Cut(rest, ".")
	if !ok1 || !ok2 || strings.Contains(signature, ".") {
		return nil, errors.New("not three segments")
	}
	if len(header) > maxHeaderLength {
		return nil, fmt.Errorf("header longer than %d characters", maxHeaderLength)
	}
	if n := len(signature); n != signatureLength && (n < minRSASignatureLength || n > maxRSASignatureLength) {
		return nil, fmt.Errorf("signature of %d characters: none of the accepted algorithms' sizes", n)
	}
	h, err := decodeSegment(header)
	if err != nil {
		return nil, fmt.Errorf("header: %v", err)
	}
	var fields map[string]any
	if err := json.Unmarshal(h, &fields); err != nil {
		return nil, fmt.Errorf("header: %v", err)
	}
	if topLevelMembers(h) != len(fields) {
		return nil, errors.New("header names a member twice")
	}
	alg, _ := fields["alg"].(string)
	switch alg {
	case EdDSA, ES256:
		if len(signature) != signatureLength {
			return nil, fmt.Errorf("signature is not %d characters (%d bytes) for %s", signatureLength, ed25519SignatureSize, alg)
		}
	case RS256:
		if len(signature) < minRSASignatureLength || len(signature) > maxRSASignatureLength {
			return nil, fmt.Errorf("signature is not %d to %d characters for %s", minRSASignatureLength, maxRSASignatureLength, alg)
		}
	default:
		return nil, fmt.Errorf("alg %s is none of %s", short(alg), strings.Join(Algorithms, ", "))
	}
	if typ, _ := fields["typ"].(string); typ != TokenType {
		return nil, fmt.Errorf("typ %s is not %s", short(typ), TokenType)
	}
	if _, ok := fields["crit"]; ok {
		return nil, errors.New("header has crit: no extension is understood")
	}
	kid, _ := fields["kid"].(string)
	pub, err := key(kid)
	if err != nil {
		return nil, fmt.Errorf("key: %v", err)
	}
	if pub.Alg != alg {
		return nil, fmt.Errorf("alg %s is not %s, the algorithm of the key for the kid", alg, short(pub.Alg))
	}
	size, err := signatureSize(pub)
	if err != nil {
		return nil, fmt.Errorf("key: %v", err)
	}
	if want := base64.RawURLEncoding.EncodedLen(size); len(signature) != want {
		return nil, fmt.Errorf("signature is not %d characters (%d bytes) for the key", want, size)
	}
	sig, err := decodeSegment(signature)
	if err != nil {
		return nil, fmt.Errorf("signature: %v", err)
	}
	if alg == ES256 && len(sig) == es256SignatureSize && highS(sig) {
		return nil, errors.New("ES256 signature with s above n/2: only the lower of its two forms is accepted")
	}
	if len(sig) != size || !verify(pub, []byte(token[:len(header)+1+len(payload)]), sig) {
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
