package transmit

import (
	"context"
	"crypto/hmac"
	"encoding/base64"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"
)

// Receivers as OAuth 2.0 clients (the CAEP Interoperability Profile's
// authorization scheme, urn:ietf:rfc:6749): a receiver authenticates at the
// token endpoint with the client credentials grant (RFC 6749 §4.4), its id
// as client_id and its token as client_secret, and gets a short-lived
// access token for the scopes it asks (ssf.manage, ssf.read, or both), which
// the SSF endpoints take as a bearer token.

// AccessTokenTTL is the lifetime of a receiver's access token.
const AccessTokenTTL = time.Hour

// AccessTokenPrefix begins a receiver's access token:
// slsa_<receiver id>.<expiry, unix>.<scopes: m for ssf.manage, r for ssf.read>.<tag>.
const AccessTokenPrefix = "slsa_"

// Errors of IssueAccessToken (RFC 6749 §5.2).
var (
	ErrInvalidClient = errors.New("transmit: client authentication failed")
	ErrInvalidScope  = errors.New("transmit: invalid scope")
)

// IssueAccessToken authenticates the receiver clientID by its secret (its
// slsr_ token) and returns an access token for scope (space-separated; all
// of the receiver's scopes when empty), the scopes granted and the
// lifetime.
func (t *Transmitter) IssueAccessToken(ctx context.Context, clientID, secret, scope string) (string, []string, time.Duration, error) {
	r, err := t.authenticateSecret(ctx, secret)
	if errors.Is(err, ErrUnauthenticated) || (err == nil && r.ID != clientID) {
		return "", nil, 0, ErrInvalidClient
	}
	if err != nil {
		return "", nil, 0, err
	}
	scopes := r.Scopes
	if scope != "" {
		scopes = nil
		for _, s := range strings.Fields(scope) {
			if !slices.Contains(r.Scopes, s) {
				return "", nil, 0, fmt.Errorf("%w: the receiver may have %s", ErrInvalidScope, strings.Join(r.Scopes, " "))
			}
			if !slices.Contains(scopes, s) {
				scopes = append(scopes, s)
			}
		}
		slices.Sort(scopes)
	}
	exp := t.now().Add(AccessTokenTTL).Unix()
	letters := ""
	for _, s := range scopes {
		letters += scopeLetters[s]
	}
	body := r.ID + "." + strconv.FormatInt(exp, 10) + "." + letters
	tag := base64.RawURLEncoding.EncodeToString(t.reg.sealer.tag(AccessTokenPrefix + body))
	return AccessTokenPrefix + body + "." + tag, scopes, AccessTokenTTL, nil
}

// authenticateAccess returns the receiver an access token was issued to,
// with the token's scopes (those the receiver still has): the tag compared
// in constant time, the expiry checked, and the receiver still registered.
func (t *Transmitter) authenticateAccess(ctx context.Context, token string) (*Receiver, error) {
	rest, _ := strings.CutPrefix(token, AccessTokenPrefix)
	parts := strings.Split(rest, ".")
	if len(parts) != 4 || !validID(parts[0]) {
		return nil, ErrUnauthenticated
	}
	tag, err := base64.RawURLEncoding.DecodeString(parts[3])
	if err != nil || !hmac.Equal(tag, t.reg.sealer.tag(AccessTokenPrefix+strings.Join(parts[:3], "."))) {
		return nil, ErrUnauthenticated
	}
	exp, err := strconv.ParseInt(parts[1], 10, 64)
	if err != nil || !t.now().Before(time.Unix(exp, 0)) {
		return nil, ErrUnauthenticated
	}
	r, err := t.receiver(ctx, parts[0])
	if err != nil {
		return nil, err
	}
	var scopes []string
	for s, letter := range scopeLetters {
		if strings.Contains(parts[2], letter) && r.HasScope(s) {
			scopes = append(scopes, s)
		}
	}
	slices.Sort(scopes)
	r.Scopes = scopes
	return r, nil
}

// scopeLetters name the scopes in an access token.
var scopeLetters = map[string]string{ScopeManage: "m", ScopeRead: "r"}
