package eventstore

import (
	"context"
	"flag"
	"fmt"
	"time"

	"github.com/nats-io/nats.go"
)

// Auth holds the usual NATS credentials options; any may be empty.
type Auth struct {
	User, Password string
	Token          string
	CredsFile      string // a .creds file (JWT and NKey seed)
	CAFile         string // CA certificate to verify the servers with (enables TLS)
	CertFile       string // client certificate, with KeyFile, for mutual TLS
	KeyFile        string
}

// AddFlags registers the NATS credential flags (--nats-user, --nats-password,
// --nats-token, --nats-creds, --nats-ca, --nats-cert, --nats-key) on fs, so
// that every command and example takes the same ones.
func (a *Auth) AddFlags(fs *flag.FlagSet) {
	fs.StringVar(&a.User, "nats-user", a.User, "NATS user")
	fs.StringVar(&a.Password, "nats-password", a.Password, "NATS password (prefer the environment)")
	fs.StringVar(&a.Token, "nats-token", a.Token, "NATS token (prefer the environment)")
	fs.StringVar(&a.CredsFile, "nats-creds", a.CredsFile, "NATS credentials file (.creds)")
	fs.StringVar(&a.CAFile, "nats-ca", a.CAFile, "CA certificate for TLS to NATS")
	fs.StringVar(&a.CertFile, "nats-cert", a.CertFile, "client certificate for mutual TLS to NATS")
	fs.StringVar(&a.KeyFile, "nats-key", a.KeyFile, "client key for mutual TLS to NATS")
}

func (a Auth) options() []nats.Option {
	var opts []nats.Option
	if a.User != "" || a.Password != "" {
		opts = append(opts, nats.UserInfo(a.User, a.Password))
	}
	if a.Token != "" {
		opts = append(opts, nats.Token(a.Token))
	}
	if a.CredsFile != "" {
		opts = append(opts, nats.UserCredentials(a.CredsFile))
	}
	if a.CAFile != "" {
		opts = append(opts, nats.RootCAs(a.CAFile))
	}
	if a.CertFile != "" || a.KeyFile != "" {
		opts = append(opts, nats.ClientCert(a.CertFile, a.KeyFile))
	}
	return opts
}

// Conn is a connection to the ledger's NATS: the one way every command, the
// example service and the ledger itself reach it.
type Conn struct {
	nc *nats.Conn
}

// Connect dials the NATS servers at url (comma-separated) with auth, under
// the connection name name, and keeps reconnecting for as long as it is open.
func Connect(url string, auth Auth, name string) (*Conn, error) {
	opts := append([]nats.Option{
		nats.Name(name),
		nats.MaxReconnects(-1),
		nats.ReconnectWait(250 * time.Millisecond),
		nats.Timeout(5 * time.Second),
	}, auth.options()...)
	nc, err := nats.Connect(url, opts...)
	if err != nil {
		return nil, fmt.Errorf("eventstore: connect to NATS: %w", err)
	}
	return &Conn{nc: nc}, nil
}

// NewConn wraps a connection made elsewhere (in-process, in tests); the Conn
// owns it from then on.
func NewConn(nc *nats.Conn) *Conn { return &Conn{nc: nc} }

// Store opens the ledger's stream for writing (see Open).
func (c *Conn) Store(ctx context.Context, cfg Config) (*Store, error) { return Open(ctx, c.nc, cfg) }

// Feed opens the ledger's stream for reading (see NewFeed).
func (c *Conn) Feed(ctx context.Context) (*Feed, error) { return NewFeed(ctx, c.nc) }

// NATS returns the underlying connection, for benchmark fixtures that
// measure bare JetStream next to the ledger.
func (c *Conn) NATS() *nats.Conn { return c.nc }

// Close drains the connection, waiting until ctx ends at the latest.
func (c *Conn) Close(ctx context.Context) {
	done := make(chan struct{})
	c.nc.SetClosedHandler(func(*nats.Conn) { close(done) })
	if err := c.nc.Drain(); err != nil {
		c.nc.Close()
		return
	}
	select {
	case <-done:
	case <-ctx.Done():
		c.nc.Close()
	}
}
