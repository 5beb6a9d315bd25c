package cliflags

import (
	"bytes"
	"errors"
	"flag"
	"strings"
	"testing"
	"time"
)

func TestParseReadsTheEnvironmentAndAFlagWins(t *testing.T) {
	fs := flag.NewFlagSet("x", flag.ContinueOnError)
	fs.SetOutput(&bytes.Buffer{})
	addr := fs.String("http-addr", ":8080", "address")
	wait := fs.Duration("wait", time.Second, "how long")
	env := map[string]string{"SESSIONLEDGER_HTTP_ADDR": ":9000", "SESSIONLEDGER_WAIT": "3s"}
	lookup := func(k string) (string, bool) { v, ok := env[k]; return v, ok }
	if err := Parse(fs, []string{"--wait", "5s"}, lookup); err != nil {
		t.Fatal(err)
	}
	if *addr != ":9000" || *wait != 5*time.Second {
		t.Fatalf("http-addr %q (want the environment's), wait %v (want the flag's)", *addr, *wait)
	}
	env["SESSIONLEDGER_WAIT"] = "soon-s3cret"
	fresh := func() *flag.FlagSet {
		fs := flag.NewFlagSet("x", flag.ContinueOnError)
		fs.SetOutput(&bytes.Buffer{})
		fs.Duration("wait", time.Second, "how `long`")
		fs.Usage = Usage(fs, "x")
		return fs
	}
	err := Parse(fresh(), nil, lookup)
	if err == nil || !strings.Contains(err.Error(), "SESSIONLEDGER_WAIT") || !strings.Contains(err.Error(), "--wait") || strings.Contains(err.Error(), "s3cret") {
		t.Fatalf("a bad value in the environment: %v, want an error naming the variable and the flag, not the value", err)
	}
	// The flag given wins: the variable it overrides is not read.
	if err := Parse(fresh(), []string{"--wait", "2s"}, lookup); err != nil {
		t.Fatalf("a flag given beside a bad variable: %v", err)
	}
	// Help is help, whatever the environment holds.
	if err := Parse(fresh(), []string{"--help"}, lookup); !errors.Is(err, flag.ErrHelp) {
		t.Fatalf("--help beside a bad variable: %v", err)
	}
}

func TestUsageListsEveryFlagWithItsVariable(t *testing.T) {
	fs := flag.NewFlagSet("tool", flag.ContinueOnError)
	var out bytes.Buffer
	fs.SetOutput(&out)
	fs.String("nats-url", "nats://127.0.0.1:4222", "the `URL` of NATS")
	fs.Bool("json", false, "JSON lines")
	fs.Int("clients", 0, "clients (0: as many as cores)")
	fs.Usage = Usage(fs, "prog tool", EnvVar{"SESSIONLEDGER_SECRET", "a secret"})
	if err := Parse(fs, []string{"--help"}, func(string) (string, bool) { return "", false }); !errors.Is(err, flag.ErrHelp) {
		t.Fatalf("--help: %v, want flag.ErrHelp", err)
	}
	want := `usage: prog tool [flags]

flags (each also read from the environment variable shown; a flag given wins):
  --clients int  [$SESSIONLEDGER_CLIENTS]
        clients (0: as many as cores)
  --json  [$SESSIONLEDGER_JSON]
        JSON lines
  --nats-url URL  [$SESSIONLEDGER_NATS_URL]
        the URL of NATS (default "nats://127.0.0.1:4222")

environment only:
  SESSIONLEDGER_SECRET  a secret
`
	if out.String() != want {
		t.Fatalf("usage:\n%s\nwant:\n%s", out.String(), want)
	}
}
