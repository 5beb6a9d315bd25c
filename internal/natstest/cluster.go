package natstest

import (
	"fmt"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/sessionledger/sessionledger/eventstore"
	"github.com/sessionledger/sessionledger/eventstore/embedded"
	"github.com/sessionledger/sessionledger/internal/poll"

	"github.com/nats-io/nats-server/v2/server"
)

// ClusterName is the name of the test cluster, as in deploy/nats-*.conf.
const ClusterName = "ledger"

// ClusterPassword is the ledger user's password in the test cluster.
const ClusterPassword = "test-cluster-ledger-password"

// LedgerAuth is how a ledger connects to the test cluster: the one identity
// that may write the stream.
var LedgerAuth = eventstore.Auth{User: embedded.LedgerUser, Password: ClusterPassword}

// Cluster is a JetStream cluster of in-process nats-servers, routed over
// loopback, each with its own store directory.
type Cluster struct {
	Servers []*Server // nil while a server is down
	opts    []*server.Options
}

// freePorts returns n loopback TCP ports that were free a moment ago.
func freePorts(tb testing.TB, n int) []int {
	tb.Helper()
	var ports []int
	var lns []net.Listener
	for i := 0; i < n; i++ {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			tb.Fatal(err)
		}
		lns = append(lns, ln)
		ports = append(ports, ln.Addr().(*net.TCPAddr).Port)
	}
	for _, ln := range lns {
		ln.Close()
	}
	return ports
}

// StartCluster starts n servers named n1…nN in cluster ClusterName and waits
// until JetStream has a meta leader. They shut down when the test ends.
func StartCluster(tb testing.TB, n int) *Cluster {
	tb.Helper()
	ports := freePorts(tb, 2*n)
	var routes []string
	for i := 0; i < n; i++ {
		routes = append(routes, fmt.Sprintf("nats://127.0.0.1:%d", ports[n+i]))
	}
	c := &Cluster{Servers: make([]*Server, n)}
	for i := 0; i < n; i++ {
		// The accounts every deployment runs with: the ledger writes,
		// everyone else reads (deploy/nats-accounts.conf).
		o, err := embedded.Options(ClusterPassword)
		if err != nil {
			tb.Fatal(err)
		}
		o.ServerName = fmt.Sprintf("n%d", i+1)
		o.Host, o.Port = "127.0.0.1", ports[i]
		o.JetStream, o.StoreDir = true, tb.TempDir()
		o.NoLog, o.NoSigs = true, true
		o.Cluster = server.ClusterOpts{Name: ClusterName, Host: "127.0.0.1", Port: ports[n+i]}
		o.Routes = server.RoutesFromStr(strings.Join(routes, ","))
		c.opts = append(c.opts, o)
	}
	for i := range c.opts {
		c.start(tb, i)
	}
	tb.Cleanup(func() {
		for i := range c.Servers {
			c.Stop(i)
		}
	})
	poll.Until(tb, 30*time.Second, func() error {
		for _, s := range c.Servers {
			if s.JetStreamIsLeader() {
				return nil
			}
		}
		return fmt.Errorf("no JetStream meta leader")
	})
	return c
}

func (c *Cluster) start(tb testing.TB, i int) {
	tb.Helper()
	o := *c.opts[i]
	ns, err := server.NewServer(&o)
	if err != nil {
		tb.Fatalf("server %d: %v", i, err)
	}
	go ns.Start()
	if !ns.ReadyForConnections(20 * time.Second) {
		tb.Fatalf("server %d did not start", i)
	}
	c.Servers[i] = &Server{Server: ns, StoreDir: o.StoreDir}
}

// URLs returns the client URLs of all servers, comma-separated.
func (c *Cluster) URLs() string {
	var urls []string
	for _, o := range c.opts {
		urls = append(urls, fmt.Sprintf("nats://127.0.0.1:%d", o.Port))
	}
	return strings.Join(urls, ",")
}

// StreamLeader returns the index of the server leading stream, or -1.
func (c *Cluster) StreamLeader(stream string) int {
	for i, s := range c.Servers {
		if s != nil && s.JetStreamIsStreamLeader(embedded.LedgerAccount, stream) {
			return i
		}
	}
	return -1
}

// Stop shuts server i down and waits for it.
func (c *Cluster) Stop(i int) {
	if c.Servers[i] != nil {
		c.Servers[i].Stop()
		c.Servers[i] = nil
	}
}

// Restart starts server i again on its ports and store directory.
func (c *Cluster) Restart(tb testing.TB, i int) {
	tb.Helper()
	c.start(tb, i)
}
