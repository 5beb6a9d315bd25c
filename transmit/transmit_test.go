package transmit_test

import (
	"bytes"
	"errors"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sessionledger/sessionledger/transmit"
)

func TestSealer(t *testing.T) {
	key := bytes.Repeat([]byte{7}, 32)
	s, err := transmit.NewSealer(key)
	if err != nil {
		t.Fatal(err)
	}
	sealed, err := s.Seal("endpoint/a/secret/1", []byte("whsec_secret"))
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(sealed, "whsec_secret") || !strings.HasPrefix(sealed, "v1.") {
		t.Fatalf("sealed %q", sealed)
	}
	if got, err := s.Open("endpoint/a/secret/1", sealed); err != nil || string(got) != "whsec_secret" {
		t.Fatalf("open: %q %v", got, err)
	}
	again, _ := s.Seal("endpoint/a/secret/1", []byte("whsec_secret"))
	if again == sealed {
		t.Fatal("two seals of the same secret are equal: the nonce is not random")
	}
	if _, err := s.Open("endpoint/b/secret/1", sealed); !errors.Is(err, transmit.ErrSealBroken) {
		t.Fatalf("opened under another record's name: %v", err)
	}
	other, _ := transmit.NewSealer(bytes.Repeat([]byte{8}, 32))
	if _, err := other.Open("endpoint/a/secret/1", sealed); !errors.Is(err, transmit.ErrSealBroken) {
		t.Fatalf("opened with another key: %v", err)
	}
	for i := len("v1."); i < len(sealed); i++ {
		b := []byte(sealed)
		b[i] ^= 1
		if got, err := s.Open("endpoint/a/secret/1", string(b)); err == nil {
			t.Fatalf("byte %d changed and it still opens: %q", i, got)
		}
	}
	for _, bad := range []string{"", "v2." + sealed[3:], sealed[3:], "v1.!!", "v1.AAAA"} {
		if _, err := s.Open("endpoint/a/secret/1", bad); !errors.Is(err, transmit.ErrSealBroken) {
			t.Errorf("Open(%q): %v, want ErrSealBroken", bad, err)
		}
	}
	if _, err := transmit.NewSealer(make([]byte, 31)); err == nil {
		t.Fatal("a 31-byte key was taken")
	}
}

// TestWebhookSignatureVector: the Standard Webhooks specification's
// published example (the official libraries' test vector).
func TestWebhookSignatureVector(t *testing.T) {
	key, err := transmit.ParseWebhookSecret("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")
	if err != nil {
		t.Fatal(err)
	}
	ts := time.Unix(1614265330, 0)
	body := []byte(`{"test": 2432232314}`)
	const id, want = "msg_p5jXN8AQM9LWM0D4loKWxJek", "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
	if got := transmit.SignWebhook([][]byte{key}, id, ts, body); got != want {
		t.Fatalf("signature %s, want %s", got, want)
	}
	h := transmit.WebhookHeaders([][]byte{key}, id, ts, body)
	if h.Get("webhook-id") != id || h.Get("webhook-timestamp") != "1614265330" || h.Get("webhook-signature") != want {
		t.Fatalf("headers %v", h)
	}
	if err := transmit.VerifyWebhook(key, h, body, ts.Add(time.Minute), 5*time.Minute); err != nil {
		t.Fatalf("verify: %v", err)
	}
	cases := []struct {
		name   string
		change func(http.Header, []byte) (http.Header, []byte)
		now    time.Time
		want   error
	}{
		{"tampered body", func(h http.Header, b []byte) (http.Header, []byte) { return h, []byte(`{"test": 2432232315}`) }, ts, transmit.ErrWebhookSignature},
		{"another id", func(h http.Header, b []byte) (http.Header, []byte) { h.Set("webhook-id", "msg_x"); return h, b }, ts, transmit.ErrWebhookSignature},
		{"another timestamp", func(h http.Header, b []byte) (http.Header, []byte) {
			h.Set("webhook-timestamp", "1614265331")
			return h, b
		}, ts, transmit.ErrWebhookSignature},
		{"stale", func(h http.Header, b []byte) (http.Header, []byte) { return h, b }, ts.Add(6 * time.Minute), transmit.ErrWebhookTimestamp},
		{"from the future", func(h http.Header, b []byte) (http.Header, []byte) { return h, b }, ts.Add(-6 * time.Minute), transmit.ErrWebhookTimestamp},
		{"no signature", func(h http.Header, b []byte) (http.Header, []byte) { h.Del("webhook-signature"); return h, b }, ts, transmit.ErrWebhookHeaders},
		{"bad timestamp", func(h http.Header, b []byte) (http.Header, []byte) { h.Set("webhook-timestamp", "x"); return h, b }, ts, transmit.ErrWebhookHeaders},
		{"v2 only", func(h http.Header, b []byte) (http.Header, []byte) {
			h.Set("webhook-signature", strings.Replace(want, "v1,", "v2,", 1))
			return h, b
		}, ts, transmit.ErrWebhookSignature},
	}
	for _, c := range cases {
		h2, b2 := c.change(h.Clone(), bytes.Clone(body))
		if err := transmit.VerifyWebhook(key, h2, b2, c.now, 5*time.Minute); !errors.Is(err, c.want) {
			t.Errorf("%s: got %v, want %v", c.name, err, c.want)
		}
	}
}

