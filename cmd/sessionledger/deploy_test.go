package main

import (
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/moby/patternmatcher"
	"github.com/moby/patternmatcher/ignorefile"
	"github.com/nats-io/nats-server/v2/server"
	"gopkg.in/yaml.v3"

	"github.com/sessionledger/sessionledger/eventstore/embedded"
	"github.com/sessionledger/sessionledger/internal/natstest"
)

// TestComposeMatchesTestedTopology keeps docker-compose.yml and deploy/ in
// step with the cluster the tests run in-process: three JetStream nodes in one
// cluster, each routed to the others, with sync_interval stated; two ledger
// replicas on all three nodes with an R3 stream and one shared secrets volume.
func TestComposeMatchesTestedTopology(t *testing.T) {
	root := filepath.Join("..", "..")
	var compose struct {
		Services map[string]struct {
			Image       string            `yaml:"image"`
			Command     []string          `yaml:"command"`
			Volumes     []string          `yaml:"volumes"`
			Environment map[string]string `yaml:"environment"`
			Ports       []string          `yaml:"ports"`
		} `yaml:"services"`
		Volumes map[string]any `yaml:"volumes"`
	}
	raw, err := os.ReadFile(filepath.Join(root, "docker-compose.yml"))
	if err != nil {
		t.Fatal(err)
	}
	if err := yaml.Unmarshal(raw, &compose); err != nil {
		t.Fatal(err)
	}
	// docker-compose 1.29 (Debian's) refuses a top-level name; Compose v2
	// loads the file either way.
	var top map[string]any
	if err := yaml.Unmarshal(raw, &top); err != nil {
		t.Fatal(err)
	}
	if _, ok := top["name"]; ok {
		t.Error("docker-compose.yml has a top-level name, which docker-compose 1.29 refuses")
	}
	// Published on loopback only: plain HTTP, and NATS readable without
	// credentials.
	published := 0
	for name, svc := range compose.Services {
		for _, p := range svc.Ports {
			published++
			if parts := strings.Split(p, ":"); len(parts) != 3 || parts[0] != "127.0.0.1" {
				t.Errorf("%s publishes %q: want 127.0.0.1:<host port>:<container port>", name, p)
			}
		}
	}
	if published != 3 {
		t.Errorf("%d ports published, want 3 (two ledgers and one NATS node)", published)
	}
	// One accounts file for every deployment: compose's nodes include
	// deploy/nats-accounts.conf, the embedded server and the in-process test
	// cluster load embedded.AccountsConf. They must be the same file.
	deployAccounts, err := os.ReadFile(filepath.Join(root, "deploy", "nats-accounts.conf"))
	if err != nil {
		t.Fatal(err)
	}
	if string(deployAccounts) != embedded.AccountsConf {
		t.Fatal("deploy/nats-accounts.conf differs from eventstore/embedded/accounts.conf: copy one over the other")
	}
	t.Setenv(embedded.PasswordVariable, "compose-test-password")
	nodes := []string{"nats-1", "nats-2", "nats-3"}
	for _, name := range nodes {
		svc, ok := compose.Services[name]
		if !ok || !strings.HasPrefix(svc.Image, "nats:") {
			t.Fatalf("service %s: %+v", name, svc)
		}
		conf := fmt.Sprintf("./deploy/%s.conf:/etc/nats/nats.conf:ro", name)
		if !slices.Contains(svc.Volumes, conf) || !slices.Contains(svc.Volumes, "./deploy/nats-accounts.conf:/etc/nats/nats-accounts.conf:ro") {
			t.Fatalf("%s does not mount %s and the accounts file", name, conf)
		}
		if !strings.Contains(svc.Environment[embedded.PasswordVariable], "${"+embedded.PasswordVariable) {
			t.Fatalf("%s does not get %s from the environment", name, embedded.PasswordVariable)
		}
		opts, err := server.ProcessConfigFile(filepath.Join(root, "deploy", name+".conf"))
		if err != nil {
			t.Fatalf("%s.conf: %v", name, err)
		}
		checkAccounts(t, name, opts)
		if !opts.JetStream || opts.ServerName != name || opts.Cluster.Name != natstest.ClusterName || opts.SyncInterval == 0 {
			t.Fatalf("%s.conf: jetstream %v, name %q, cluster %q (tests use %q), sync_interval %v",
				name, opts.JetStream, opts.ServerName, opts.Cluster.Name, natstest.ClusterName, opts.SyncInterval)
		}
		var routes []string
		for _, r := range opts.Routes {
			routes = append(routes, r.Hostname())
		}
		for _, other := range nodes {
			if other != name && !slices.Contains(routes, other) {
				t.Fatalf("%s.conf does not route to %s (routes %v)", name, other, routes)
			}
		}
	}
	replicas := 0
	for name, svc := range compose.Services {
		if !strings.HasPrefix(name, "ledger-") {
			continue
		}
		replicas++
		cfg, err := parseServeFlags(svc.Command[1:], func(string) (string, bool) { return "", false }, io.Discard)
		if err != nil {
			t.Fatalf("%s: the serve command does not parse: %v", name, err)
		}
		if cfg.Replicas != 3 || cfg.DataDir != "/data" {
			t.Fatalf("%s: replicas %d, data dir %q", name, cfg.Replicas, cfg.DataDir)
		}
		for _, n := range nodes {
			if !strings.Contains(cfg.NATSURL, "nats://"+n+":4222") {
				t.Fatalf("%s: --nats-url %q lacks %s", name, cfg.NATSURL, n)
			}
		}
		if !slices.Contains(svc.Volumes, "ledger-secrets:/data") {
			t.Fatalf("%s does not share the secrets volume", name)
		}
		if svc.Environment["SESSIONLEDGER_NATS_USER"] != embedded.LedgerUser || !strings.Contains(svc.Environment["SESSIONLEDGER_NATS_PASSWORD"], "${"+embedded.PasswordVariable) {
			t.Fatalf("%s does not connect as the ledger user with the shared password: %v", name, svc.Environment)
		}
	}
	if replicas != 2 {
		t.Fatalf("%d ledger replicas, want 2 (as in the cluster tests)", replicas)
	}
	if _, ok := compose.Volumes["ledger-secrets"]; !ok {
		t.Fatal("no ledger-secrets volume")
	}
}

