package eventstore

import (
	"context"
	"fmt"
	"time"

	"github.com/nats-io/nats.go"
)

// Client is a NATS connection and the ledger's stream on it.
type Client struct {
	*Store
	nc *nats.Conn
}

// Auth holds the usual NATS credentials options; any may be empty.
type Auth struct {
	User, Password string
	Token          string
	CredsFile      string // a .creds file (JWT and NKey seed)
	CAFile         string // CA certificate to verify the servers with (enables TLS)
	CertFile       string // client certificate, with KeyFile, for mutual TLS
	KeyFile        string
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

// Dial connects to the NATS servers at url (comma-separated) and opens the stream.
func Dial(ctx context.Context, url string, auth Auth, cfg Config) (*Client, error) {
	opts := append([]nats.Option{
		nats.Name("sessionledger"),
		nats.MaxReconnects(-1),
		nats.ReconnectWait(250 * time.Millisecond),
		nats.Timeout(5 * time.Second),
	}, auth.options()...)
	nc, err := nats.Connect(url, opts...)
	if err != nil {
		return nil, fmt.Errorf("eventstore: connect to NATS: %w", err)
	}
	return NewClient(ctx, nc, cfg)
}

// NewClient opens the stream on nc; the Client owns nc from then on.
func NewClient(ctx context.Context, nc *nats.Conn, cfg Config) (*Client, error) {
	s, err := Open(ctx, nc, cfg)
	if err != nil {
		nc.Close()
		return nil, err
	}
	return &Client{Store: s, nc: nc}, nil
}

// Close drains the connection, waiting until ctx ends at the latest.
func (c *Client) Close(ctx context.Context) {
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
