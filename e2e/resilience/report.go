package resilience

import (
	"fmt"
	"io"
	"strings"
	"sync"
	"time"
)

// Row is one scenario's line in the reliability report.
type Row struct {
	Scenario string
	// Workers and Rate describe the load: concurrent senders and the
	// answers per second achieved.
	Workers int
	Rate    float64
	// Duration is how long the load ran.
	Duration time.Duration
	// Requests is how many answers were counted.
	Requests int
	// Wrong is the wrong decisions: valid tokens denied, or tokens that
	// must not pass let through (including requests that reached an
	// upstream without a check).
	Wrong int
	// LostWrites is the acknowledged writes missing afterwards plus the
	// writes found half done; negative when the scenario writes nothing.
	LostWrites int
	// Recovery is the longest time from a fault's end to normal service;
	// negative when the scenario has no fault.
	Recovery time.Duration
	// Command reproduces the row.
	Command string
	// Failed marks a row whose scenario failed its checks.
	Failed bool
}

// Report collects rows from scenarios that may run in parallel.
type Report struct {
	mu   sync.Mutex
	rows []Row
}

// Add appends r.
func (rp *Report) Add(r Row) {
	rp.mu.Lock()
	defer rp.mu.Unlock()
	rp.rows = append(rp.rows, r)
}

// Len returns the number of rows.
func (rp *Report) Len() int {
	rp.mu.Lock()
	defer rp.mu.Unlock()
	return len(rp.rows)
}

// WriteMarkdown writes the rows as a Markdown table.
func (rp *Report) WriteMarkdown(w io.Writer) error {
	rp.mu.Lock()
	defer rp.mu.Unlock()
	var sb strings.Builder
	sb.WriteString("| scenario | load (workers, rate) | duration | requests sent | wrong decisions | lost writes | recovery time | command |\n")
	sb.WriteString("|---|---|---|---|---|---|---|---|\n")
	for _, r := range rp.rows {
		lost := "n/a"
		if r.LostWrites >= 0 {
			lost = fmt.Sprint(r.LostWrites)
		}
		rec := "n/a"
		if r.Recovery >= 0 {
			rec = r.Recovery.Round(10 * time.Millisecond).String()
		}
		name := r.Scenario
		if r.Failed {
			name += " **(FAILED)**"
		}
		fmt.Fprintf(&sb, "| %s | %d workers, %.0f req/s | %v | %d | %d | %s | %s | `%s` |\n",
			name, r.Workers, r.Rate, r.Duration.Round(time.Second), r.Requests, r.Wrong, lost, rec, r.Command)
	}
	_, err := io.WriteString(w, sb.String())
	return err
}