// checkAccounts requires the least-privilege layout: the ledger user alone in
// the account with JetStream, everyone else (the no-auth user) in one
// without, reading through imports only and publishing to none of the
// ledger's subjects or reply inboxes.
func checkAccounts(t *testing.T, name string, opts *server.Options) {
	t.Helper()
	accounts := map[string]*server.Account{}
	for _, a := range opts.Accounts {
		accounts[a.Name] = a
	}
	if accounts[embedded.LedgerAccount] == nil || accounts[embedded.ReaderAccount] == nil {
		t.Fatalf("%s: accounts %v, want %s and %s", name, opts.Accounts, embedded.LedgerAccount, embedded.ReaderAccount)
	}
	if opts.NoAuthUser != "reader" {
		t.Fatalf("%s: no_auth_user %q, want reader", name, opts.NoAuthUser)
	}
	for _, u := range opts.Users {
		switch u.Username {
		case embedded.LedgerUser:
			if u.Account.Name != embedded.LedgerAccount || u.Password != "compose-test-password" {
				t.Fatalf("%s: the ledger user is in %s or its password is not $%s", name, u.Account.Name, embedded.PasswordVariable)
			}
		case "reader":
			if u.Account.Name != embedded.ReaderAccount || u.Permissions == nil || u.Permissions.Publish == nil ||
				!slices.Contains(u.Permissions.Publish.Deny, "ledger.>") || !slices.Contains(u.Permissions.Publish.Deny, "_INBOX.>") {
				t.Fatalf("%s: the reader may publish to the ledger's subjects or inboxes: %+v", name, u.Permissions)
			}
		default:
			t.Fatalf("%s: unexpected user %s", name, u.Username)
		}
	}
}

// TestDockerignoreKeepsSecretsOutOfTheBuildContext evaluates .dockerignore
// with Docker's own reader and matcher: the data dir (keys.json, the admin
// token), the git history and test output stay out of the build context, and
// everything the Dockerfile builds from (go.mod, go.sum, every Go source and
// the file it embeds) goes in.
func TestDockerignoreKeepsSecretsOutOfTheBuildContext(t *testing.T) {
	root := filepath.Join("..", "..")
	f, err := os.Open(filepath.Join(root, ".dockerignore"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	patterns, err := ignorefile.ReadAll(f)
	if err != nil {
		t.Fatal(err)
	}
	pm, err := patternmatcher.New(patterns)
	if err != nil {
		t.Fatal(err)
	}
	excluded := func(path string) bool {
		t.Helper()
		ex, err := pm.MatchesOrParentMatches(path)
		if err != nil {
			t.Fatal(err)
		}
		return ex
	}
	for _, path := range []string{
		"data/keys.json", "data/admin-token", "data/stream.json", "data/jetstream/LEDGER/streams/LEDGER/msgs/1.blk",
		".git/config", ".git/HEAD", "sessionledger", "main.test", "cmd/sessionledger/sessionledger.test", "cpu.prof",
		"node_modules/@redocly/cli/package.json", "docs/node_modules/x/index.js", "deploy/tls/server-key.pem", "ledger.creds",
		// A data dir made by `go run .` in a command's directory, or given another name.
		"cmd/sessionledger/data/keys.json", "cmd/sessionledger/data/jetstream/LEDGER/msgs/1.blk", "mydata/introspection-clients.json", "mydata/admin-tokens.json",
		"mydata/jetstream/LEDGER/msgs/1.blk", "mydata/stream.json", "interop/node_modules/jose/package.json", ".env.local",
	} {
		if !excluded(path) {
			t.Errorf("%s goes into the Docker build context", path)
		}
	}
	need := []string{"go.mod", "go.sum", "Dockerfile", "cmd/sessionledger/main.go", "eventstore/embedded/accounts.conf"}
	err = filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() && (d.Name() == ".git" || d.Name() == "node_modules") {
			return filepath.SkipDir
		}
		if strings.HasSuffix(path, ".go") {
			rel, err := filepath.Rel(root, path)
			if err != nil {
				return err
			}
			need = append(need, filepath.ToSlash(rel))
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(need) < 50 {
		t.Fatalf("found only %d Go files", len(need))
	}
	for _, path := range need {
		if excluded(path) {
			t.Errorf("%s, which the image is built from, is left out of the Docker build context", path)
		}
	}
}
