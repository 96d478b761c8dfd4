package oidc

import (
	"bytes"
	"encoding/json"
	"slices"
	"strings"
	"testing"
)

// dpopResult is what dpop.mjs prints.
type dpopResult struct {
	Issuer              string     `json:"issuer"`
	Algs                []string   `json:"dpop_signing_alg_values_supported"`
	JKT                 string     `json:"jkt"`
	TokenType           string     `json:"token_type"`
	CnfJKT              string     `json:"cnf_jkt"`
	RefreshTokenType    string     `json:"refresh_token_type"`
	RefreshCnfJKT       string     `json:"refresh_cnf_jkt"`
	RefreshOtherKey     string     `json:"refresh_other_key"`
	RefreshNoProof      string     `json:"refresh_no_proof"`
	RefreshAfterRefusal string     `json:"refresh_after_refusals"`
	Cases               []dpopCase `json:"cases"`
}

// dpopCase is one request to /books and its answer, the challenges as
// openid-client parsed them.
type dpopCase struct {
	Name            string      `json:"name"`
	Status          int         `json:"status"`
	WWWAuthenticate string      `json:"www_authenticate"`
	Challenges      []challenge `json:"challenges"`
	Error           string      `json:"error"`
}

type challenge struct {
	Scheme     string            `json:"scheme"` // lower case
	Parameters map[string]string `json:"parameters"`
}

// dpopChallenge returns the DPoP challenge of c's answer.
func (c dpopCase) dpopChallenge() (challenge, bool) {
	for _, ch := range c.Challenges {
		if ch.Scheme == "dpop" {
			return ch, true
		}
	}
	return challenge{}, false
}

// TestDPoPClients runs dpop.mjs with node against a fresh stack:
// openid-client obtains a DPoP-bound token with the password grant and
// refreshes it, both with proofs, and panva's dpop makes the proofs for
// /books through the gateway. The bound token works with a fresh proof
// and with nothing else. The packages come from package-lock.json (npm
// ci in this directory; .ci/run and make test do it).
func TestDPoPClients(t *testing.T) {
	node := nodeWith(t, "openid-client", "dpop")
	st := startStack(t)
	const name, password = "dpop-user", "proof of possession"
	register(t, st, name, password)
	out := runNode(t, node, "dpop.mjs", st, name, password)
	var r dpopResult
	if err := json.Unmarshal(out, &r); err != nil {
		t.Fatalf("dpop.mjs printed %q: %v", out, err)
	}
	t.Logf("openid-client and dpop: %s", bytes.TrimSpace(out))

	// The token endpoint (RFC 9449 §5).
	for _, c := range []struct {
		name      string
		got, want any
	}{
		{"discovery issuer", r.Issuer, st.IssuerURL()},
		{"dpop_signing_alg_values_supported has ES256", slices.Contains(r.Algs, "ES256"), true},
		{"password grant with a proof: token_type", strings.ToLower(r.TokenType), "dpop"},
		{"password grant with a proof: cnf.jkt is the key's thumbprint", r.CnfJKT, r.JKT},
		{"refresh with a proof: token_type", strings.ToLower(r.RefreshTokenType), "dpop"},
		{"refresh with a proof: cnf.jkt is the key's thumbprint", r.RefreshCnfJKT, r.JKT},
		{"refresh(bound refresh token, proof by another key)", r.RefreshOtherKey, "invalid_dpop_proof"},
		{"refresh(bound refresh token, no proof)", r.RefreshNoProof, "invalid_dpop_proof"},
		{"refresh(same refresh token, its own key, after the refusals)", r.RefreshAfterRefusal, "none"},
	} {
		if c.got != c.want {
			t.Errorf("%s = %v, want %v", c.name, c.got, c.want)
		}
	}
	if r.JKT == "" {
		t.Error("dpop.mjs reported no key thumbprint")
	}

	// The resource (§7), through the gateway. dpopError is the error the
	// DPoP challenge must carry.
	byName := map[string]dpopCase{}
	for _, c := range r.Cases {
		byName[c.Name] = c
	}
	for _, want := range []struct {
		name      string
		status    int
		dpopError string
	}{
		{"openid-client GET /books", 200, ""},
		{"openid-client POST /books", 201, ""},
		{"openid-client, proof by another key", 401, "invalid_dpop_proof"},
		{"fresh proof", 200, ""},
		{"another fresh proof", 200, ""},
		{"no proof", 401, "invalid_dpop_proof"},
		{"as Bearer", 401, "invalid_token"},
		{"as Bearer, with a proof", 401, "invalid_token"},
		{"in x-access-tokens", 401, "invalid_token"},
		{"in x-access-tokens, with a proof", 401, "invalid_token"},
		{"proof by another key", 401, "invalid_dpop_proof"},
		{"replayed proof", 401, "invalid_dpop_proof"},
		{"proof for another method", 401, "invalid_dpop_proof"},
		{"proof for another URL", 401, "invalid_dpop_proof"},
		{"proof with another token's ath", 401, "invalid_dpop_proof"},
		{"proof without ath", 401, "invalid_dpop_proof"},
		{"two proofs", 401, "invalid_dpop_proof"},
	} {
		got, ok := byName[want.name]
		if !ok {
			t.Errorf("call(%s): dpop.mjs did not report it", want.name)
			continue
		}
		if got.Status != want.status {
			t.Errorf("call(%s) = %d, want %d (WWW-Authenticate %q %s)", want.name, got.Status, want.status, got.WWWAuthenticate, got.Error)
			continue
		}
		if want.status != 401 {
			continue
		}
		ch, ok := got.dpopChallenge()
		if !ok {
			t.Errorf("call(%s): WWW-Authenticate %q, as openid-client reads it %+v, has no DPoP challenge", want.name, got.WWWAuthenticate, got.Challenges)
			continue
		}
		if e := ch.Parameters["error"]; e != want.dpopError {
			t.Errorf("call(%s): DPoP challenge error = %q, want %q (WWW-Authenticate %q)", want.name, e, want.dpopError, got.WWWAuthenticate)
		}
		if algs := strings.Fields(ch.Parameters["algs"]); !slices.Contains(algs, "ES256") {
			t.Errorf("call(%s): DPoP challenge algs = %q, want the proof algorithms, ES256 among them", want.name, ch.Parameters["algs"])
		}
	}
}
