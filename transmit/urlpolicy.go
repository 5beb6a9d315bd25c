package transmit

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"strings"
	"syscall"
	"time"
)

// ErrURLRefused: a receiver URL the policy does not allow. The ledger
// never sends anything to such a URL: no request to anything but the
// receivers an operator meant.
var ErrURLRefused = errors.New("transmit: URL refused")

func refused(reason string) error { return fmt.Errorf("%w: %s", ErrURLRefused, reason) }

// URLPolicy is where webhooks and SSF push streams may be delivered: https
// to public addresses, of the allowed hosts when AllowHosts is set.
type URLPolicy struct {
	// AllowHosts are host names ("api.example.com") or wildcards
	// ("*.example.com": its subdomains, not itself); empty: any host.
	AllowHosts []string
	// AllowPrivate lets receivers be on loopback, over http too: for tests
	// and local development only. Other private addresses stay refused.
	AllowPrivate bool
}

const maxURLLength = 2048

// ParseAllowList reads a comma-separated list of hosts and wildcards.
func ParseAllowList(s string) ([]string, error) {
	var out []string
	for _, h := range strings.Split(s, ",") {
		h = strings.ToLower(strings.TrimSpace(h))
		if h == "" {
			if strings.TrimSpace(s) == "" {
				return nil, nil
			}
			return nil, errors.New("an empty entry")
		}
		name := strings.TrimPrefix(h, "*.")
		if strings.ContainsAny(name, "/:@?#*[] ") || strings.HasPrefix(name, ".") || strings.HasSuffix(name, ".") || !strings.Contains(name, ".") && name != "localhost" {
			return nil, fmt.Errorf("%q is not a host name or *.domain (no scheme, port or path)", h)
		}
		out = append(out, h)
	}
	return out, nil
}

func (p URLPolicy) hostAllowed(host string) bool {
	if len(p.AllowHosts) == 0 {
		return true
	}
	for _, a := range p.AllowHosts {
		if suffix, ok := strings.CutPrefix(a, "*"); ok {
			if strings.HasSuffix(host, suffix) && len(host) > len(suffix) {
				return true
			}
		} else if host == a {
			return true
		}
	}
	return false
}

func isLoopbackName(host string) bool {
	if host == "localhost" || strings.HasSuffix(host, ".localhost") {
		return true
	}
	a, err := netip.ParseAddr(host)
	return err == nil && a.Unmap().IsLoopback()
}

// Check returns raw as a URL the policy allows, or an error wrapping
// ErrURLRefused that says why. Names are checked again, after DNS, when
// Client dials them.
func (p URLPolicy) Check(raw string) (*url.URL, error) {
	if len(raw) > maxURLLength {
		return nil, refused(fmt.Sprintf("longer than %d bytes", maxURLLength))
	}
	u, err := url.Parse(raw)
	if err != nil || !u.IsAbs() || u.Host == "" || u.Opaque != "" {
		return nil, refused("not an absolute URL")
	}
	if u.User != nil {
		return nil, refused("user information is not allowed in the URL")
	}
	if u.Fragment != "" || strings.Contains(raw, "#") {
		return nil, refused("a fragment is not allowed")
	}
	host := strings.TrimSuffix(strings.ToLower(u.Hostname()), ".")
	if host == "" {
		return nil, refused("no host")
	}
	if _, err := netip.ParseAddr(strings.Trim(host, "[]")); err != nil && numericLabel(host) {
		// 2130706433, 0x7f.1, 127.1: IPv4 in forms resolvers differ on.
		return nil, refused("not a host name or an IP address in standard form")
	}
	loopback := isLoopbackName(host)
	switch u.Scheme {
	case "https":
	case "http":
		if !(loopback && p.AllowPrivate) {
			return nil, refused("https is required")
		}
	default:
		return nil, refused("https is required")
	}
	if loopback && !p.AllowPrivate {
		return nil, refused("a loopback address")
	}
	if a, err := netip.ParseAddr(strings.Trim(host, "[]")); err == nil {
		if IsPrivateAddr(a) && !(p.AllowPrivate && a.Unmap().IsLoopback()) {
			return nil, refused("a private, local or reserved address")
		}
	}
	if !loopback && !p.hostAllowed(host) {
		return nil, refused("the host is not in the allow-list (--delivery-allow-hosts)")
	}
	return u, nil
}