func TestWebhookSecrets(t *testing.T) {
	s1, err := transmit.NewWebhookSecret()
	if err != nil {
		t.Fatal(err)
	}
	s2, _ := transmit.NewWebhookSecret()
	k1, err := transmit.ParseWebhookSecret(s1)
	if err != nil || len(k1) != 32 || s1 == s2 {
		t.Fatalf("new secret %q: %v", s1, err)
	}
	k2, _ := transmit.ParseWebhookSecret(s2)
	now := time.Now()
	h := transmit.WebhookHeaders([][]byte{k2, k1}, "id", now, []byte("{}"))
	if n := len(strings.Fields(h.Get("webhook-signature"))); n != 2 {
		t.Fatalf("%d signatures for two secrets", n)
	}
	for _, k := range [][]byte{k1, k2} {
		if err := transmit.VerifyWebhook(k, h, []byte("{}"), now, time.Minute); err != nil {
			t.Fatalf("one of two signatures: %v", err)
		}
	}
	for _, bad := range []string{"MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", "whsec_!!!!", "whsec_" + strings.Repeat("A", 28), "whsec_" + strings.Repeat("A", 100)} {
		_, err := transmit.ParseWebhookSecret(bad)
		if err == nil || strings.Contains(err.Error(), bad) {
			t.Errorf("ParseWebhookSecret(%q): %v", bad, err)
		}
	}
}

func TestURLPolicyCheck(t *testing.T) {
	strict := transmit.URLPolicy{}
	dev := transmit.URLPolicy{AllowPrivate: true}
	listed := transmit.URLPolicy{AllowHosts: []string{"hooks.example.com", "*.example.org"}}
	cases := []struct {
		policy transmit.URLPolicy
		url    string
		ok     bool
	}{
		{strict, "https://hooks.example.com/x?a=1", true},
		{strict, "http://hooks.example.com/x", false},
		{strict, "https://localhost/x", false},
		{strict, "https://localhost./x", false},
		{strict, "https://:443/x", false},
		{strict, "https://2130706433/x", false},
		{strict, "https://0x7f.1/x", false},
		{strict, "https://127.1/x", false},
		{strict, "https://0/x", false},
		{strict, "https://[::127.0.0.1]/x", false},
		{strict, "https://a1.example.com/x", true},
		{dev, "http://localhost:8080/x", true},
		{dev, "http://127.0.0.1:8080/x", true},
		{dev, "http://[::1]:8080/x", true},
		{strict, "http://127.0.0.1:8080/x", false},
		{strict, "https://127.0.0.1/x", false},
		{dev, "https://10.0.0.1/x", false},
		{dev, "http://10.0.0.1/x", false},
		{strict, "https://192.168.1.1/x", false},
		{strict, "https://169.254.169.254/latest/meta-data", false},
		{strict, "https://[fd00::1]/x", false},
		{strict, "https://[::ffff:10.0.0.1]/x", false},
		{strict, "https://[64:ff9b::a00:1]/x", false},
		{strict, "https://100.64.0.1/x", false},
		{strict, "https://0.0.0.0/x", false},
		{dev, "https://0.0.0.0/x", false},
		{strict, "https://8.8.8.8/x", true},
		{strict, "https://user:pw@hooks.example.com/x", false},
		{strict, "https://hooks.example.com/x#frag", false},
		{strict, "/relative", false},
		{strict, "ftp://hooks.example.com/x", false},
		{strict, "https://hooks.example.com/" + strings.Repeat("a", 2100), false},
		{listed, "https://hooks.example.com/x", true},
		{listed, "https://a.example.org/x", true},
		{listed, "https://example.org/x", false},
		{listed, "https://evilexample.org/x", false},
		{listed, "https://hooks.example.com.evil.net/x", false},
	}
	for _, c := range cases {
		_, err := c.policy.Check(c.url)
		if (err == nil) != c.ok {
			t.Errorf("Check(%.60q) with %+v: %v, want ok=%v", c.url, c.policy, err, c.ok)
		}
		if err != nil && !errors.Is(err, transmit.ErrURLRefused) {
			t.Errorf("Check(%.60q): %v does not wrap ErrURLRefused", c.url, err)
		}
	}
}

