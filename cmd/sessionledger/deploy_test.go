package main

import (
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/nats-io/nats-server/v2/server"
	"gopkg.in/yaml.v3"

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
			Image   string   `yaml:"image"`
			Command []string `yaml:"command"`
			Volumes []string `yaml:"volumes"`
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
	nodes := []string{"nats-1", "nats-2", "nats-3"}
	for _, name := range nodes {
		svc, ok := compose.Services[name]
		if !ok || !strings.HasPrefix(svc.Image, "nats:") {
			t.Fatalf("service %s: %+v", name, svc)
		}
		conf := fmt.Sprintf("./deploy/%s.conf:/etc/nats/nats.conf:ro", name)
		if !slices.Contains(svc.Volumes, conf) {
			t.Fatalf("%s does not mount %s", name, conf)
		}
		opts, err := server.ProcessConfigFile(filepath.Join(root, "deploy", name+".conf"))
		if err != nil {
			t.Fatalf("%s.conf: %v", name, err)
		}
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
	}
	if replicas != 2 {
		t.Fatalf("%d ledger replicas, want 2 (as in the cluster tests)", replicas)
	}
	if _, ok := compose.Volumes["ledger-secrets"]; !ok {
		t.Fatal("no ledger-secrets volume")
	}
}
