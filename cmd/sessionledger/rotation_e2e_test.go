package main

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sessionledger/sessionledger/accesstoken"
	"github.com/sessionledger/sessionledger/eventstore"
	"github.com/sessionledger/sessionledger/integrity"
	"github.com/sessionledger/sessionledger/internal/natstest"
	"github.com/sessionledger/sessionledger/jwk"
	"github.com/sessionledger/sessionledger/keyring"
	"github.com/sessionledger/sessionledger/verifier"
)

// The schedule of the rotation tests: seconds where production has days.
const (
	rotPrepublish = 2 * time.Second
	rotInterval   = 3 * time.Second
	rotTTL        = 2 * time.Second
	rotLeeway     = time.Second
)

// rotMaxAge is the JWKS max-age the ledger serves with rotPrepublish.
var rotMaxAge = keyring.JWKSMaxAge(rotPrepublish)

// jwksSeen is the JWKS as fetched at one moment.
type jwksSeen struct {
	at   time.Time
	body json.RawMessage
	kids []string
}

// signed is one access token handed out, with when.
type signed struct {
	token, kid string
	at, exp    time.Time
}

// TestKeysRotateWhileClientsRefresh runs, for each signing algorithm, two
// instances on a 3-node cluster that rotate their signing key every three
// seconds (each new key published two seconds before it signs, access tokens
// of two seconds), while clients refresh sessions on both instances and the
// project's verifier checks every token as it comes; an operator rotates the
// refresh-token, tag and checkpoint keys on the way. Then, for every token,
// against the JWKS a verifier honouring the served max-age could hold when
// the token arrived: jose (Node), lestrrat-go/jwx and accesstoken.Parse
// verify it. Each new key was in the JWKS before its first token; no key
// left the JWKS before its last token expired, and the first ones did
// leave; a session idle since before the refresh-token keys rotated still
// refreshes; events and checkpoints made under the new tag and checkpoint
// keys are read and verified, by a restarted instance too.
func TestKeysRotateWhileClientsRefresh(t *testing.T) {
	for _, alg := range accesstoken.Algorithms {
		t.Run(alg, func(t *testing.T) { testKeyRotation(t, alg) })
	}
}

