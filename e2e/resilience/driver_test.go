package resilience

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

func TestClassify(t *testing.T) {
	for _, tc := range []struct {
		status int
		want   Outcome
	}{
		{0, NoAnswer}, {200, Allowed}, {201, Allowed}, {204, Allowed},
		{401, Denied}, {403, Denied}, {429, Shed}, {503, Shed},
		{500, Failed}, {502, Failed}, {504, Failed}, {400, Rejected}, {404, Rejected}, {302, Failed},
	} {
		if got := Classify(tc.status); got != tc.want {
			t.Errorf("Classify(%d) = %v, want %v", tc.status, got, tc.want)
		}
	}
}

func TestWrong(t *testing.T) {
	for _, tc := range []struct {
		e    Expect
		o    Outcome
		want bool
	}{
		{ExpectAllow, Denied, true}, {ExpectAllow, Allowed, false}, {ExpectAllow, Shed, false},
		{ExpectDeny, Allowed, true}, {ExpectDeny, Denied, false}, {ExpectDeny, Shed, false},
		{ExpectEither, Allowed, false}, {ExpectEither, Denied, false},
		{ExpectNone, Allowed, false}, {ExpectNone, Denied, false},
	} {
		if got := tc.e.Wrong(tc.o); got != tc.want {
			t.Errorf("Expect(%v).Wrong(%v) = %v, want %v", tc.e, tc.o, got, tc.want)
		}
	}
}

func TestKeysExpect(t *testing.T) {
	t0 := time.Date(2026, 1, 1, 12, 0, 0, 0, time.UTC)
	at := func(s float64) time.Time { return t0.Add(time.Duration(s * float64(time.Second))) }
	k := &Keys{Bound: 2 * time.Second, Leeway: time.Second}
	k.Withdrawn("gone", at(10))
	live := &Token{Kid: "kept", Exp: at(60)}
	gone := &Token{Kid: "gone", Exp: at(60)}
	for _, tc := range []struct {
		name       string
		tok        *Token
		sent, done float64
		want       Expect
	}{
		{"live key", live, 10, 10.1, ExpectAllow},
		{"live key near exp", live, 59.5, 59.6, ExpectEither},
		{"live key past exp within leeway", live, 60.5, 60.6, ExpectEither},
		{"live key past exp and leeway", live, 62, 62.1, ExpectDeny},
		{"before withdrawal", gone, 9, 9.5, ExpectAllow},
		{"answered after withdrawal", gone, 9.9, 10.1, ExpectEither},
		{"within the bound", gone, 11, 11.1, ExpectEither},
		{"beyond the bound", gone, 12, 12.1, ExpectDeny},
	} {
		if got := k.Expect(tc.tok, at(tc.sent), at(tc.done)); got != tc.want {
			t.Errorf("Expect(%s) = %v, want %v", tc.name, got, tc.want)
		}
	}
}

func TestDriverRefusesNonLoopback(t *testing.T) {
	var mu sync.Mutex
	var errs []error
	d := &Driver{Workers: 1, MaxRequests: 3, Duration: 10 * time.Second, Next: func(int) *Request {
		req, _ := http.NewRequest(http.MethodGet, "http://192.0.2.1:80/", nil) // TEST-NET-1
		return &Request{Kind: "outside", HTTP: req, Done: func(r Result) {
			mu.Lock()
			errs = append(errs, r.Err)
			mu.Unlock()
		}}
	}}
	d.Start(context.Background())
	tl := d.Wait()
	if n := tl.Count(Filter{}, -1, NoAnswer); n != 3 {
		t.Errorf("requests to a non-loopback address: %d unanswered, want 3", n)
	}
	for _, err := range errs {
		if !errors.Is(err, ErrNotLoopback) {
			t.Errorf("request to 192.0.2.1: error %v, want ErrNotLoopback", err)
		}
	}
}

func TestDriverBounds(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/slow" {
			time.Sleep(20 * time.Millisecond)
		}
		w.WriteHeader(http.StatusOK)
	}))
	defer srv.Close()
	next := func(path string) func(int) *Request {
		return func(int) *Request {
			req, _ := http.NewRequest(http.MethodGet, srv.URL+path, nil)
			return &Request{Kind: "k", HTTP: req, Expect: func(time.Time, time.Time) Expect { return ExpectAllow }}
		}
	}
	t.Run("count", func(t *testing.T) {
		d := &Driver{Workers: 4, MaxRequests: 50, Duration: time.Minute, Next: next("/")}
		d.Start(context.Background())
		tl := d.Wait()
		if got := tl.Requests(Filter{}); got != 50 {
			t.Errorf("MaxRequests 50: %d answers, want 50", got)
		}
		if got := tl.Count(Filter{Kind: "k"}, ExpectAllow, Allowed); got != 50 {
			t.Errorf("MaxRequests 50: %d allowed, want 50", got)
		}
	})
	t.Run("time", func(t *testing.T) {
		d := &Driver{Workers: 2, MaxRequests: 1 << 30, Duration: 300 * time.Millisecond, Next: next("/slow")}
		start := time.Now()
		d.Start(context.Background())
		tl := d.Wait()
		if el := time.Since(start); el > 5*time.Second {
			t.Errorf("Duration 300ms: ran %v", el)
		}
		// Two workers, 20ms a request: far fewer than the count bound.
		if got := tl.Requests(Filter{}); got == 0 || got > 100 {
			t.Errorf("Duration 300ms: %d answers, want some and at most 100", got)
		}
	})
}

func TestJWKSProxy(t *testing.T) {
	upstream := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("If-None-Match") != "" {
			t.Errorf("proxy sent If-None-Match upstream")
		}
		w.Header().Set("Cache-Control", "public, max-age=7")
		w.Header().Set("ETag", `"v1"`)
		w.Write([]byte(`{"keys":[{"kid":"a","kty":"EC"},{"kid":"b","kty":"EC"}]}`))
	}))
	defer upstream.Close()
	p := NewJWKSProxy(upstream.URL)
	get := func() (kids []string, hdr http.Header) {
		rec := httptest.NewRecorder()
		req := httptest.NewRequest(http.MethodGet, "/.well-known/jwks.json", nil)
		req.Header.Set("If-None-Match", `"v1"`)
		p.ServeHTTP(rec, req)
		var set struct {
			Keys []struct {
				Kid string `json:"kid"`
			} `json:"keys"`
		}
		if err := json.Unmarshal(rec.Body.Bytes(), &set); err != nil {
			t.Fatalf("proxy answered %d %q: %v", rec.Code, rec.Body, err)
		}
		for _, k := range set.Keys {
			kids = append(kids, k.Kid)
		}
		return kids, rec.Result().Header
	}
	kids, hdr := get()
	if diff := cmp.Diff([]string{"a", "b"}, kids); diff != "" {
		t.Errorf("JWKS before withdrawal (-want +got):\n%s", diff)
	}
	if hdr.Get("Cache-Control") != "public, max-age=7" || hdr.Get("ETag") != "" {
		t.Errorf("proxy headers Cache-Control %q ETag %q, want the upstream's Cache-Control and no ETag", hdr.Get("Cache-Control"), hdr.Get("ETag"))
	}
	p.Withdraw("a")
	kids, _ = get()
	if diff := cmp.Diff([]string{"b"}, kids); diff != "" {
		t.Errorf("JWKS after withdrawing a (-want +got):\n%s", diff)
	}
}
