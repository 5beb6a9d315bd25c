// Package embedded runs the in-process nats-server with JetStream that the
// ledger uses by default. It is apart from eventstore so that services using
// eventstore.Feed do not link a nats-server.
package embedded

import (
	"crypto/rand"
	_ "embed"
	"encoding/base64"
	"fmt"
	"log/slog"
	"net"
	"strconv"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"

	"github.com/sessionledger/sessionledger/eventstore"
)

// Config configures the in-process nats-server the ledger runs by default.
type Config struct {
	StoreDir string // JetStream storage directory
	// Listen is the client address (host:port; port -1 picks a free one).
	// Empty: no listener, in-process connections only.
	Listen string
	// Sync is JetStream's sync interval: a duration, "always" (fsync every
	// write before acknowledging it), or "" for nats-server's default.
	Sync   string
	Logger *slog.Logger
}

// Embedded is a running in-process nats-server with JetStream.
type Embedded struct {
	Server *server.Server
	// password is the ledger user's, made up for this run and never stored:
	// only this process can write the stream.
	password string
}

// AccountsConf is the NATS accounts configuration the ledger runs with (see
// the file for what each identity may do). deploy/nats-accounts.conf is the
// same file for clusters.
//
//go:embed accounts.conf
var AccountsConf string

// Identities in AccountsConf.
const (
	LedgerUser    = "ledger"
	LedgerAccount = "LEDGER"
	ReaderAccount = "READ"
	// PasswordVariable names the ledger user's password in AccountsConf.
	PasswordVariable = "LEDGER_NATS_PASSWORD"
)

// Options returns nats-server options with AccountsConf and the ledger's
// password.
func Options(ledgerPassword string) (*server.Options, error) {
	opts := &server.Options{}
	conf := fmt.Sprintf("%s: %q\n%s", PasswordVariable, ledgerPassword, AccountsConf)
	if err := opts.ProcessConfigString(conf); err != nil {
		return nil, fmt.Errorf("embedded: accounts configuration: %w", err)
	}
	return opts, nil
}

// Start starts a nats-server with JetStream on cfg.StoreDir.
func Start(cfg Config) (*Embedded, error) {
	pw := make([]byte, 32)
	_, _ = rand.Read(pw)
	password := base64.RawURLEncoding.EncodeToString(pw)
	opts, err := Options(password)
	if err != nil {
		return nil, err
	}
	opts.ServerName, opts.JetStream, opts.StoreDir, opts.NoSigs = "sessionledger", true, cfg.StoreDir, true
	switch cfg.Sync {
	case "":
	case "always":
		opts.SyncAlways = true
	default:
		d, err := time.ParseDuration(cfg.Sync)
		if err != nil || d <= 0 {
			return nil, fmt.Errorf("embedded: sync interval %q is neither a positive duration nor \"always\"", cfg.Sync)
		}
		opts.SyncInterval = d
	}
	if cfg.Listen == "" {
		opts.DontListen = true
	} else {
		host, port, err := net.SplitHostPort(cfg.Listen)
		if err != nil {
			return nil, fmt.Errorf("embedded: nats listen address %q: %w", cfg.Listen, err)
		}
		p, err := strconv.Atoi(port)
		if err != nil || p < -1 || p > 65535 {
			return nil, fmt.Errorf("embedded: nats listen port %q is not a port", port)
		}
		if p == 0 {
			// nats-server reads port 0 as its default, 4222; as for any
			// listener here, 0 means a free port.
			p = server.RANDOM_PORT
		}
		opts.Host, opts.Port = host, p
	}
	ns, err := server.NewServer(opts)
	if err != nil {
		return nil, fmt.Errorf("embedded: embedded nats-server: %w", err)
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	// nats-server reports a start it gives up on (its client port in use,
	// JetStream unable to use the store) only in a fatal log line, and would
	// leave ReadyForConnections waiting out its whole timeout.
	fatal := make(chan string, 1)
	ns.SetLoggerV2(&natsLogger{l: log.With("component", "nats-server"), fatal: fatal}, false, false, false)
	go ns.Start()
	if err := waitReady(ns, fatal, 30*time.Second); err != nil {
		ns.Shutdown()
		return nil, err
	}
	return &Embedded{Server: ns, password: password}, nil
}

// waitReady waits until ns accepts connections, and returns an error at once
// when it logs a fatal error instead, or after timeout.
func waitReady(ns *server.Server, fatal <-chan string, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		if ns.ReadyForConnections(50 * time.Millisecond) {
			return nil
		}
		select {
		case msg := <-fatal:
			return fmt.Errorf("embedded: nats-server did not start: %s", msg)
		default:
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("embedded: nats-server did not start within %v", timeout)
		}
	}
}

// ClientURL is the address other processes connect to ("" without a listener).
func (e *Embedded) ClientURL() string {
	if e.Server.Addr() == nil {
		return ""
	}
	return e.Server.ClientURL()
}

// Connect connects to the server in-process as the ledger, the one identity
// that writes the stream.
func (e *Embedded) Connect() (*eventstore.Conn, error) {
	nc, err := nats.Connect("", nats.InProcessServer(e.Server), nats.Name("sessionledger"), nats.MaxReconnects(-1),
		nats.UserInfo(LedgerUser, e.password))
	if err != nil {
		return nil, fmt.Errorf("embedded: connect in-process: %w", err)
	}
	return eventstore.NewConn(nc), nil
}

// Shutdown stops the server and waits until it is down.
func (e *Embedded) Shutdown() {
	e.Server.Shutdown()
	e.Server.WaitForShutdown()
}

// natsLogger sends nats-server's log to slog, and its first fatal error to
// fatal too.
type natsLogger struct {
	l     *slog.Logger
	fatal chan<- string
}

func (n *natsLogger) Noticef(format string, v ...any) { n.l.Info(fmt.Sprintf(format, v...)) }
func (n *natsLogger) Warnf(format string, v ...any)   { n.l.Warn(fmt.Sprintf(format, v...)) }
func (n *natsLogger) Fatalf(format string, v ...any) {
	msg := fmt.Sprintf(format, v...)
	n.l.Error(msg)
	select {
	case n.fatal <- msg:
	default:
	}
}
func (n *natsLogger) Errorf(format string, v ...any) { n.l.Error(fmt.Sprintf(format, v...)) }
func (n *natsLogger) Debugf(format string, v ...any) { n.l.Debug(fmt.Sprintf(format, v...)) }
func (n *natsLogger) Tracef(format string, v ...any) { n.l.Debug(fmt.Sprintf(format, v...)) }