func testKeyRotation(t *testing.T, alg string) {
	mutate := func(c *Config) {
		c.SigningAlg, c.SigningKeyRotation, c.SigningKeyPrepublish = alg, rotInterval, rotPrepublish
		c.MaxAccessTokenTTL, c.KeyRetireLeeway, c.KeyPropagation = rotTTL, rotLeeway, time.Second
	}
	cluster, hs, dir := bootClusterWith(t, 2, mutate)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()

	var mu sync.Mutex
	var seen []jwksSeen
	var pollErr error
	polled := make(chan struct{})
	go func() { // a JWKS follower, every 100 ms, alternating instances
		defer close(polled)
		for i := 0; ctx.Err() == nil; i++ {
			s, err := fetchJWKS(hs[i%2].url)
			mu.Lock()
			if err != nil && pollErr == nil && ctx.Err() == nil {
				pollErr = err
			}
			if err == nil {
				seen = append(seen, s)
			}
			mu.Unlock()
			time.Sleep(100 * time.Millisecond)
		}
	}()

	conn, err := eventstore.Connect(cluster.URLs(), eventstore.Auth{}, "rotation-verifier")
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	feed, err := conn.Feed(ctx)
	if err != nil {
		t.Fatal(err)
	}
	v, err := verifier.New(ctx, verifier.Config{
		JWKSURL: hs[0].url + "/.well-known/jwks.json", Issuer: "http://ledger.test", Audience: "http://ledger.test", MaxTokenTTL: rotTTL,
	}, feed)
	if err != nil {
		t.Fatal(err)
	}
	defer v.Close()

	idle := hs[0].issue(`{"user_id":"idle"}`)
	var sessions []session
	for i := range 4 {
		sessions = append(sessions, hs[i%2].issue(fmt.Sprintf(`{"user_id":"u%d"}`, i)))
	}
	time.Sleep(rotMaxAge + 200*time.Millisecond) // a verifier's cached JWKS exists from here on

	var tokens []signed
	record := func(access string) {
		t.Helper()
		s := signed{token: access, at: time.Now()}
		h, err := decodeHeader(access)
		if err != nil {
			t.Fatal(err)
		}
		if h.Alg != alg {
			t.Fatalf("a token signed with %s, want %s", h.Alg, alg)
		}
		s.kid = h.Kid
		claims, err := v.Verify(ctx, access)
		if err != nil {
			t.Fatalf("the project's verifier refused a token just issued (kid %s): %v", h.Kid, err)
		}
		s.exp = claims.ExpiresAt
		tokens = append(tokens, s)
	}
	start := time.Now()
	operator := []struct {
		after time.Duration
		kind  string
	}{{3 * time.Second, "token"}, {4 * time.Second, "tag"}, {5 * time.Second, "checkpoint"}}
	for i := 0; time.Since(start) < 12*time.Second; i++ {
		if len(operator) > 0 && time.Since(start) >= operator[0].after {
			var out bytes.Buffer
			if err := run(ctx, []string{"keys", "rotate", operator[0].kind, "--url", hs[1].url, "--admin-token", testAdminToken}, &out, io.Discard); err != nil {
				t.Fatalf("keys rotate %s: %v", operator[0].kind, err)
			}
			operator = operator[1:]
		}
		for j := range sessions {
			h := hs[(i+j)%2]
			st, body := h.refresh(sessions[j].Refresh)
			if st != http.StatusOK {
				t.Fatalf("refresh on instance %d at %v: %d %v", (i+j)%2, time.Since(start).Round(time.Millisecond), st, body)
			}
			sessions[j] = toSession(body)
			record(sessions[j].Access)
		}
		time.Sleep(50 * time.Millisecond)
	}
	// A session last refreshed before the refresh-token keys rotated.
	record(hs[1].mustRefresh(idle.Refresh).Access)

	// Let the first keys retire: the last token of a key expires rotTTL
	// after it stopped signing, the key leaves rotLeeway later.
	time.Sleep(rotTTL + rotLeeway + time.Second)
	cancel()
	<-polled
	if pollErr != nil {
		t.Fatalf("JWKS: %v", pollErr)
	}

	kids := map[string]bool{}
	for _, s := range tokens {
		kids[s.kid] = true
	}
	if len(kids) < 3 {
		t.Fatalf("tokens were signed by %d keys; want at least 3 across the rotations", len(kids))
	}

	// Each token against the JWKS a follower could still hold when it came.
	type nodeToken struct {
		Token string          `json:"token"`
		At    int64           `json:"at"`
		JWKS  json.RawMessage `json:"jwks"`
	}
	var forNode []nodeToken
	for _, s := range tokens {
		i := slices.IndexFunc(seen, func(j jwksSeen) bool { return j.at.After(s.at.Add(-rotMaxAge)) }) - 1
		if i < 0 {
			t.Fatalf("no JWKS fetched %v before a token", rotMaxAge)
		}
		cached := seen[i]
		if !slices.Contains(cached.kids, s.kid) {
			t.Fatalf("a token of kid %s came %v after a JWKS without it was fetched (max-age %v)", s.kid, s.at.Sub(cached.at).Round(time.Millisecond), rotMaxAge)
		}
		var set jwk.Set
		if err := json.Unmarshal(cached.body, &set); err != nil {
			t.Fatal(err)
		}
		keys := set.SigningKeys()
		if _, err := accesstoken.Parse(s.token, s.at, accesstoken.Rules{Issuer: "http://ledger.test", Audience: "http://ledger.test"}, func(kid string) (jwk.PublicKey, error) {
			k, ok := keys[kid]
			if !ok {
				return jwk.PublicKey{}, fmt.Errorf("no key %s", kid)
			}
			return k, nil
		}); err != nil {
			t.Fatalf("accesstoken.Parse refused a token against the JWKS held: %v", err)
		}
		if err := verifyWithJWX(s.token, cached.body, alg, s.at); err != nil {
			t.Fatalf("jwx refused a token against the JWKS held: %v", err)
		}
		forNode = append(forNode, nodeToken{Token: s.token, At: s.at.UnixMilli(), JWKS: cached.body})
	}

	// Each key was published before its first token, and stayed until its
	// last token expired.
	first := seen[0]
	retired := 0
	for kid := range kids {
		var firstToken, lastExp time.Time
		for _, s := range tokens {
			if s.kid != kid {
				continue
			}
			if firstToken.IsZero() {
				firstToken = s.at
			}
			lastExp = s.exp
		}
		in := slices.IndexFunc(seen, func(j jwksSeen) bool { return slices.Contains(j.kids, kid) })
		if !slices.Contains(first.kids, kid) {
			if lead := firstToken.Sub(seen[in].at); lead < rotPrepublish-300*time.Millisecond {
				t.Errorf("kid %s was in the JWKS %v before its first token; want about %v", kid, lead.Round(time.Millisecond), rotPrepublish)
			}
		}
		for _, j := range seen[in:] {
			if slices.Contains(j.kids, kid) {
				continue
			}
			if j.at.Before(lastExp) {
				t.Errorf("kid %s left the JWKS %v before its last token expired", kid, lastExp.Sub(j.at).Round(time.Millisecond))
			}
			retired++
			break
		}
	}
	if retired == 0 {
		t.Error("no signing key left the JWKS after its tokens expired")
	}

	node, interop := nodeInterop(t)
	b, err := json.Marshal(map[string]any{"alg": alg, "issuer": "http://ledger.test", "audience": "http://ledger.test", "tokens": forNode})
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "tokens.json")
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(node, "verify-across-rotations.mjs", path)
	cmd.Dir = interop
	out, err := cmd.CombinedOutput()
	if err != nil || !strings.Contains(string(out), "ok: ") {
		t.Fatalf("jose: %v\n%s", err, out)
	}
	t.Logf("%d tokens, %d signing keys, %d retired: %s", len(tokens), len(kids), retired, strings.TrimSpace(string(out)))

	checkRotatedTagsAndCheckpoints(t, hs[0])

	// A restarted instance reads events tagged under both tag keys.
	hs[1].close()
	h := boot(t, dir, func(cfg *Config) {
		cfg.NATSURL, cfg.NATSAuth, cfg.Replicas = cluster.URLs(), natstest.LedgerAuth, 3
		mutate(cfg)
	})
	h.mustRefresh(sessions[0].Refresh)
}

