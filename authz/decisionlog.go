package authz

import (
	"context"
	"log/slog"
	"sync"

	"github.com/prometheus/client_golang/prometheus"
)

// Decision log defaults, the values DefaultConfig starts from.
const (
	DefaultLogBuffer      = 8192
	DefaultLogAllowSample = 1
)

// logQueue writes decision log records on a goroutine of its own, so a
// check pays for building the record but never for formatting or
// writing it, and never waits: when the buffer is full the record is
// dropped and counted.
type logQueue struct {
	ch      chan queuedRecord
	dropped prometheus.Counter
	done    chan struct{}

	mu     sync.RWMutex // read-held while sending, write-held to close
	closed bool
	once   sync.Once
}

type queuedRecord struct {
	h slog.Handler
	r slog.Record
}

func newLogQueue(size int, dropped prometheus.Counter) *logQueue {
	q := &logQueue{ch: make(chan queuedRecord, size), dropped: dropped, done: make(chan struct{})}
	go func() {
		defer close(q.done)
		for qr := range q.ch {
			qr.h.Handle(context.Background(), qr.r)
		}
	}()
	return q
}

// close writes what is buffered and stops the writer; later records are
// written synchronously by nobody: they are dropped and counted.
func (q *logQueue) close() {
	q.once.Do(func() {
		q.mu.Lock()
		q.closed = true
		close(q.ch)
		q.mu.Unlock()
		<-q.done
	})
}

// asyncHandler hands records to a logQueue for its next handler.
type asyncHandler struct {
	next slog.Handler
	q    *logQueue
}

func (h asyncHandler) Enabled(ctx context.Context, l slog.Level) bool { return h.next.Enabled(ctx, l) }

func (h asyncHandler) Handle(_ context.Context, r slog.Record) error {
	h.q.mu.RLock()
	defer h.q.mu.RUnlock()
	if h.q.closed {
		h.q.dropped.Inc()
		return nil
	}
	select {
	case h.q.ch <- queuedRecord{h.next, r.Clone()}:
	default:
		h.q.dropped.Inc()
	}
	return nil
}

func (h asyncHandler) WithAttrs(as []slog.Attr) slog.Handler {
	return asyncHandler{next: h.next.WithAttrs(as), q: h.q}
}

func (h asyncHandler) WithGroup(name string) slog.Handler {
	return asyncHandler{next: h.next.WithGroup(name), q: h.q}
}

// logAllow reports whether this allow is one the sample logs: one in
// LogAllowSample (every one at 1, none at 0). Denials are always logged.
func (s *Server) logAllow() bool {
	switch n := s.cfg.LogAllowSample; n {
	case 1:
		return true
	case 0:
		return false
	default:
		return s.allowSeq.Add(1)%uint64(n) == 0
	}
}
