package transfer

import (
	"context"
	"sync"
	"time"
)

// pacer holds a transfer to a rate in bytes per second, so that a copy
// does not take all of a host's network or disk. A nil pacer does not
// wait.
type pacer struct {
	rate float64 // bytes per second

	mu   sync.Mutex
	next time.Time // when the bytes reserved so far are due
}

// pacerBurst is how far ahead of its rate a transfer may run after a pause.
const pacerBurst = 500 * time.Millisecond

func newPacer(bytesPerSecond int64) *pacer {
	if bytesPerSecond <= 0 {
		return nil
	}
	return &pacer{rate: float64(bytesPerSecond)}
}

// wait blocks until n more bytes fit in the rate, or ctx ends.
func (p *pacer) wait(ctx context.Context, n int) error {
	if p == nil || n <= 0 {
		return nil
	}
	p.mu.Lock()
	now := time.Now()
	if p.next.Before(now.Add(-pacerBurst)) {
		p.next = now.Add(-pacerBurst)
	}
	p.next = p.next.Add(time.Duration(float64(n) / p.rate * float64(time.Second)))
	due := p.next
	p.mu.Unlock()
	d := time.Until(due)
	if d <= 0 {
		return nil
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return context.Cause(ctx)
	}
}