var privatePrefixes = func() []netip.Prefix {
	var out []netip.Prefix
	for _, s := range []string{
		"0.0.0.0/8", "10.0.0.0/8", "100.64.0.0/10", "127.0.0.0/8", "169.254.0.0/16", "172.16.0.0/12",
		"192.0.0.0/24", "192.0.2.0/24", "192.88.99.0/24", "192.168.0.0/16", "198.18.0.0/15", "198.51.100.0/24",
		"203.0.113.0/24", "224.0.0.0/4", "240.0.0.0/4", "255.255.255.255/32",
		"::/96", "::1/128", "64:ff9b:1::/48", "100::/64", "2001::/23", "2001:db8::/32", "2002::/16",
		"fc00::/7", "fe80::/10", "fec0::/10", "ff00::/8",
	} {
		out = append(out, netip.MustParsePrefix(s))
	}
	return out
}()

var nat64 = netip.MustParsePrefix("64:ff9b::/96")

// IsPrivateAddr reports whether a is not a public unicast address: private,
// loopback, link-local, multicast, reserved, documentation, or any of
// these in an IPv4-mapped or NAT64 IPv6 form.
func IsPrivateAddr(a netip.Addr) bool {
	a = a.Unmap()
	if !a.IsValid() {
		return true
	}
	if a.Is6() && nat64.Contains(a) {
		b := a.As16()
		return IsPrivateAddr(netip.AddrFrom4([4]byte{b[12], b[13], b[14], b[15]}))
	}
	if a.IsUnspecified() || a.IsLoopback() || a.IsPrivate() || a.IsLinkLocalUnicast() || a.IsLinkLocalMulticast() || a.IsMulticast() || a.IsInterfaceLocalMulticast() {
		return true
	}
	for _, p := range privatePrefixes {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

// Client returns the HTTP client that delivers: it checks the address it
// actually dials (after DNS, so a name that resolves to a private address
// is refused, whatever it resolved to when checked), uses no proxy, never
// follows a redirect, and speaks TLS 1.2 or later.
func (p URLPolicy) Client(timeout time.Duration) *http.Client {
	dialer := &net.Dialer{
		Timeout: 5 * time.Second,
		Control: func(_, address string, _ syscall.RawConn) error {
			ap, err := netip.ParseAddrPort(address)
			if err != nil {
				return refused("an address that is not an IP")
			}
			a := ap.Addr().Unmap()
			if IsPrivateAddr(a) && !(p.AllowPrivate && a.IsLoopback()) {
				return refused("the host resolves to a private, local or reserved address")
			}
			return nil
		},
	}
	return &http.Client{
		Transport: &http.Transport{
			Proxy: nil,
			DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
				return dialer.DialContext(ctx, network, addr)
			},
			TLSClientConfig:        &tls.Config{MinVersion: tls.VersionTLS12},
			TLSHandshakeTimeout:    5 * time.Second,
			ResponseHeaderTimeout:  timeout,
			MaxResponseHeaderBytes: 16 << 10,
			MaxIdleConnsPerHost:    4,
			IdleConnTimeout:        90 * time.Second,
			ForceAttemptHTTP2:      true,
		},
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
		Timeout:       timeout,
	}
}

// CheckResolved refuses u when its host resolves, now, to an address the
// delivery client would refuse to dial: so that a name of an internal host
// gets a clear 400 when it is given rather than failed deliveries later. A
// name that does not resolve now is let through (delivery dials again, and
// checks again, each time).
func (p URLPolicy) CheckResolved(ctx context.Context, u *url.URL) error {
	host := strings.TrimSuffix(strings.ToLower(u.Hostname()), ".")
	if _, err := netip.ParseAddr(host); err == nil {
		return nil // checked by Check
	}
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	addrs, err := lookupNetIP(ctx, "ip", host)
	if err != nil {
		return nil
	}
	for _, a := range addrs {
		a = a.Unmap()
		if IsPrivateAddr(a) && !(p.AllowPrivate && a.IsLoopback()) {
			return refused("the host resolves to a private, local or reserved address")
		}
	}
	return nil
}

// numericLabel reports whether host's last label is a number (decimal or
// 0x hex): no top-level domain is, so the host is an IPv4 address written
// in a form that is not the standard one.
func numericLabel(host string) bool {
	label := host[strings.LastIndex(host, ".")+1:]
	digits := strings.TrimPrefix(label, "0x")
	if digits == "" {
		return label != ""
	}
	for _, c := range digits {
		isHex := strings.HasPrefix(label, "0x") && (c >= 'a' && c <= 'f')
		if !(c >= '0' && c <= '9') && !isHex {
			return false
		}
	}
	return true
}

// lookupNetIP resolves names for CheckResolved (a test replaces it).
var lookupNetIP = net.DefaultResolver.LookupNetIP
