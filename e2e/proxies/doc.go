// Package proxies tests the proxy examples under examples/ (nginx, Caddy,
// Traefik) as they are shipped: each runs the real proxy, on its example
// file with only the addresses changed, in front of the real stack
// (package stack, without its gateway), and checks what reaches the
// services and what the client gets back. It also holds docs/proxies.md's
// copies of the examples identical to the files.
//
// It is test support only and must never be linked into the binary.
package proxies
