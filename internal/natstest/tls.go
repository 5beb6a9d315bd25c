package natstest

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"

	"github.com/sessionledger/sessionledger/eventstore"
	"github.com/sessionledger/sessionledger/eventstore/embedded"
)

// TLSFiles are PEM files made for one test: a CA, a server certificate for
// 127.0.0.1 and localhost, and a client certificate, both signed by the CA.
type TLSFiles struct {
	CA, ServerCert, ServerKey, ClientCert, ClientKey string
}

// NewTLSFiles makes a CA and certificates signed by it in a temporary
// directory.
func NewTLSFiles(tb testing.TB) TLSFiles {
	tb.Helper()
	dir := tb.TempDir()
	caKey := newKey(tb)
	caTmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "sessionledger test CA"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		tb.Fatal(err)
	}
	ca, err := x509.ParseCertificate(caDER)
	if err != nil {
		tb.Fatal(err)
	}
	f := TLSFiles{CA: filepath.Join(dir, "ca.pem")}
	writePEM(tb, f.CA, "CERTIFICATE", caDER)
	leaf := func(serial int64, name string, usage x509.ExtKeyUsage) (certFile, keyFile string) {
		key := newKey(tb)
		tmpl := &x509.Certificate{
			SerialNumber: big.NewInt(serial),
			Subject:      pkix.Name{CommonName: name},
			NotBefore:    time.Now().Add(-time.Hour),
			NotAfter:     time.Now().Add(24 * time.Hour),
			KeyUsage:     x509.KeyUsageDigitalSignature,
			ExtKeyUsage:  []x509.ExtKeyUsage{usage},
		}
		if usage == x509.ExtKeyUsageServerAuth {
			tmpl.IPAddresses, tmpl.DNSNames = []net.IP{net.IPv4(127, 0, 0, 1)}, []string{"localhost"}
		}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
		if err != nil {
			tb.Fatal(err)
		}
		keyDER, err := x509.MarshalECPrivateKey(key)
		if err != nil {
			tb.Fatal(err)
		}
		certFile, keyFile = filepath.Join(dir, name+".pem"), filepath.Join(dir, name+"-key.pem")
		writePEM(tb, certFile, "CERTIFICATE", der)
		writePEM(tb, keyFile, "EC PRIVATE KEY", keyDER)
		return certFile, keyFile
	}
	f.ServerCert, f.ServerKey = leaf(2, "server", x509.ExtKeyUsageServerAuth)
	f.ClientCert, f.ClientKey = leaf(3, "client", x509.ExtKeyUsageClientAuth)
	return f
}

func newKey(tb testing.TB) *ecdsa.PrivateKey {
	tb.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		tb.Fatal(err)
	}
	return key
}

func writePEM(tb testing.TB, path, kind string, der []byte) {
	tb.Helper()
	if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: kind, Bytes: der}), 0o600); err != nil {
		tb.Fatal(err)
	}
}

// AuditorUser and AuditorPassword are the one reading identity of
// StartTLSAccounts: it has the permissions of the accounts' "reader", but a
// password, and connections without credentials are refused.
const (
	AuditorUser     = "auditor"
	AuditorPassword = "test-auditor-password"
)

// StartTLSAccounts runs a nats-server with the ledger's accounts that
// requires TLS with a client certificate signed by files.CA, and a user and
// password of every client: the ledger (LedgerAuth) or AuditorUser. It
// listens on a loopback port and shuts down when the test ends.
func StartTLSAccounts(tb testing.TB, files TLSFiles) *Server {
	tb.Helper()
	opts, err := embedded.Options(ClusterPassword)
	if err != nil {
		tb.Fatal(err)
	}
	// The reader keeps its permissions but gets a name and a password;
	// without no_auth_user, a client without credentials is refused.
	i := slices.IndexFunc(opts.Users, func(u *server.User) bool { return u.Username == "reader" })
	if i < 0 || opts.NoAuthUser != "reader" {
		tb.Fatalf("the accounts configuration has no anonymous reader to turn into %s", AuditorUser)
	}
	auditor := *opts.Users[i]
	auditor.Username, auditor.Password = AuditorUser, AuditorPassword
	opts.Users[i], opts.NoAuthUser = &auditor, ""
	opts.TLSConfig, err = server.GenTLSConfig(&server.TLSConfigOpts{
		CertFile: files.ServerCert, KeyFile: files.ServerKey, CaFile: files.CA, Verify: true,
	})
	if err != nil {
		tb.Fatal(err)
	}
	opts.TLS, opts.TLSVerify, opts.TLSTimeout = true, true, 5
	return startOnLoopback(tb, opts)
}

// TLSAuth is auth with the CA and client certificate of files added.
func TLSAuth(auth eventstore.Auth, files TLSFiles) eventstore.Auth {
	auth.CAFile, auth.CertFile, auth.KeyFile = files.CA, files.ClientCert, files.ClientKey
	return auth
}