// checkRotatedTagsAndCheckpoints: the operator's rotations of the tag and
// checkpoint keys took effect: later events carry the new tag key's id, and
// checkpoints signed by the new checkpoint key verify with the published
// keys, which still hold the old one.
func checkRotatedTagsAndCheckpoints(t *testing.T, h *ledgerHarness) {
	t.Helper()
	_, body := h.admin("GET", "/v1/keys", "")
	newest := map[string]string{}
	for _, k := range body["keys"].([]any) {
		k := k.(map[string]any)
		if k["generation"].(float64) == 1 {
			newest[k["kind"].(string)] = k["id"].(string)
		}
	}
	if newest["token"] == "" || newest["tag"] == "" || newest["checkpoint"] == "" {
		t.Fatalf("the operator's rotations are not all listed: %v", newest)
	}
	resp, err := http.Get(h.url + "/.well-known/ledger-checkpoint-keys.json")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	public, err := integrity.ParsePublicKeys(b)
	if err != nil || len(public) != 2 {
		t.Fatalf("checkpoint keys: %d keys, %v; want the old and the new", len(public), err)
	}
	tagged, signedCheckpoints := 0, 0
	for _, m := range h.streamMessages() {
		if strings.HasPrefix(m.Header.Get(integrity.TagHeader), newest["tag"]+".") {
			tagged++
		}
		if m.Subject == integrity.CheckpointSubject {
			c, err := integrity.DecodeCheckpoint(m.Data)
			if err != nil {
				t.Fatal(err)
			}
			if err := public.Verify(&c); err != nil {
				t.Fatalf("checkpoint at %d: %v", m.Sequence, err)
			}
			if c.KeyID == newest["checkpoint"] {
				signedCheckpoints++
			}
		}
	}
	if tagged == 0 || signedCheckpoints == 0 {
		t.Fatalf("%d messages tagged with the new tag key, %d checkpoints signed with the new checkpoint key; want some of each", tagged, signedCheckpoints)
	}
}

func fetchJWKS(base string) (jwksSeen, error) {
	at := time.Now()
	resp, err := http.Get(base + "/.well-known/jwks.json")
	if err != nil {
		return jwksSeen{}, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return jwksSeen{}, err
	}
	if resp.StatusCode != http.StatusOK {
		return jwksSeen{}, fmt.Errorf("status %d", resp.StatusCode)
	}
	if cc := resp.Header.Get("Cache-Control"); cc != fmt.Sprintf("public, max-age=%d", int(rotMaxAge/time.Second)) {
		return jwksSeen{}, fmt.Errorf("Cache-Control %q: want the max-age keyring.JWKSMaxAge gives for the pre-publication time", cc)
	}
	var set jwk.Set
	if err := json.Unmarshal(b, &set); err != nil {
		return jwksSeen{}, err
	}
	s := jwksSeen{at: at, body: b}
	for _, k := range set.Keys {
		if k.Use != "sig" || k.Alg == "" {
			return jwksSeen{}, fmt.Errorf("key %s without use sig and an alg", k.Kid)
		}
		s.kids = append(s.kids, k.Kid)
	}
	return s, nil
}

type joseHeader struct{ Alg, Kid, Typ string }

func decodeHeader(token string) (joseHeader, error) {
	var h joseHeader
	seg, _, _ := strings.Cut(token, ".")
	b, err := base64.RawURLEncoding.DecodeString(seg)
	if err == nil {
		err = json.Unmarshal(b, &h)
	}
	return h, err
}
