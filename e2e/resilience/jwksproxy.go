package resilience

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"sync"
	"time"
)

// JWKSProxy serves the issuer's JWKS to authz, less the keys a test has
// withdrawn.
//
// The issuer itself withdraws a removed key only after every token it
// signed has expired (and a grace period), so with the real issuer alone a
// token can never outlive its key's withdrawal and "a withdrawn key's
// tokens are refused" cannot be observed. Withdrawal ahead of expiry is
// what an operator does after a key leaks; the proxy plays that part, and
// authz, which only ever sees the JWKS document, cannot tell the
// difference.
type JWKSProxy struct {
	upstream string
	client   *http.Client

	mu        sync.Mutex
	withdrawn map[string]time.Time
	served    int
}

// NewJWKSProxy returns a proxy for the JWKS at upstream.
func NewJWKSProxy(upstream string) *JWKSProxy {
	return &JWKSProxy{
		upstream:  upstream,
		client:    &http.Client{Timeout: 2 * time.Second},
		withdrawn: map[string]time.Time{},
	}
}

// Withdraw drops kid from every JWKS served from now on and returns the
// moment it took effect.
func (p *JWKSProxy) Withdraw(kid string) time.Time {
	p.mu.Lock()
	defer p.mu.Unlock()
	now := time.Now()
	p.withdrawn[kid] = now
	return now
}

// Served returns how many JWKS documents the proxy has answered with.
func (p *JWKSProxy) Served() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.served
}

// ServeHTTP fetches the upstream JWKS and answers with it, without the
// withdrawn keys. It passes Cache-Control on, so authz refreshes as it
// would from the issuer, but never ETag: a conditional request the issuer
// answered with 304 would keep a withdrawn key alive.
func (p *JWKSProxy) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	req, err := http.NewRequestWithContext(r.Context(), http.MethodGet, p.upstream, nil)
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	resp, err := p.client.Do(req)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadGateway)
		return
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil || resp.StatusCode != http.StatusOK {
		http.Error(w, fmt.Sprintf("upstream JWKS: status %d, %v", resp.StatusCode, err), http.StatusBadGateway)
		return
	}
	var set struct {
		Keys []json.RawMessage `json:"keys"`
	}
	if err := json.Unmarshal(body, &set); err != nil {
		http.Error(w, "upstream JWKS: "+err.Error(), http.StatusBadGateway)
		return
	}
	p.mu.Lock()
	kept := set.Keys[:0]
	for _, k := range set.Keys {
		var id struct {
			Kid string `json:"kid"`
		}
		if json.Unmarshal(k, &id) == nil {
			if _, gone := p.withdrawn[id.Kid]; gone {
				continue
			}
		}
		kept = append(kept, k)
	}
	p.served++
	p.mu.Unlock()
	set.Keys = kept
	out, err := json.Marshal(set)
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	if cc := resp.Header.Get("Cache-Control"); cc != "" {
		w.Header().Set("Cache-Control", cc)
	}
	w.Header().Set("Content-Type", "application/jwk-set+json")
	w.Write(out)
}
