package transfer

import (
	"context"
	"errors"
	"testing"
	"time"
)

func TestPacer(t *testing.T) {
	if err := newPacer(0).wait(context.Background(), 1<<30); err != nil {
		t.Fatalf("a zero rate must not wait: %v", err)
	}
	// 1 MiB/s: 768 KiB after the 0.5 s burst takes about 0.25 s.
	p := newPacer(1 << 20)
	start := time.Now()
	for range 24 {
		if err := p.wait(context.Background(), 32<<10); err != nil {
			t.Fatal(err)
		}
	}
	if el := time.Since(start); el < 200*time.Millisecond || el > 2*time.Second {
		t.Errorf("768 KiB at 1 MiB/s with a 0.5 s burst took %v, want about 0.25 s", el)
	}
	// A cancelled wait returns the cause at once.
	ctx, cancel := context.WithCancelCause(context.Background())
	why := errors.New("stop")
	cancel(why)
	if err := p.wait(ctx, 10<<20); !errors.Is(err, why) {
		t.Errorf("wait on a cancelled context = %v, want its cause", err)
	}
}
