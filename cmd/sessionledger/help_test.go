package main

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"regexp"
	"strings"
	"testing"
	"time"
)

// runMain runs this binary's main as a child process (see TestMain) with
// args and returns its exit status and everything it wrote. A process still
// running after 20 s is killed, and the test fails.
func runMain(t *testing.T, env []string, args ...string) (int, string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, os.Args[0])
	cmd.Env = append(os.Environ(), "SESSIONLEDGER_TEST_RUN_MAIN=1", "SESSIONLEDGER_TEST_ARGS="+strings.Join(args, "\n"),
		// Under -race a process sleeps a second before it exits; these exit at once.
		"GORACE="+strings.TrimSpace(os.Getenv("GORACE")+" atexit_sleep_ms=0"))
	cmd.Env = append(cmd.Env, env...)
	out, err := cmd.CombinedOutput()
	if ctx.Err() != nil {
		t.Fatalf("%v: still running after 20 s; output:\n%s", args, out)
	}
	var exit *exec.ExitError
	switch {
	case errors.As(err, &exit):
		return exit.ExitCode(), string(out)
	case err != nil:
		t.Fatalf("%v: %v", args, err)
	}
	return 0, string(out)
}

var flagLine = regexp.MustCompile(`(?m)^  --([a-z0-9-]+)\b(.*)$`)

// TestHelpExitsZeroAndNamesTheEnvironment asks every command for its usage,
// as a person would, and requires exit status 0 and a usage that gives each
// flag's environment variable.
func TestHelpExitsZeroAndNamesTheEnvironment(t *testing.T) {
	if testing.Short() {
		t.Skip("starts child processes")
	}
	commands := map[string][]string{ // command → flags its usage must list
		"serve":                        {"http-addr", "data-dir", "nats-listen", "nats-url", "nats-user", "nats-password", "nats-ca", "nats-cert", "nats-key", "issuer", "log-level", "admin-addr", "default-client-id"},
		"tail":                         {"nats-url", "nats-user", "nats-password", "nats-token", "nats-creds", "nats-ca", "nats-cert", "nats-key", "since", "json"},
		"audit verify":                 {"nats-url", "nats-password", "nats-ca", "checkpoint-keys", "checkpoint", "json"},
		"audit checkpoint":             {"nats-url", "checkpoint-keys"},
		"audit history":                {"nats-url", "session", "user", "user-key"},
		"audit at":                     {"nats-url", "time", "user"},
		"audit export":                 {"nats-url", "session", "user-key", "since", "until"},
		"bench":                        {"scenario", "url", "admin-token", "nats-url", "clients", "duration"},
		"introspection-clients add":    {"data-dir"},
		"introspection-clients list":   {"data-dir"},
		"introspection-clients remove": {"data-dir"},
		"admin-tokens add":             {"data-dir"},
		"admin-tokens list":            {"data-dir"},
		"admin-tokens remove":          {"data-dir"},
	}
	// Secrets in the environment, as a deployment has them, are never shown.
	secretEnv := []string{"SESSIONLEDGER_NATS_PASSWORD=s3cret-nats-pass", "SESSIONLEDGER_ADMIN_TOKEN=s3cret-admin-token-0123456789",
		"SESSIONLEDGER_NATS_TOKEN=s3cret-nats-token", "SESSIONLEDGER_KEYS={\"s3cret\":1}"}
	for command, want := range commands {
		for _, help := range []string{"-h", "--help"} {
			args := append(strings.Fields(command), help)
			status, out := runMain(t, secretEnv, args...)
			if strings.Contains(out, "s3cret") {
				t.Errorf("%v: the usage shows a secret from the environment:\n%s", args, out)
			}
			if status != 0 {
				t.Errorf("%v: exit status %d, want 0; output:\n%s", args, status, out)
				continue
			}
			if !strings.HasPrefix(out, "usage: sessionledger "+command+" [flags]\n") {
				t.Errorf("%v: usage starts %q", args, firstLine(out))
			}
			listed := map[string]bool{}
			for _, m := range flagLine.FindAllStringSubmatch(out, -1) {
				listed[m[1]] = true
				if !strings.Contains(m[2], "[$"+envName(m[1])+"]") {
					t.Errorf("%v: --%s is listed without $%s: %q", args, m[1], envName(m[1]), m[0])
				}
			}
			for _, f := range want {
				if !listed[f] {
					t.Errorf("%v: the usage does not list --%s:\n%s", args, f, out)
				}
			}
			if command == "serve" {
				for _, v := range []string{"SESSIONLEDGER_ADMIN_TOKEN", "SESSIONLEDGER_KEYS", "SESSIONLEDGER_INTROSPECTION_CLIENTS"} {
					if !regexp.MustCompile(`(?m)^  ` + v + ` +\S`).MatchString(out) {
						t.Errorf("%v: the usage does not explain %s:\n%s", args, v, out)
					}
				}
			}
		}
	}
	// The overviews are help too.
	for _, args := range [][]string{{"-h"}, {"--help"}, {"help"}, {"audit", "-h"}, {"audit", "--help"}} {
		if status, out := runMain(t, nil, args...); status != 0 || !strings.HasPrefix(out, "usage: sessionledger ") {
			t.Errorf("%v: exit status %d, output %q", args, status, firstLine(out))
		}
	}
	// Asking for help is not a mistake; a mistake still is.
	for _, args := range [][]string{{"serve", "--no-such-flag"}, {"tail", "extra"}, {"audit", "verify", "--no-such-flag"}, {"launch"}} {
		if status, out := runMain(t, nil, args...); status != 2 {
			t.Errorf("%v: exit status %d, want 2; output:\n%s", args, status, out)
		}
	}
}

func firstLine(s string) string {
	line, _, _ := strings.Cut(s, "\n")
	return line
}
