package resilience

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"slices"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// Outcome is what an answer meant for the request's check.
type Outcome int

// Outcomes.
const (
	// Allowed is a 2xx: the request passed the gateway and was served.
	Allowed Outcome = iota
	// Denied is a 401 or 403.
	Denied
	// Shed is a 429 or 503: refused for load or for a missing dependency.
	Shed
	// Failed is any other 5xx.
	Failed
	// Rejected is any other 4xx.
	Rejected
	// NoAnswer is a transport error or a timeout.
	NoAnswer
)

var outcomeNames = []string{"allowed", "denied", "shed", "failed", "rejected", "no-answer"}

func (o Outcome) String() string { return outcomeNames[o] }

// Classify maps a status code to its Outcome; status 0 is NoAnswer.
func Classify(status int) Outcome {
	switch {
	case status == 0:
		return NoAnswer
	case status >= 200 && status < 300:
		return Allowed
	case status == http.StatusUnauthorized || status == http.StatusForbidden:
		return Denied
	case status == http.StatusTooManyRequests || status == http.StatusServiceUnavailable:
		return Shed
	case status >= 500:
		return Failed
	case status >= 400:
		return Rejected
	}
	return Failed // 1xx, 3xx: nothing in the API answers so
}

// Expect is the decision a request should get.
type Expect int

// Expectations.
const (
	// ExpectAllow: a valid token on a route it may use.
	ExpectAllow Expect = iota
	// ExpectDeny: a token that must not pass.
	ExpectDeny
	// ExpectEither: a change (a key withdrawal, an expiry) is within the
	// bound it is allowed to take, so both decisions are right.
	ExpectEither
	// ExpectNone: no authorization decision is judged (a login, a
	// registration); only the outcomes are counted.
	ExpectNone
)

var expectNames = []string{"allow", "deny", "either", "none"}

func (e Expect) String() string { return expectNames[e] }

// Wrong reports whether outcome o is a wrong decision for e: a valid
// token denied, or a token that must not pass let through.
func (e Expect) Wrong(o Outcome) bool {
	return (e == ExpectAllow && o == Denied) || (e == ExpectDeny && o == Allowed)
}

// Request is one request the driver sends.
type Request struct {
	// Kind labels the request in the tally ("valid-token", "login").
	Kind string
	// HTTP is the request. Its URL must be on loopback.
	HTTP *http.Request
	// Expect returns the decision the request should get, given when it
	// was sent and when the answer came (nil means ExpectNone).
	Expect func(sent, done time.Time) Expect
	// Done, if set, is called with the result, for example to record
	// which writes were acknowledged.
	Done func(Result)
}

// Result is the answer to one Request.
type Result struct {
	Kind, Phase string
	Status      int
	Err         error
	Body        []byte // the first 64 KiB
	Sent, Done  time.Time
	Expect      Expect
	Outcome     Outcome
}

// Driver sends requests from a pool of workers until MaxRequests have
// been sent, Duration has passed, or its context ends, whichever comes
// first. It counts every answer by kind, phase, expected decision and
// outcome, and keeps every latency.
type Driver struct {
	// Workers is the number of concurrent senders (default 4).
	Workers int
	// MaxRequests bounds the requests sent (default 100000).
	MaxRequests int
	// Duration bounds the run (default 1m).
	Duration time.Duration
	// Rate, when positive, caps the requests started per second, across
	// workers.
	Rate float64
	// Timeout bounds one request (default 20s: longer than Envoy's
	// default 15s route timeout, so the gateway's own answer to a hung
	// upstream is seen rather than the client giving up).
	Timeout time.Duration
	// Next returns worker w's next request, or nil to pause that worker
	// briefly.
	Next func(w int) *Request

	client   *http.Client
	phase    atomic.Pointer[string]
	sent     atomic.Int64
	stopping atomic.Bool
	started  []atomic.Int64 // per worker: start of the request in flight (unix ns), 0 when idle
	tally    *Tally
	cancel   context.CancelFunc
	done     chan struct{}
	begin    time.Time
	end      time.Time
}

// ErrNotLoopback is the error of a request the driver refused to send
// because its address is not loopback.
var ErrNotLoopback = errors.New("not a loopback address")

// loopbackDialer refuses every address that is not loopback, so no
// load can leave the machine whatever URL a test builds.
func loopbackDialer() func(ctx context.Context, network, addr string) (net.Conn, error) {
	d := &net.Dialer{Timeout: 5 * time.Second, KeepAlive: 30 * time.Second}
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		host, _, err := net.SplitHostPort(addr)
		if err != nil {
			return nil, err
		}
		ip := net.ParseIP(host)
		if ip == nil || !ip.IsLoopback() {
			return nil, fmt.Errorf("refusing to send load to %s: %w", addr, ErrNotLoopback)
		}
		return d.DialContext(ctx, network, addr)
	}
}

