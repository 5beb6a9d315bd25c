// Package natstest runs real in-process nats-servers with JetStream for tests.
package natstest

import (
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"

	"github.com/sessionledger/sessionledger/eventstore/embedded"
)

// Server is a running nats-server with JetStream.
type Server struct {
	*server.Server
	StoreDir string
}

// Start runs a nats-server with JetStream on a loopback port and a store in
// storeDir (a fresh temporary one when empty). It shuts down when the test ends.
func Start(tb testing.TB, storeDir string) *Server {
	tb.Helper()
	if storeDir == "" {
		storeDir = tb.TempDir()
	}
	opts := &server.Options{Host: "127.0.0.1", Port: -1, JetStream: true, StoreDir: storeDir, NoLog: true, NoSigs: true}
	ns, err := server.NewServer(opts)
	if err != nil {
		tb.Fatalf("nats-server: %v", err)
	}
	go ns.Start()
	if !ns.ReadyForConnections(10 * time.Second) {
		tb.Fatal("nats-server did not start")
	}
	s := &Server{Server: ns, StoreDir: storeDir}
	tb.Cleanup(s.Stop)
	return s
}

// StartAccounts runs a nats-server with the ledger's accounts
// (embedded.AccountsConf, LedgerAuth writes, anyone else reads) on a loopback
// port and a fresh store. It shuts down when the test ends.
func StartAccounts(tb testing.TB) *Server {
	tb.Helper()
	opts, err := embedded.Options(ClusterPassword)
	if err != nil {
		tb.Fatal(err)
	}
	return startOnLoopback(tb, opts)
}

// startOnLoopback runs a nats-server with opts on a loopback port and a
// fresh store, quiet, until the test ends.
func startOnLoopback(tb testing.TB, opts *server.Options) *Server {
	tb.Helper()
	opts.Host, opts.Port, opts.JetStream, opts.StoreDir, opts.NoLog, opts.NoSigs = "127.0.0.1", -1, true, tb.TempDir(), true, true
	ns, err := server.NewServer(opts)
	if err != nil {
		tb.Fatalf("nats-server: %v", err)
	}
	go ns.Start()
	if !ns.ReadyForConnections(10 * time.Second) {
		tb.Fatal("nats-server did not start")
	}
	s := &Server{Server: ns, StoreDir: opts.StoreDir}
	tb.Cleanup(s.Stop)
	return s
}

// Stop shuts the server down and waits for it.
func (s *Server) Stop() {
	s.Shutdown()
	s.WaitForShutdown()
}

// Connect opens a client connection that closes when the test ends.
func (s *Server) Connect(tb testing.TB) *nats.Conn {
	tb.Helper()
	nc, err := nats.Connect(s.ClientURL())
	if err != nil {
		tb.Fatalf("connect: %v", err)
	}
	tb.Cleanup(nc.Close)
	return nc
}
