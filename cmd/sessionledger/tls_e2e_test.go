package main

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/sessionledger/sessionledger/internal/natstest"
	"github.com/sessionledger/sessionledger/internal/poll"
)

// TestTailAndExampleAPIOverTLSWithCredentials runs the ledger, `tail` and the
// example service against a NATS that requires TLS with a client
// certificate, and a user and password: each is given the CA, a client
// certificate and its credentials (the password from the environment, as the
// flag's usage advises), and a revocation reaches tail and the service.
func TestTailAndExampleAPIOverTLSWithCredentials(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and starts a child process")
	}
	files := natstest.NewTLSFiles(t)
	srv := natstest.StartTLSAccounts(t, files)
	tlsURL := srv.ClientURL() // tls://: nats:// with a CA is TLS too, as the ledger shows
	if !strings.HasPrefix(tlsURL, "tls://") {
		t.Fatalf("client URL %q", tlsURL)
	}
	h := boot(t, "", func(c *Config) {
		c.NATSURL, c.NATSAuth = strings.Replace(tlsURL, "tls://", "nats://", 1), natstest.TLSAuth(natstest.LedgerAuth, files)
	})
	s := h.issue(`{"user_id":"alice"}`)

	tlsFlags := []string{"--nats-ca", files.CA, "--nats-cert", files.ClientCert, "--nats-key", files.ClientKey}
	tailArgs := append([]string{"--nats-url", tlsURL, "--nats-user", natstest.AuditorUser}, tlsFlags...)
	env := map[string]string{"SESSIONLEDGER_NATS_PASSWORD": natstest.AuditorPassword}
	withPassword := func(k string) (string, bool) { v, ok := env[k]; return v, ok }
	none := func(string) (string, bool) { return "", false }

	// Each of the CA, the client certificate and the password is needed:
	// without one, tail is refused at once.
	for name, tc := range map[string]struct {
		args []string
		env  func(string) (string, bool)
	}{
		"no password":           {tailArgs, none},
		"no CA":                 {[]string{"--nats-url", tlsURL, "--nats-user", natstest.AuditorUser, "--nats-cert", files.ClientCert, "--nats-key", files.ClientKey}, withPassword},
		"no client certificate": {[]string{"--nats-url", tlsURL, "--nats-user", natstest.AuditorUser, "--nats-ca", files.CA}, withPassword},
	} {
		ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
		err := tail(ctx, tc.args, tc.env, &syncBuffer{}, &syncBuffer{})
		cancel()
		if err == nil {
			t.Fatalf("%s: tail connected", name)
		}
		if strings.Contains(err.Error(), natstest.AuditorPassword) {
			t.Fatalf("%s: the error shows the password: %v", name, err)
		}
		t.Logf("%s: %v", name, err)
	}

	ctx, cancel := context.WithCancel(t.Context())
	out := &syncBuffer{}
	done := make(chan error, 1)
	go func() { done <- tail(ctx, tailArgs, withPassword, out, out) }()
	poll.For(t, 5*time.Second, func() bool { return strings.Contains(out.String(), "TIME") }, func() string { return out.String() })

	api := startExampleWith(t, h, tlsURL, []string{"SESSIONLEDGER_NATS_USER=" + natstest.AuditorUser, "SESSIONLEDGER_NATS_PASSWORD=" + natstest.AuditorPassword}, tlsFlags...)
	client := &http.Client{Timeout: 5 * time.Second}
	if st, _ := me(t, client, api, s.Access); st != http.StatusOK {
		t.Fatalf("valid token refused by the example service: %d", st)
	}

	h.mustAdmin("DELETE", "/v1/sessions/"+s.ID, "", http.StatusNoContent)
	poll.For(t, 5*time.Second, func() bool { return strings.Contains(out.String(), s.ID) }, func() string { return "tail printed:\n" + out.String() })
	poll.Until(t, 5*time.Second, func() error {
		if st, _ := me(t, client, api, s.Access); st != http.StatusUnauthorized {
			return fmt.Errorf("the revoked session's token is still accepted: %d", st)
		}
		return nil
	})
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("tail: %v", err)
	}
}
