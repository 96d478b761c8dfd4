package issuer

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"time"

	"github.com/google/uuid"
	"github.com/lestrrat-go/jwx/v2/jwt"

	"github.com/tollgate-dev/tollgate/internal/httpapi"
)

// accessToken is a signed access token and what the session tables
// record of it.
type accessToken struct {
	raw string
	jti string
	exp time.Time
}

// issueToken signs a new token for u with the current signing key. Its
// iat is never before u's not-before (see revokeUser), so a token issued
// right after a revocation of all of u's sessions is not refused with
// them. A token issued with a DPoP proof is bound to its key: jkt, the
// key's thumbprint, goes in cnf (RFC 9449 §6.1).
func (s *Service) issueToken(ctx context.Context, u user, jkt string) (accessToken, error) {
	now := s.cfg.Now().Truncate(time.Second)
	nb, err := s.sessions.notBefore(ctx, u.publicID)
	if err != nil {
		return accessToken{}, err
	}
	if nb.After(now) {
		now = nb
	}
	exp := now.Add(s.cfg.TokenTTL)
	kid, alg, key, err := s.keys.sign(now, exp)
	if errors.Is(err, errNoSigningKey) {
		e := httpapi.Errorf(http.StatusServiceUnavailable, err, "no signing key is available; retry shortly")
		e.Header = http.Header{"Retry-After": {"5"}}
		return accessToken{}, e
	}
	if err != nil {
		return accessToken{}, err
	}
	jti := uuid.NewString()
	b := jwt.NewBuilder().
		Issuer(s.cfg.IssuerURL).
		Subject(u.publicID).
		Audience([]string{s.cfg.Audience}).
		IssuedAt(now).
		NotBefore(now).
		Expiration(exp).
		JwtID(jti).
		Claim("name", u.name).
		Claim("roles", s.roles(u.name))
	if jkt != "" {
		b = b.Claim("cnf", map[string]string{"jkt": jkt})
	}
	tok, err := b.Build()
	if err != nil {
		return accessToken{}, fmt.Errorf("build token: %w", err)
	}
	signed, err := jwt.Sign(tok, jwt.WithKey(alg, key))
	if err != nil {
		return accessToken{}, fmt.Errorf("sign token with key %s: %w", kid, err)
	}
	return accessToken{raw: string(signed), jti: jti, exp: exp}, nil
}

func (s *Service) cacheControl() string {
	return "public, max-age=" + strconv.Itoa(int(s.cfg.JWKSMaxAge/time.Second))
}

// jwks serves the public signing keys. The strong ETag is a hash of the
// body, so If-None-Match gets a 304 until the key set changes.
func (s *Service) jwks(w http.ResponseWriter, r *http.Request) error {
	body, etag, err := s.keys.jwks(s.cfg.Now())
	if err != nil {
		return err
	}
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Cache-Control", s.cacheControl())
	h.Set("ETag", etag)
	http.ServeContent(w, r, "", time.Time{}, bytes.NewReader(body))
	return nil
}

// discovery is the OpenID Provider Metadata subset that JWKS consumers
// (Envoy's jwt_authn, Istio's RequestAuthentication, JOSE libraries)
// read.
type discovery struct {
	Issuer                 string   `json:"issuer"`
	JWKSURI                string   `json:"jwks_uri"`
	TokenEndpoint          string   `json:"token_endpoint"`
	TokenEndpointAuth      []string `json:"token_endpoint_auth_methods_supported"`
	RevocationEndpoint     string   `json:"revocation_endpoint"`
	RevocationEndpointAuth []string `json:"revocation_endpoint_auth_methods_supported"`
	GrantTypes             []string `json:"grant_types_supported"`
	ResponseTypes          []string `json:"response_types_supported"`
	SubjectTypes           []string `json:"subject_types_supported"`
	IDTokenSigningAlgs     []string `json:"id_token_signing_alg_values_supported"`
	ClaimsSupported        []string `json:"claims_supported"`
	// DPoPSigningAlgs are the proof algorithms /token accepts (RFC 9449
	// §5.1).
	DPoPSigningAlgs []string `json:"dpop_signing_alg_values_supported"`
}

func (s *Service) openIDConfiguration(w http.ResponseWriter, r *http.Request) error {
	grants := []string{"password", "refresh_token"}
	if s.cfg.DisableRefresh {
		grants = []string{"password"}
	}
	body, err := json.Marshal(discovery{
		Issuer:        s.cfg.IssuerURL,
		JWKSURI:       s.cfg.IssuerURL + "/.well-known/jwks.json",
		TokenEndpoint: s.cfg.IssuerURL + "/token",
		// Public clients (RFC 6749 §2.1) authenticate with nothing
		// but their client_id.
		TokenEndpointAuth:      []string{"none"},
		RevocationEndpoint:     s.cfg.IssuerURL + "/revoke",
		RevocationEndpointAuth: []string{"none"},
		GrantTypes:             grants,
		ResponseTypes:          []string{"token"},
		SubjectTypes:           []string{"public"},
		IDTokenSigningAlgs:     s.keys.algs(s.cfg.Now()),
		ClaimsSupported:        []string{"iss", "sub", "aud", "exp", "iat", "nbf", "jti", "name", "roles", "cnf"},
		DPoPSigningAlgs:        s.dpop.Algorithms(),
	})
	if err != nil {
		return fmt.Errorf("encode discovery document: %w", err)
	}
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Cache-Control", s.cacheControl())
	w.WriteHeader(http.StatusOK)
	_, _ = w.Write(append(body, '\n'))
	return nil
}
