package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"path/filepath"
	"text/tabwriter"
	"time"

	"github.com/sessionledger/sessionledger/secrets"
)

const clientsUsage = `usage: sessionledger introspection-clients <add|list|remove> [flags] [client-id]

Introspection clients are resource servers that may call /oauth2/introspect
with HTTP Basic authentication (client_secret_basic) instead of the admin
token. They are kept in <data-dir>/` + secrets.ClientsFile + ` (secrets as
SHA-256 digests only); a running ledger sees a change at once.

  add ID      create a client and print its secret, once (JSON on stdout)
  list        list the clients (ids and creation times; never a secret)
  remove ID   remove a client: its secret stops working at once
`

// subcommand reads the subcommand of a command that has them (args[0]),
// printing usage when there is none or help is asked for, and returns it
// with a flag set for it that reports to stderr.
func subcommand(command, usage string, args []string, stderr io.Writer) (string, *flag.FlagSet, error) {
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
		fmt.Fprint(stderr, usage)
		if len(args) == 0 {
			return "", nil, fmt.Errorf("%s: no subcommand given", command)
		}
		return "", nil, flag.ErrHelp
	}
	fs := flag.NewFlagSet(command+" "+args[0], flag.ContinueOnError)
	fs.SetOutput(stderr)
	return args[0], fs, nil
}

// introspectionClients runs "sessionledger introspection-clients".
func introspectionClients(_ context.Context, args []string, lookupEnv func(string) (string, bool), stdout, stderr io.Writer) error {
	sub, fs, err := subcommand("introspection-clients", clientsUsage, args, stderr)
	if err != nil {
		return err
	}
	dataDir := fs.String("data-dir", DefaultConfig().DataDir, "the ledger's data directory")
	if err := parseFlags(fs, args[1:], lookupEnv); err != nil {
		return err
	}
	if _, ok := lookupEnv("SESSIONLEDGER_INTROSPECTION_CLIENTS"); ok {
		return errors.New("introspection-clients: SESSIONLEDGER_INTROSPECTION_CLIENTS is set, so the ledger reads its clients from the environment, not the data dir: change that variable instead")
	}
	wantArgs := 1
	if sub == "list" {
		wantArgs = 0
	}
	if fs.NArg() != wantArgs {
		fmt.Fprint(stderr, clientsUsage)
		return fmt.Errorf("introspection-clients %s takes %d argument(s), got %d", sub, wantArgs, fs.NArg())
	}
	switch sub {
	case "add":
		id := fs.Arg(0)
		secret, err := secrets.AddClient(*dataDir, id)
		if err != nil {
			return err
		}
		return json.NewEncoder(stdout).Encode(map[string]string{"client_id": id, "client_secret": secret})
	case "list":
		c, err := secrets.LoadClients(filepath.Join(*dataDir, secrets.ClientsFile))
		if err != nil {
			return err
		}
		w := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
		fmt.Fprintln(w, "CLIENT ID\tCREATED")
		for _, cl := range c.List() {
			fmt.Fprintf(w, "%s\t%s\n", cl.ID, cl.Created.Format(time.RFC3339))
		}
		return w.Flush()
	case "remove":
		return secrets.RemoveClient(*dataDir, fs.Arg(0))
	}
	fmt.Fprint(stderr, clientsUsage)
	return fmt.Errorf("introspection-clients: unknown subcommand %q", sub)
}
