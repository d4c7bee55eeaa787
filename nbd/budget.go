package nbd

import (
	"context"
	"sync"
)

// byteBudget is a FIFO weighted semaphore over read-buffer bytes, shared by
// all connections, so many clients each asking for 32 MiB reads cannot grow
// the daemon without bound.
type byteBudget struct {
	mu      sync.Mutex
	avail   int64
	waiters []*budgetWaiter
}

type budgetWaiter struct {
	n     int64
	ready chan struct{}
}

func newByteBudget(n int64) *byteBudget { return &byteBudget{avail: n} }

// acquire takes n bytes, waiting in line until they are free or ctx ends.
func (b *byteBudget) acquire(ctx context.Context, n int64) error {
	b.mu.Lock()
	if len(b.waiters) == 0 && b.avail >= n {
		b.avail -= n
		b.mu.Unlock()
		return nil
	}
	w := &budgetWaiter{n: n, ready: make(chan struct{})}
	b.waiters = append(b.waiters, w)
	b.mu.Unlock()
	select {
	case <-w.ready:
		return nil
	case <-ctx.Done():
		b.mu.Lock()
		select {
		case <-w.ready:
			// Granted while we gave up: hand it back.
			b.avail += n
		default:
			for i, x := range b.waiters {
				if x == w {
					b.waiters = append(b.waiters[:i], b.waiters[i+1:]...)
					break
				}
			}
		}
		b.grantLocked()
		b.mu.Unlock()
		return context.Cause(ctx)
	}
}

func (b *byteBudget) release(n int64) {
	b.mu.Lock()
	b.avail += n
	b.grantLocked()
	b.mu.Unlock()
}

// grantLocked wakes waiters in order while the head fits.
func (b *byteBudget) grantLocked() {
	for len(b.waiters) > 0 && b.avail >= b.waiters[0].n {
		w := b.waiters[0]
		b.waiters = b.waiters[1:]
		b.avail -= w.n
		close(w.ready)
	}
}
