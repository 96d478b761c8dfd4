package issuer

import (
	"net/http"
	"net/netip"
	"slices"
	"strings"
)

// DefaultTrustedProxies are the proxies whose X-Forwarded-For is believed
// when Config.TrustedProxies is nil: loopback, where `tollgate up` runs
// the gateway.
var DefaultTrustedProxies = []netip.Prefix{
	netip.MustParsePrefix("127.0.0.0/8"),
	netip.MustParsePrefix("::1/128"),
}

// clientAddr returns the address of the client that sent r: the TCP peer,
// unless the peer is a trusted proxy, in which case X-Forwarded-For is
// walked from the right (the entry the nearest proxy appended) past
// further trusted proxies to the first address that is not one. Entries
// left of that are client-supplied and never believed. A malformed entry
// stops the walk at the last proxy that was trusted.
func clientAddr(r *http.Request, trusted []netip.Prefix) netip.Addr {
	peer := parseHostAddr(r.RemoteAddr)
	if !peer.IsValid() || !isTrusted(peer, trusted) {
		return peer
	}
	var hops []string
	for _, v := range r.Header.Values("X-Forwarded-For") {
		hops = append(hops, strings.Split(v, ",")...)
	}
	addr := peer
	for _, hop := range slices.Backward(hops) {
		a := parseHostAddr(strings.TrimSpace(hop))
		if !a.IsValid() {
			return addr
		}
		addr = a
		if !isTrusted(a, trusted) {
			return a
		}
	}
	return addr
}

// parseHostAddr parses "ip", "ip:port" or "[ip]:port", returning the zero
// Addr for anything else.
func parseHostAddr(s string) netip.Addr {
	if ap, err := netip.ParseAddrPort(s); err == nil {
		return ap.Addr().Unmap()
	}
	if a, err := netip.ParseAddr(s); err == nil && a.Zone() == "" {
		return a.Unmap()
	}
	return netip.Addr{}
}

func isTrusted(a netip.Addr, trusted []netip.Prefix) bool {
	for _, p := range trusted {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

// addrKey is the throttling key for a client address. An IPv6 client
// usually holds a whole /64, so it is throttled as one.
func addrKey(a netip.Addr) string {
	if !a.IsValid() {
		return "unknown"
	}
	if a.Is6() {
		p, _ := a.Prefix(64)
		return p.String()
	}
	return a.String()
}
