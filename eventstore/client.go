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

// Dial connects to the NATS servers at url (comma-separated) and opens the stream.
func Dial(ctx context.Context, url string, cfg Config) (*Client, error) {
	nc, err := nats.Connect(url,
		nats.Name("sessionledger"),
		nats.MaxReconnects(-1),
		nats.ReconnectWait(250*time.Millisecond),
		nats.Timeout(5*time.Second),
	)
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