func TestIsPrivateAddr(t *testing.T) {
	for addr, want := range map[string]bool{
		"8.8.8.8": false, "1.1.1.1": false, "2606:4700::1111": false,
		"127.0.0.1": true, "10.1.2.3": true, "172.16.0.1": true, "192.168.0.1": true, "169.254.169.254": true,
		"100.64.0.1": true, "0.0.0.0": true, "224.0.0.1": true, "255.255.255.255": true, "198.18.0.1": true,
		"::1": true, "::": true, "fd00::1": true, "fe80::1": true, "ff02::1": true, "2001:db8::1": true,
		"::ffff:10.0.0.1": true, "::ffff:8.8.8.8": false, "64:ff9b::a00:1": true, "64:ff9b::808:808": false,
	} {
		if got := transmit.IsPrivateAddr(netip.MustParseAddr(addr)); got != want {
			t.Errorf("IsPrivateAddr(%s) = %v, want %v", addr, got, want)
		}
	}
}

func TestParseAllowList(t *testing.T) {
	if got, err := transmit.ParseAllowList(""); err != nil || got != nil {
		t.Fatalf("empty: %v %v", got, err)
	}
	got, err := transmit.ParseAllowList(" Hooks.Example.com, *.b.example.com")
	if err != nil || strings.Join(got, ",") != "hooks.example.com,*.b.example.com" {
		t.Fatalf("got %v %v", got, err)
	}
	for _, bad := range []string{"https://x.com", "x.com:443", "x.com/path", "a.com,,b.com", "*", "com"} {
		if _, err := transmit.ParseAllowList(bad); err == nil {
			t.Errorf("ParseAllowList(%q) accepted", bad)
		}
	}
}

// TestURLPolicyClient: the delivery client checks the address it dials
// (a name resolving to loopback is refused unless allowed), follows no
// redirect and uses no proxy.
func TestURLPolicyClient(t *testing.T) {
	var hits atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hits.Add(1)
		if r.URL.Path == "/redirect" {
			http.Redirect(w, r, "/elsewhere", http.StatusFound)
			return
		}
		w.WriteHeader(http.StatusNoContent)
	}))
	defer srv.Close()
	local := strings.Replace(srv.URL, "127.0.0.1", "localhost", 1) // a name, resolved when dialed

	_, err := transmit.URLPolicy{}.Client(5 * time.Second).Get(local + "/x")
	if !errors.Is(err, transmit.ErrURLRefused) || hits.Load() != 0 {
		t.Fatalf("a name resolving to loopback: %v, %d requests; want ErrURLRefused and none", err, hits.Load())
	}
	t.Setenv("HTTP_PROXY", "http://192.0.2.1:9")
	t.Setenv("HTTPS_PROXY", "http://192.0.2.1:9")
	client := transmit.URLPolicy{AllowPrivate: true}.Client(5 * time.Second)
	resp, err := client.Get(local + "/redirect")
	if err != nil {
		t.Fatalf("with loopback allowed (and a proxy in the environment): %v", err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusFound || hits.Load() != 1 {
		t.Fatalf("redirect: status %d after %d requests; want the 302 itself, not followed", resp.StatusCode, hits.Load())
	}
}
