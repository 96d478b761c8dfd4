package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/tollgate-dev/tollgate/authz"
)

// runExplain is `tollgate authz explain [flags] [TOKEN]`: why a token is
// allowed or denied, asked of a running authz (-authz URL, its POST
// /explain) or decided here against an issuer's key set (-issuer, and
// -jwks-url or discovery). The token comes from stdin when not given.
func runExplain(ctx context.Context, args []string, stdin io.Reader, stdout io.Writer) error {
	d := authz.DefaultConfig()
	fs := flag.NewFlagSet("tollgate authz explain", flag.ContinueOnError)
	var (
		req      authz.ExplainRequest
		authzURL string
		asJSON   bool
		cfg      = d
	)
	req.Policy = map[string]string{}
	fs.StringVar(&req.Method, "method", "GET", "method of the request the token comes with")
	fs.StringVar(&req.Path, "path", "/", "path of the request the token comes with")
	fs.StringVar(&req.Host, "host", "", "host of the request the token comes with, for authz-side routes that match on it")
	fs.Func("policy", "route policy KEY=VALUE, as in context_extensions (require=admin); repeatable", func(s string) error {
		k, v, ok := strings.Cut(s, "=")
		if !ok || k == "" {
			return fmt.Errorf("%q is not KEY=VALUE", s)
		}
		req.Policy[k] = v
		return nil
	})
	fs.StringVar(&authzURL, "authz", "", "base URL of a running authz's HTTP port (started with -explain), e.g. http://127.0.0.1:9002")
	fs.StringVar(&cfg.Issuer, "issuer", "", "offline: the expected iss claim, and the base URL of OpenID discovery")
	fs.StringVar(&cfg.JWKSURL, "jwks-url", "", "offline: the JWKS URL (default: discovered from -issuer)")
	fs.StringVar(&cfg.ConfigFile, "config", "", "offline: an authz configuration file (issuers, routes, default), as tollgate authz -config reads it")
	fs.StringVar(&cfg.Audience, "audience", d.Audience, "offline: audience that must be in the aud claim")
	fs.DurationVar(&cfg.Leeway, "leeway", d.Leeway, "offline: clock skew allowed on exp, nbf and iat")
	fs.BoolVar(&asJSON, "json", false, "print the explanation as JSON")
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "usage: tollgate authz explain [flags] [TOKEN]\n\nThe token is read from stdin when not given. Ask a running authz with -authz,\nor decide offline with -issuer (and -jwks-url) or -config FILE.\n\nflags:\n")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return err
	}
	switch fs.NArg() {
	case 0:
		b, err := io.ReadAll(io.LimitReader(stdin, authz.MaxTokenBytes+1024))
		if err != nil {
			return fmt.Errorf("read token from stdin: %w", err)
		}
		req.Token = strings.TrimSpace(string(b))
	case 1:
		req.Token = fs.Arg(0)
	default:
		return fmt.Errorf("at most one token, not %d arguments", fs.NArg())
	}
	var (
		e   authz.Explanation
		err error
	)
	switch {
	case authzURL != "" && (cfg.Issuer != "" || cfg.ConfigFile != ""):
		return errors.New("-authz excludes -issuer and -config: ask a running authz, or decide offline")
	case authzURL != "":
		e, err = explainRemote(ctx, authzURL, req)
	case cfg.Issuer != "" || cfg.ConfigFile != "":
		e, err = explainOffline(ctx, cfg, req)
	default:
		return errors.New("say where the keys are: -authz URL of a running authz, or -issuer (and -jwks-url) or -config FILE to decide here")
	}
	if err != nil {
		return err
	}
	if asJSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(e)
	}
	printExplanation(stdout, e)
	return nil
}

// explainRemote asks a running authz's POST /explain.
func explainRemote(ctx context.Context, base string, req authz.ExplainRequest) (authz.Explanation, error) {
	var e authz.Explanation
	body, _ := json.Marshal(req)
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	hr, err := http.NewRequestWithContext(ctx, http.MethodPost, strings.TrimSuffix(base, "/")+"/explain", bytes.NewReader(body))
	if err != nil {
		return e, fmt.Errorf("-authz: %w", err)
	}
	hr.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(hr)
	if err != nil {
		return e, fmt.Errorf("ask authz: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode == http.StatusNotFound {
		return e, fmt.Errorf("%s has no POST /explain: start authz with -explain (tollgate up turns it on)", base)
	}
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 1024))
		return e, fmt.Errorf("POST %s/explain = %s: %s", base, resp.Status, strings.TrimSpace(string(b)))
	}
	if err := json.NewDecoder(io.LimitReader(resp.Body, 1<<20)).Decode(&e); err != nil {
		return e, fmt.Errorf("read explanation: %w", err)
	}
	return e, nil
}

// explainOffline decides here, with an authz of its own that fetches
// the issuers' key sets once: the one -issuer names, or those of the
// -config file, whose routes and default apply as they do in authz.
func explainOffline(ctx context.Context, cfg authz.Config, req authz.ExplainRequest) (authz.Explanation, error) {
	cfg.CacheSize = 0
	cfg.LogBuffer = 0
	srv, err := authz.New(ctx, cfg, slog.New(slog.DiscardHandler), prometheus.NewRegistry())
	if err != nil {
		return authz.Explanation{}, err
	}
	defer srv.Close()
	deadline := time.Now().Add(cfg.FetchTimeout + time.Second)
	for srv.Ready(ctx) != nil && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	// Not ready is an answer too: the explanation says no keys loaded.
	return srv.Explain(ctx, req), nil
}

func printExplanation(w io.Writer, e authz.Explanation) {
	if e.Request != "" {
		fmt.Fprintf(w, "request: %s\n", e.Request)
	}
	fmt.Fprintf(w, "decision: %s\nreason: %s\nstatus: %d\n", e.Decision, e.Reason, e.Status)
	if e.Issuer != "" {
		fmt.Fprintf(w, "issuer: %s\n", e.Issuer)
	}
	if len(e.Claims) > 0 {
		fmt.Fprintln(w, "claims:")
		for _, k := range sortedKeys(e.Claims) {
			fmt.Fprintf(w, "  %s: %v\n", k, e.Claims[k])
		}
	}
	if len(e.Headers) > 0 {
		fmt.Fprintln(w, "headers an allow sets:")
		for _, k := range sortedKeys(e.Headers) {
			fmt.Fprintf(w, "  %s: %s\n", k, e.Headers[k])
		}
	}
	if len(e.Removes) > 0 {
		fmt.Fprintf(w, "headers an allow removes: %s\n", strings.Join(e.Removes, ", "))
	}
}

func sortedKeys[V any](m map[string]V) []string {
	ks := make([]string, 0, len(m))
	for k := range m {
		ks = append(ks, k)
	}
	slices.Sort(ks)
	return ks
}