// NewClient returns an HTTP client that only reaches loopback addresses
// and keeps up to conns connections per host.
func NewClient(conns int) *http.Client {
	return &http.Client{
		Transport: &http.Transport{
			DialContext:         loopbackDialer(),
			MaxIdleConnsPerHost: conns,
			MaxIdleConns:        conns,
			IdleConnTimeout:     30 * time.Second,
		},
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
}

// SetPhase labels the requests sent from now on.
func (d *Driver) SetPhase(p string) { d.phase.Store(&p) }

func (d *Driver) currentPhase() string {
	if p := d.phase.Load(); p != nil {
		return *p
	}
	return ""
}

// Start starts the workers in the background. Requests run under ctx;
// once Duration has passed or Stop is called, no new request starts and
// the ones in flight finish, so every request sent is counted.
func (d *Driver) Start(ctx context.Context) {
	if d.Workers <= 0 {
		d.Workers = 4
	}
	if d.MaxRequests <= 0 {
		d.MaxRequests = 100000
	}
	if d.Duration <= 0 {
		d.Duration = time.Minute
	}
	if d.Timeout <= 0 {
		d.Timeout = 20 * time.Second
	}
	if d.phase.Load() == nil {
		d.SetPhase("")
	}
	d.client = NewClient(d.Workers)
	d.started = make([]atomic.Int64, d.Workers)
	d.tally = newTally()
	d.done = make(chan struct{})
	runCtx, cancel := context.WithTimeout(ctx, d.Duration)
	d.cancel = cancel
	d.begin = time.Now()

	var tokens <-chan time.Time
	if d.Rate > 0 {
		tk := time.NewTicker(time.Duration(float64(time.Second) / d.Rate))
		tokens = tk.C
		go func() { <-d.done; tk.Stop() }()
	}
	var wg sync.WaitGroup
	for w := range d.Workers {
		wg.Go(func() { d.work(runCtx, ctx, w, tokens) })
	}
	go func() {
		wg.Wait()
		d.end = time.Now()
		d.client.CloseIdleConnections()
		close(d.done)
	}()
}

// work sends requests until run ends; each runs under ctx.
func (d *Driver) work(run, ctx context.Context, w int, tokens <-chan time.Time) {
	for run.Err() == nil && !d.stopping.Load() {
		if tokens != nil {
			select {
			case <-run.Done():
				return
			case <-tokens:
			}
		}
		req := d.Next(w)
		if req == nil {
			select {
			case <-run.Done():
				return
			case <-time.After(10 * time.Millisecond):
			}
			continue
		}
		if d.sent.Add(1) > int64(d.MaxRequests) {
			return
		}
		d.do(ctx, w, req)
	}
}

func (d *Driver) do(ctx context.Context, w int, req *Request) {
	res := Result{Kind: req.Kind, Phase: d.currentPhase(), Sent: time.Now()}
	d.started[w].Store(res.Sent.UnixNano())
	defer d.started[w].Store(0)
	rctx, cancel := context.WithTimeout(ctx, d.Timeout)
	defer cancel()
	resp, err := d.client.Do(req.HTTP.WithContext(rctx))
	if err == nil {
		res.Body, err = io.ReadAll(io.LimitReader(resp.Body, 64<<10))
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		res.Status = resp.StatusCode
	}
	res.Done = time.Now()
	res.Err = err
	res.Outcome = Classify(res.Status)
	res.Expect = ExpectNone
	if req.Expect != nil {
		res.Expect = req.Expect(res.Sent, res.Done)
	}
	d.tally.add(res)
	if req.Done != nil {
		req.Done(res)
	}
}

// WaitStartedBefore waits until no request started before t is still in
// flight, or ctx ends.
func (d *Driver) WaitStartedBefore(ctx context.Context, t time.Time) error {
	for {
		busy := false
		for i := range d.started {
			if s := d.started[i].Load(); s != 0 && s < t.UnixNano() {
				busy = true
				break
			}
		}
		if !busy {
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(5 * time.Millisecond):
		}
	}
}

// Stop ends the run early: no request starts any more, and the ones in
// flight finish. It returns the tally.
func (d *Driver) Stop() *Tally {
	d.stopping.Store(true)
	return d.Wait()
}

// Wait waits for the run to end and returns its tally.
func (d *Driver) Wait() *Tally {
	<-d.done
	d.cancel()
	d.tally.Elapsed = d.end.Sub(d.begin)
	d.tally.Workers = d.Workers
	return d.tally
}

// Tally is the count of a run.
type Tally struct {
	// Elapsed is how long the run took.
	Elapsed time.Duration
	// Workers is how many workers sent requests.
	Workers int

	mu        sync.Mutex
	counts    map[tallyKey]int
	latencies map[string][]time.Duration // by kind
	examples  map[tallyKey]Result        // first wrong, failed or shed result of each key
}

type tallyKey struct {
	Kind, Phase string
	Expect      Expect
	Outcome     Outcome
}

func newTally() *Tally {
	return &Tally{counts: map[tallyKey]int{}, latencies: map[string][]time.Duration{}, examples: map[tallyKey]Result{}}
}

func (t *Tally) add(r Result) {
	k := tallyKey{r.Kind, r.Phase, r.Expect, r.Outcome}
	t.mu.Lock()
	defer t.mu.Unlock()
	t.counts[k]++
	t.latencies[r.Kind] = append(t.latencies[r.Kind], r.Done.Sub(r.Sent))
	if _, ok := t.examples[k]; !ok && (r.Expect.Wrong(r.Outcome) || r.Outcome == Failed || r.Outcome == NoAnswer || r.Outcome == Shed) {
		t.examples[k] = r
	}
}

// Filter selects tally entries; an empty field matches all.
type Filter struct {
	Kind, Phase string
}

func (f Filter) match(k tallyKey) bool {
	return (f.Kind == "" || f.Kind == k.Kind) && (f.Phase == "" || f.Phase == k.Phase)
}

// Count returns the answers that match f, with expectation e and
// outcome o (a negative value matches any).
func (t *Tally) Count(f Filter, e Expect, o Outcome) int {
	t.mu.Lock()
	defer t.mu.Unlock()
	n := 0
	for k, c := range t.counts {
		if f.match(k) && (e < 0 || k.Expect == e) && (o < 0 || k.Outcome == o) {
			n += c
		}
	}
	return n
}

// Requests returns the answers counted that match f.
func (t *Tally) Requests(f Filter) int { return t.Count(f, -1, -1) }

// Wrong returns the wrong decisions among the answers that match f.
func (t *Tally) Wrong(f Filter) int {
	t.mu.Lock()
	defer t.mu.Unlock()
	n := 0
	for k, c := range t.counts {
		if f.match(k) && k.Expect.Wrong(k.Outcome) {
			n += c
		}
	}
	return n
}

// Percentile returns the p-th percentile (0 < p <= 100) of the latency
// of requests of kind (all kinds when empty).
func (t *Tally) Percentile(kind string, p float64) time.Duration {
	t.mu.Lock()
	var all []time.Duration
	for k, l := range t.latencies {
		if kind == "" || k == kind {
			all = append(all, l...)
		}
	}
	t.mu.Unlock()
	if len(all) == 0 {
		return 0
	}
	slices.Sort(all)
	i := int(float64(len(all))*p/100+0.5) - 1
	return all[min(max(i, 0), len(all)-1)]
}

// Rate returns the answers per second over the run.
func (t *Tally) Rate() float64 {
	if t.Elapsed <= 0 {
		return 0
	}
	return float64(t.Requests(Filter{})) / t.Elapsed.Seconds()
}

// String prints the tally, one line per (kind, phase, expectation,
// outcome), then the latency percentiles by kind and an example of each
// wrong or failed answer.
func (t *Tally) String() string {
	t.mu.Lock()
	keys := make([]tallyKey, 0, len(t.counts))
	for k := range t.counts {
		keys = append(keys, k)
	}
	kinds := make([]string, 0, len(t.latencies))
	for k := range t.latencies {
		kinds = append(kinds, k)
	}
	t.mu.Unlock()
	sort.Slice(keys, func(i, j int) bool {
		a, b := keys[i], keys[j]
		if a.Kind != b.Kind {
			return a.Kind < b.Kind
		}
		if a.Phase != b.Phase {
			return a.Phase < b.Phase
		}
		if a.Expect != b.Expect {
			return a.Expect < b.Expect
		}
		return a.Outcome < b.Outcome
	})
	sort.Strings(kinds)
	var sb strings.Builder
	fmt.Fprintf(&sb, "%d answers in %v from %d workers (%.0f/s)\n", t.Requests(Filter{}), t.Elapsed.Round(time.Millisecond), t.Workers, t.Rate())
	for _, k := range keys {
		mark := ""
		if k.Expect.Wrong(k.Outcome) {
			mark = "  WRONG"
		}
		t.mu.Lock()
		c := t.counts[k]
		t.mu.Unlock()
		fmt.Fprintf(&sb, "  %-14s %-12s expect %-6s got %-9s %7d%s\n", k.Kind, k.Phase, k.Expect, k.Outcome, c, mark)
	}
	for _, k := range kinds {
		fmt.Fprintf(&sb, "  latency %-14s p50 %v p99 %v max %v\n", k,
			t.Percentile(k, 50).Round(time.Microsecond), t.Percentile(k, 99).Round(time.Microsecond), t.Percentile(k, 100).Round(time.Microsecond))
	}
	t.mu.Lock()
	for _, k := range keys {
		if r, ok := t.examples[k]; ok {
			fmt.Fprintf(&sb, "  example %s/%s expect %s: status %d err %v body %.200q (sent %s, took %v)\n",
				k.Kind, k.Phase, k.Expect, r.Status, r.Err, r.Body, r.Sent.Format("15:04:05.000"), r.Done.Sub(r.Sent).Round(time.Millisecond))
		}
	}
	t.mu.Unlock()
	return sb.String()
}
