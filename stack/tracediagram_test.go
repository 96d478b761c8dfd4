package stack

import (
	"fmt"
	"html"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/tollgate-dev/tollgate/internal/otlptest"
)

// traceSVGEnv names a file to which TestOneTraceThroughTheGateway writes
// the trace it received as an SVG waterfall (docs/observability.md
// shows one): TOLLGATE_TRACE_SVG=docs/trace.svg.
const traceSVGEnv = "TOLLGATE_TRACE_SVG"

// writeTraceDiagram renders the spans of traceID as a waterfall, one row
// per span in start order, indented under its parent, with its service,
// name, duration and the tollgate.* attributes.
func writeTraceDiagram(t *testing.T, spans []otlptest.Span, traceID string) {
	path := os.Getenv(traceSVGEnv)
	if path == "" {
		return
	}
	var ss []otlptest.Span
	for _, s := range spans {
		if s.TraceID == traceID {
			ss = append(ss, s)
		}
	}
	if err := os.WriteFile(path, []byte(traceSVG(ss)), 0o644); err != nil {
		t.Fatalf("write %s: %v", path, err)
	}
	t.Logf("wrote the trace to %s", path)
}

func traceSVG(ss []otlptest.Span) string {
	slices.SortFunc(ss, func(a, b otlptest.Span) int { return a.Start.Compare(b.Start) })
	byID := map[string]otlptest.Span{}
	for _, s := range ss {
		byID[s.SpanID] = s
	}
	depth := func(s otlptest.Span) int {
		d := 0
		for p, ok := byID[s.ParentSpanID]; ok; p, ok = byID[p.ParentSpanID] {
			d++
		}
		return d
	}
	start, end := ss[0].Start, ss[0].End
	for _, s := range ss {
		if s.End.After(end) {
			end = s.End
		}
	}
	total := end.Sub(start)
	const (
		rowH    = 46
		labelW  = 430
		barW    = 520
		top     = 58
		width   = labelW + barW + 40
		fontCSS = "font-family:DejaVu Sans,Arial,sans-serif"
	)
	colors := map[string]string{
		"tollgate-gateway": "#4e79a7", "tollgate-authz": "#e15759", "tollgate-books": "#59a14f", "tollgate-issuer": "#f28e2b",
	}
	var b strings.Builder
	h := top + rowH*len(ss) + 30
	fmt.Fprintf(&b, `<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" viewBox="0 0 %d %d" style="%s">`+"\n", width, h, width, h, fontCSS)
	fmt.Fprintf(&b, `<rect width="100%%" height="100%%" fill="#ffffff"/>`+"\n")
	fmt.Fprintf(&b, `<text x="12" y="24" font-size="15" font-weight="bold">trace %s · GET /books · %s</text>`+"\n", ss[0].TraceID, fmtDur(total))
	fmt.Fprintf(&b, `<text x="12" y="44" font-size="11" fill="#555">spans as an in-process OTLP receiver got them from the dev gateway, authz and books</text>`+"\n")
	for i, s := range ss {
		y := top + i*rowH
		d := depth(s)
		c := colors[s.Service]
		if c == "" {
			c = "#999999"
		}
		x0 := labelW + int(float64(barW)*float64(s.Start.Sub(start))/float64(total))
		w := max(2, int(float64(barW)*float64(s.End.Sub(s.Start))/float64(total)))
		fmt.Fprintf(&b, `<text x="%d" y="%d" font-size="12" font-weight="bold" fill="%s">%s</text>`+"\n", 12+d*16, y+14, c, html.EscapeString(s.Service))
		fmt.Fprintf(&b, `<text x="%d" y="%d" font-size="12">%s</text>`+"\n", 12+d*16+130, y+14, html.EscapeString(trunc(s.Name, 44)))
		var notes []string
		for _, k := range []string{"tollgate.decision", "tollgate.reason", "tollgate.route", "enduser.id", "http.status_code", "http.response.status_code", "upstream_cluster"} {
			if v := s.Attributes[k]; v != "" {
				notes = append(notes, k+"="+v)
			}
		}
		fmt.Fprintf(&b, `<text x="%d" y="%d" font-size="10" fill="#555">%s</text>`+"\n", 12+d*16, y+30, html.EscapeString(trunc(strings.Join(notes, "  "), 84)))
		fmt.Fprintf(&b, `<rect x="%d" y="%d" width="%d" height="18" rx="3" fill="%s"/>`+"\n", x0, y+2, w, c)
		fmt.Fprintf(&b, `<text x="%d" y="%d" font-size="11">%s</text>`+"\n", min(x0+w+4, width-60), y+16, fmtDur(s.End.Sub(s.Start)))
	}
	b.WriteString("</svg>\n")
	return b.String()
}

func fmtDur(d time.Duration) string {
	return fmt.Sprintf("%.2fms", float64(d)/float64(time.Millisecond))
}

func trunc(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n-1] + "…"
}
