package cachetest

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/glancegw/glancegw/cache"
)

func TestMemSourceConformance(t *testing.T) {
	Run(t, func(t *testing.T, data []byte) cache.BlockSource { return NewMemSource(data) })
}

func TestMemSourceFaults(t *testing.T) {
	ctx := context.Background()
	m := NewMemSource([]byte("hello, world"))
	p := make([]byte, 5)

	m.FailNext(2, nil)
	for i := range 2 {
		if _, err := m.ReadAt(ctx, p, 0); !errors.Is(err, ErrInjected) {
			t.Fatalf("call %d: err = %v, want ErrInjected", i, err)
		}
	}
	if n, err := m.ReadAt(ctx, p, 7); err != nil || string(p[:n]) != "world" {
		t.Fatalf("after injected failures: %q, %v", p[:n], err)
	}

	boom := errors.New("boom")
	m.SetError(boom)
	if _, err := m.ReadAt(ctx, p, 0); !errors.Is(err, boom) {
		t.Fatalf("SetError: err = %v, want boom", err)
	}
	m.SetError(nil)

	m.SetLatency(time.Hour)
	cctx, cancel := context.WithTimeout(ctx, 20*time.Millisecond)
	start := time.Now()
	_, err := m.ReadAt(cctx, p, 0)
	cancel()
	if !errors.Is(err, context.DeadlineExceeded) || time.Since(start) > time.Second {
		t.Fatalf("latency with a deadline: err = %v after %v", err, time.Since(start))
	}
	m.SetLatency(0)

	gate := make(chan struct{})
	m.SetGate(gate)
	done := make(chan error, 1)
	go func() { _, err := m.ReadAt(ctx, p, 0); done <- err }()
	select {
	case <-done:
		t.Fatal("read passed a closed gate")
	case <-time.After(20 * time.Millisecond):
	}
	close(gate)
	if err := <-done; err != nil {
		t.Fatalf("read after the gate opened: %v", err)
	}

	if got, want := m.Calls(), int64(6); got != want {
		t.Errorf("Calls() = %d, want %d", got, want)
	}
	reads := m.Reads()
	if len(reads) != 6 || reads[2] != (Read{Off: 7, Len: 5}) {
		t.Errorf("Reads() = %v", reads)
	}
}

func TestMemSourceIdentity(t *testing.T) {
	a, b := NewMemSource([]byte("one")), NewMemSource([]byte("two"))
	if a.Identity() == b.Identity() {
		t.Error("different bytes share an identity")
	}
	if NewMemSource([]byte("one")).Identity() != a.Identity() {
		t.Error("the same bytes got different identities")
	}
	a.SetIdentity("img-1")
	if a.Identity() != "img-1" {
		t.Errorf("SetIdentity: got %q", a.Identity())
	}
}
