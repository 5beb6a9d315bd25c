package transmit

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"testing"
)

// TestURLPolicyCheckResolved: a name that resolves to a private address
// when it is given is refused (loopback only when allowed); a name that
// does not resolve is left to delivery, which checks when it dials.
func TestURLPolicyCheckResolved(t *testing.T) {
	defer func(old func(context.Context, string, string) ([]netip.Addr, error)) { lookupNetIP = old }(lookupNetIP)
	lookupNetIP = func(_ context.Context, _, host string) ([]netip.Addr, error) {
		switch host {
		case "internal.example.com":
			return []netip.Addr{netip.MustParseAddr("8.8.8.8"), netip.MustParseAddr("10.0.0.7")}, nil
		case "dev.example.com":
			return []netip.Addr{netip.MustParseAddr("127.0.0.1")}, nil
		case "public.example.com":
			return []netip.Addr{netip.MustParseAddr("93.184.215.14")}, nil
		}
		return nil, &net.DNSError{Err: "no such host", Name: host, IsNotFound: true}
	}
	for _, c := range []struct {
		policy URLPolicy
		url    string
		ok     bool
	}{
		{URLPolicy{}, "https://internal.example.com/x", false},
		{URLPolicy{AllowPrivate: true}, "https://internal.example.com/x", false},
		{URLPolicy{}, "https://dev.example.com/x", false},
		{URLPolicy{AllowPrivate: true}, "https://dev.example.com/x", true},
		{URLPolicy{}, "https://public.example.com/x", true},
		{URLPolicy{}, "https://nowhere.example.com/x", true},
	} {
		u, err := c.policy.Check(c.url)
		if err != nil {
			t.Fatalf("Check(%s): %v", c.url, err)
		}
		err = c.policy.CheckResolved(context.Background(), u)
		if (err == nil) != c.ok || (err != nil && !errors.Is(err, ErrURLRefused)) {
			t.Errorf("CheckResolved(%s) with %+v: %v, want ok=%v", c.url, c.policy, err, c.ok)
		}
	}
}
