package issuer

import (
	"context"
	"errors"
	"sync/atomic"
	"time"
)

// errBusy means the password hasher is saturated: the caller should
// answer 503 with Retry-After rather than queue without bound.
var errBusy = errors.New("too many password hashes in progress")

// limiter is a semaphore with a bounded wait queue. Each argon2id hash
// holds Argon2Params.Memory KiB while it runs, so slots bound memory;
// the queue bound and wait bound make a login flood fail fast instead of
// piling up goroutines that each will allocate that memory.
type limiter struct {
	slots      chan struct{}
	waiting    atomic.Int64
	maxWaiting int64
	maxWait    time.Duration
}

func newLimiter(slots, maxWaiting int, maxWait time.Duration) *limiter {
	return &limiter{slots: make(chan struct{}, slots), maxWaiting: int64(maxWaiting), maxWait: maxWait}
}

// acquire takes a slot, waiting at most maxWait behind at most
// maxWaiting others; otherwise it returns errBusy at once. The caller
// must call release exactly once.
func (l *limiter) acquire(ctx context.Context) (release func(), err error) {
	release = func() { <-l.slots }
	select {
	case l.slots <- struct{}{}:
		return release, nil
	default:
	}
	if l.waiting.Add(1) > l.maxWaiting {
		l.waiting.Add(-1)
		return nil, errBusy
	}
	defer l.waiting.Add(-1)
	t := time.NewTimer(l.maxWait)
	defer t.Stop()
	select {
	case l.slots <- struct{}{}:
		return release, nil
	case <-t.C:
		return nil, errBusy
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}
