package cachetest

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"sync"
	"sync/atomic"
	"time"
)

// ErrInjected is the default error of MemSource.FailNext and SetError.
var ErrInjected = errors.New("cachetest: injected error")

// Read is one ReadAt call seen by a MemSource.
type Read struct {
	Off int64
	Len int
}

// MemSource is an in-memory BlockSource for tests, with optional injected
// latency, errors and a gate, and a record of its calls. It is safe for
// concurrent use. Its Identity is derived from its bytes unless set.
type MemSource struct {
	data  []byte
	calls atomic.Int64

	mu      sync.Mutex
	id      string
	latency time.Duration
	err     error // every call fails while set
	failN   int   // the next failN calls fail with failErr
	failErr error
	gate    <-chan struct{}
	reads   []Read
}

// NewMemSource serves data, which the caller must not change afterwards.
func NewMemSource(data []byte) *MemSource {
	sum := sha256.Sum256(data)
	return &MemSource{data: data, id: "mem:" + hex.EncodeToString(sum[:12])}
}

// SetIdentity overrides the identity.
func (m *MemSource) SetIdentity(id string) { m.mu.Lock(); m.id = id; m.mu.Unlock() }

// SetLatency delays every call by d (a cancelled ctx cuts the delay short).
func (m *MemSource) SetLatency(d time.Duration) { m.mu.Lock(); m.latency = d; m.mu.Unlock() }

// SetError makes every call fail with err until it is set to nil.
func (m *MemSource) SetError(err error) { m.mu.Lock(); m.err = err; m.mu.Unlock() }

// FailNext makes the next n calls fail with err (ErrInjected when nil).
func (m *MemSource) FailNext(n int, err error) {
	if err == nil {
		err = ErrInjected
	}
	m.mu.Lock()
	m.failN, m.failErr = n, err
	m.mu.Unlock()
}

// SetGate makes calls wait until gate is closed (or their ctx is done)
// after they are counted. nil removes the gate.
func (m *MemSource) SetGate(gate <-chan struct{}) { m.mu.Lock(); m.gate = gate; m.mu.Unlock() }

// Calls returns the number of ReadAt calls so far (rejected ones included).
func (m *MemSource) Calls() int64 { return m.calls.Load() }

// Reads returns the calls with a valid offset, in arrival order.
func (m *MemSource) Reads() []Read {
	m.mu.Lock()
	defer m.mu.Unlock()
	return append([]Read(nil), m.reads...)
}

// Size returns the length of the data.
func (m *MemSource) Size() int64 { return int64(len(m.data)) }

// Identity names the content.
func (m *MemSource) Identity() string {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.id
}

// ReadAt follows the io.ReaderAt contract and honours ctx.
func (m *MemSource) ReadAt(ctx context.Context, p []byte, off int64) (int, error) {
	m.calls.Add(1)
	m.mu.Lock()
	id := m.id
	if off < 0 {
		m.mu.Unlock()
		return 0, fmt.Errorf("cachetest: read %s@%d: negative offset", id, off)
	}
	m.reads = append(m.reads, Read{Off: off, Len: len(p)})
	latency, gate, err := m.latency, m.gate, m.err
	if err == nil && m.failN > 0 {
		m.failN--
		err = m.failErr
	}
	m.mu.Unlock()

	if e := ctx.Err(); e != nil {
		return 0, fmt.Errorf("cachetest: read %s@%d: %w", id, off, e)
	}
	if gate != nil {
		select {
		case <-gate:
		case <-ctx.Done():
			return 0, fmt.Errorf("cachetest: read %s@%d: %w", id, off, ctx.Err())
		}
	}
	if latency > 0 {
		t := time.NewTimer(latency)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			return 0, fmt.Errorf("cachetest: read %s@%d: %w", id, off, ctx.Err())
		}
	}
	if err != nil {
		return 0, fmt.Errorf("cachetest: read %s@%d: %w", id, off, err)
	}
	if off >= int64(len(m.data)) {
		if len(p) == 0 {
			return 0, nil
		}
		return 0, io.EOF
	}
	n := copy(p, m.data[off:])
	if n < len(p) {
		return n, io.EOF
	}
	return n, nil
}
