package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/sessionledger/sessionledger/keyring"
	"github.com/sessionledger/sessionledger/secrets"
)

const keysUsage = `usage: sessionledger keys <list|rotate> [flags] [kind]

Asks a running ledger, over its admin API, about its keys, or to rotate one
kind of them. Kinds: signing (access-token signing key: in the JWKS
--signing-key-prepublish before it signs), token (refresh-token digest and
successor keys), tag (event tags and snapshot seals), checkpoint
(checkpoint signatures), set (RS256 key of the Security Event Tokens the
SSF transmitter sends: in /.well-known/ssf-jwks.json
--signing-key-prepublish before it signs); token, tag and checkpoint take
over after a few seconds.
Nothing is logged out: older keys keep verifying what they made. Every
instance of the ledger follows the same schedule.

  list            every generation of every kind: state and times, no secret
  rotate [KIND]   make the next key of KIND (default signing) now
`

// keysCmd runs "sessionledger keys".
func keysCmd(ctx context.Context, args []string, lookupEnv func(string) (string, bool), stdout, stderr io.Writer) error {
	sub, fs, err := subcommand("keys", keysUsage, args, stderr)
	if err != nil {
		return err
	}
	rest, kind := args[1:], ""
	if sub == "rotate" && len(rest) > 0 && !strings.HasPrefix(rest[0], "-") {
		kind, rest = rest[0], rest[1:] // keys rotate KIND [flags]
	}
	base := fs.String("url", "http://localhost:8080", "the ledger's admin API (its --admin-addr when set)")
	token := fs.String("admin-token", "", "an admin token (default $SESSIONLEDGER_ADMIN_TOKEN, else <data-dir>/admin-token)")
	dataDir := fs.String("data-dir", DefaultConfig().DataDir, "the ledger's data directory, for its admin-token file")
	if err := parseFlags(fs, rest, lookupEnv); err != nil {
		return err
	}
	if *token == "" {
		t, err := secrets.ReadAdminToken(*dataDir)
		if err != nil {
			return fmt.Errorf("keys: no --admin-token or SESSIONLEDGER_ADMIN_TOKEN, and %w", err)
		}
		*token = t
	}
	var req *http.Request
	switch {
	case sub == "list" && fs.NArg() == 0:
		req, err = http.NewRequestWithContext(ctx, http.MethodGet, strings.TrimRight(*base, "/")+"/v1/keys", nil)
	case sub == "rotate" && fs.NArg() <= 1 && (kind == "" || fs.NArg() == 0):
		if fs.NArg() == 1 {
			kind = fs.Arg(0) // keys rotate [flags] KIND
		}
		if kind == "" {
			kind = keyring.Signing
		}
		req, err = http.NewRequestWithContext(ctx, http.MethodPost, strings.TrimRight(*base, "/")+"/v1/keys/"+url.PathEscape(kind)+"/rotate", nil)
	default:
		fmt.Fprint(stderr, keysUsage)
		return fmt.Errorf("keys: unknown subcommand or arguments: %q", args)
	}
	if err != nil {
		return fmt.Errorf("keys: %w", err)
	}
	req.Header.Set("Authorization", "Bearer "+*token)
	client := &http.Client{Timeout: 30 * time.Second}
	resp, err := client.Do(req)
	if err != nil {
		return fmt.Errorf("keys: %w", err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return fmt.Errorf("keys: %w", err)
	}
	if resp.StatusCode/100 != 2 {
		var problem struct{ Title, Detail string }
		_ = json.Unmarshal(body, &problem)
		return fmt.Errorf("keys: the ledger answered %s: %s %s", resp.Status, problem.Title, problem.Detail)
	}
	var out []keyring.Status
	if sub == "list" {
		var list struct{ Keys []keyring.Status }
		err = json.Unmarshal(body, &list)
		out = list.Keys
	} else {
		var one keyring.Status
		err = json.Unmarshal(body, &one)
		out = []keyring.Status{one}
	}
	if err != nil {
		return fmt.Errorf("keys: the ledger's answer is not what this command reads: %w", err)
	}
	w := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(w, "KIND\tGEN\tID\tALG\tSTATE\tACTIVE FROM\tACTIVE UNTIL\tIN JWKS UNTIL")
	at := func(t time.Time) string {
		if t.IsZero() {
			return "-"
		}
		return t.UTC().Format(time.RFC3339)
	}
	for _, k := range out {
		alg := k.Alg
		if alg == "" {
			alg = "-"
		}
		fmt.Fprintf(w, "%s\t%d\t%s\t%s\t%s\t%s\t%s\t%s\n", k.Kind, k.Generation, k.ID, alg, k.State, at(k.ActiveFrom), at(k.ActiveUntil), at(k.PublishedUntil))
	}
	return w.Flush()
}
