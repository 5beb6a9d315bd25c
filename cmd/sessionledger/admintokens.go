package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"text/tabwriter"
	"time"

	"github.com/sessionledger/sessionledger/secrets"
)

const adminTokensUsage = `usage: sessionledger admin-tokens <add|list|remove> [flags] [name]

Admin tokens open the admin API (Authorization: Bearer <token>). Several are
valid at once, each with a name, so that one is replaced without downtime:
add a new one, move tooling to it, remove the old one. Named tokens are kept
in <data-dir>/` + secrets.AdminTokensFile + ` (SHA-256 digests only); the token named
"default" is SESSIONLEDGER_ADMIN_TOKEN or, without it, <data-dir>/` + secrets.AdminTokenFile + `.
Every ledger on the data dir sees a change at once.

  add NAME      create a token and print it, once (one line on stdout)
  list          list the tokens: names, creation times and where each is
                (never a token or its digest)
  remove NAME   remove a token: it is refused at once. "default" deletes
                <data-dir>/` + secrets.AdminTokenFile + `, which serve generates again only when
                no admin token is left; a token given in
                SESSIONLEDGER_ADMIN_TOKEN cannot be removed here
`

// adminTokensCmd runs "sessionledger admin-tokens".
func adminTokensCmd(_ context.Context, args []string, lookupEnv func(string) (string, bool), stdout, stderr io.Writer) error {
	sub, fs, err := subcommand("admin-tokens", adminTokensUsage, args, stderr)
	if err != nil {
		return err
	}
	dataDir := fs.String("data-dir", DefaultConfig().DataDir, "the ledger's data directory")
	if err := parseFlags(fs, args[1:], lookupEnv); err != nil {
		return err
	}
	if _, ok := lookupEnv("SESSIONLEDGER_ADMIN_TOKENS"); ok {
		return errors.New("admin-tokens: SESSIONLEDGER_ADMIN_TOKENS is set, so the ledger reads its named admin tokens from the environment, not the data dir: change that variable instead")
	}
	envToken := false
	if v, ok := lookupEnv("SESSIONLEDGER_ADMIN_TOKEN"); ok && v != "" {
		envToken = true // as serve reads it; its value is not used here
	}
	wantArgs := 1
	if sub == "list" {
		wantArgs = 0
	}
	if fs.NArg() != wantArgs {
		fmt.Fprint(stderr, adminTokensUsage)
		return fmt.Errorf("admin-tokens %s takes %d argument(s), got %d", sub, wantArgs, fs.NArg())
	}
	switch sub {
	case "add":
		token, err := secrets.AddAdminToken(*dataDir, fs.Arg(0))
		if err != nil {
			return err
		}
		_, err = fmt.Fprintln(stdout, token)
		return err
	case "list":
		list, err := secrets.ListAdminTokens(*dataDir, envToken)
		if err != nil {
			return err
		}
		w := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
		fmt.Fprintln(w, "NAME\tCREATED\tSOURCE")
		for _, t := range list {
			created := "-"
			if !t.Created.IsZero() {
				created = t.Created.Format(time.RFC3339)
			}
			fmt.Fprintf(w, "%s\t%s\t%s\n", t.Name, created, t.Source)
		}
		return w.Flush()
	case "remove":
		name := fs.Arg(0)
		if name == secrets.DefaultAdminTokenName && envToken {
			return errors.New(`admin-tokens: the admin token "default" is SESSIONLEDGER_ADMIN_TOKEN, fixed for a ledger's life: no command can remove it; add another token, move to it, then unset the variable and restart the ledger`)
		}
		if err := secrets.RemoveAdminToken(*dataDir, name); err != nil {
			return err
		}
		if left, err := secrets.ListAdminTokens(*dataDir, envToken); err == nil && len(left) == 0 {
			fmt.Fprintf(stderr, "admin-tokens: no admin token is left in %s: unless the ledger has SESSIONLEDGER_ADMIN_TOKEN, its admin API refuses every call until one is added (admin-tokens add), or until a restart, which generates %s\n", *dataDir, secrets.AdminTokenFile)
		}
		return nil
	}
	fmt.Fprint(stderr, adminTokensUsage)
	return fmt.Errorf("admin-tokens: unknown subcommand %q", sub)
}
