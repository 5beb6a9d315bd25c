package main

import (
	"errors"
	"fmt"
	"net"
	"strconv"
	"syscall"
)

// claim takes, before anything else starts, what this instance must have to
// itself, so that a second ledger started by mistake is refused at once with
// the reason: with the embedded NATS, the data dir (locked, see
// dataDirLockFile); the HTTP address, and the admin one with --admin-addr
// (bound here, served on once the ledger is ready); with the embedded NATS, its client address (checked here; the
// server binds it a moment later). Close releases them.
func (m *Main) claim() error {
	embedded := m.Config.NATSURL == ""
	var err error
	if embedded {
		if m.lock, err = lockDataDir(m.Config.DataDir); err != nil {
			return err
		}
	}
	if m.ln, err = listenHTTP("--http-addr", m.Config.HTTPAddr); err != nil {
		return err
	}
	if m.Config.AdminAddr != "" {
		if m.adminLn, err = listenHTTP("--admin-addr", m.Config.AdminAddr); err != nil {
			return err
		}
	}
	if !embedded {
		return nil
	}
	if err := m.lock.record(thisHolder(m.ln.Addr().String())); err != nil {
		return err
	}
	return checkNATSListen(m.Config.NATSListen)
}

// listenHTTP binds an HTTP address given by flag.
func listenHTTP(flag, addr string) (net.Listener, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, addrError(flag, addr, err)
	}
	return ln, nil
}

// checkNATSListen tells whether the embedded server will be able to bind
// --nats-listen: nats-server only logs that it cannot.
func checkNATSListen(addr string) error {
	if addr == "" {
		return nil // in-process only
	}
	_, port, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("--nats-listen %q: %w", addr, err)
	}
	if p, err := strconv.Atoi(port); err != nil || p < -1 || p > 65535 {
		return fmt.Errorf("--nats-listen %q: the port is not a number from 0 to 65535", addr)
	} else if p <= 0 {
		return nil // any free port (0 or -1)
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return addrError("--nats-listen", addr, err)
	}
	return ln.Close()
}

func addrError(flag, addr string, err error) error {
	if errors.Is(err, syscall.EADDRINUSE) {
		return fmt.Errorf("%s %s is in use (another sessionledger serve, or another server?); stop it, or give another %s: %w", flag, addr, flag, err)
	}
	return fmt.Errorf("%s %s: %w", flag, addr, err)
}
