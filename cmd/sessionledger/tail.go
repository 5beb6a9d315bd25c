package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"time"

	"github.com/sessionledger/sessionledger/domain"
	"github.com/sessionledger/sessionledger/eventstore"
)

// tail follows revocation events and prints one line each.
func tail(ctx context.Context, args []string, lookupEnv func(string) (string, bool), stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("tail", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var natsURL string
	var auth eventstore.Auth
	addNATSFlags(fs, &natsURL, &auth, defaultNATSURL, "the ledger's NATS")
	since := fs.Duration("since", 0, "also show revocations of this long ago (for example 1h); 0: only new ones")
	asJSON := fs.Bool("json", false, "print each event as a CloudEvents JSON line")
	if err := parseFlags(fs, args, lookupEnv); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("tail takes no arguments, got %q", fs.Args())
	}
	conn, err := eventstore.Connect(natsURL, auth, "sessionledger-tail")
	if err != nil {
		return err
	}
	defer conn.Close(context.Background())
	feed, err := conn.Feed(ctx)
	if err != nil {
		return err
	}
	from := time.Now()
	if *since > 0 {
		from = from.Add(-*since)
	}
	if !*asJSON {
		fmt.Fprintf(stdout, "%-24s %-22s %-26s %-32s %s\n", "TIME", "EVENT", "SESSION", "USER KEY", "DETAIL")
	}
	err = feed.Follow(ctx, from, func(e domain.Event) {
		if *asJSON {
			b, err := domain.EncodeEvent(e)
			if err == nil {
				fmt.Fprintf(stdout, "%s\n", b)
			}
			return
		}
		fmt.Fprintf(stdout, "%-24s %-22s %-26s %-32s %s\n", e.Time.UTC().Format("2006-01-02T15:04:05.000Z"),
			e.Type(), orDash(e.SessionID), e.UserKey, detail(e))
	}, func(seq uint64, err error) {
		fmt.Fprintf(stderr, "skipped sequence %d: %v\n", seq, err)
	}, nil)
	if errors.Is(err, context.Canceled) {
		return nil
	}
	return err
}

func detail(e domain.Event) string {
	b, _ := json.Marshal(e.Data)
	return string(b)
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}
