package transfer

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/glancegw/glancegw/cache/cachetest"
)

// troubleSource fails every read that covers byte failAt, delivering the
// bytes before it, until it has failed failures times; then it recovers.
// Each failure takes hang.
type troubleSource struct {
	*cachetest.MemSource
	failAt int64
	hang   time.Duration

	mu       sync.Mutex
	failures int
	calls    int // reads that covered failAt
}

var errReset = errors.New("read tcp 127.0.0.1:1->127.0.0.1:2: connection reset by peer")

func (s *troubleSource) ReadAt(ctx context.Context, p []byte, off int64) (int, error) {
	s.mu.Lock()
	covers := off <= s.failAt && off+int64(len(p)) > s.failAt
	fail := covers && s.failures > 0
	if covers {
		s.calls++
	}
	if fail {
		s.failures--
	}
	s.mu.Unlock()
	if !fail {
		return s.MemSource.ReadAt(ctx, p, off)
	}
	time.Sleep(s.hang)
	n, _ := s.MemSource.ReadAt(ctx, p[:s.failAt-off], off)
	return n, errReset
}

// retryLog records what an import reports, in order.
type retryLog struct {
	mu      sync.Mutex
	events  []string // "moved" (bytes, coalesced), "retry", "ok"
	retries []Retry
	moved   int64
	most    int64 // the largest single progress report
}

func (l *retryLog) retry(r *Retry) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if r == nil {
		l.events = append(l.events, "ok")
		return
	}
	l.events = append(l.events, "retry")
	l.retries = append(l.retries, *r)
}

func (l *retryLog) progress(n int64) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.moved += n
	l.most = max(l.most, n)
	if k := len(l.events); k == 0 || l.events[k-1] != "moved" {
		l.events = append(l.events, "moved")
	}
}

func (l *retryLog) String() string { return strings.Join(l.events, " ") }

func TestRetryString(t *testing.T) {
	r := &Retry{Offset: 1288490189, Attempt: 2, Failing: 3240 * time.Millisecond, Wait: 2 * time.Second, For: 30 * time.Second,
		Err: errors.New("glance: read image x at 1288490189 (+1048576): giving up after 4 attempts: GET: connection refused")}
	want := "source read at 1.2 GiB failed (attempt 2, 3.2s in; retrying in 2s, for up to 30s): " +
		"glance: read image x at 1288490189 (+1048576): giving up after 4 attempts: GET: connection refused"
	if got := r.String(); got != want {
		t.Errorf("Retry.String() =\n%s\nwant\n%s", got, want)
	}
}

// TestImportReportsRetries: a source that fails twice in the middle of a
// chunk and then recovers. The spec's Retrying hears of both failures, with
// the offset of the last good byte, the attempt, the back-off and the
// error, before the engine waits, and nil once the read went through;
// bytes are reported as they arrive, at most a piece at a time, and the
// import succeeds.
func TestImportReportsRetries(t *testing.T) {
	data := cachetest.Data(5<<20, 13)
	const failAt = 2<<20 + 4096
	src := &troubleSource{MemSource: cachetest.NewMemSource(data), failAt: failAt, failures: 2}
	v := testVolume(t)
	var l retryLog
	e := New(Config{ChunkSize: 4 << 20, Backoff: time.Millisecond, FreeMargin: 1}, nil)
	_, err := e.Import(context.Background(), ImportSpec{Volume: v, Source: src, Expect: Checksum{"sha512", sha512hex(data)},
		Progress: l.progress, Retrying: l.retry})
	if err != nil {
		t.Fatal(err)
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if got := l.String(); got != "moved retry retry ok moved" {
		t.Errorf("events %q, want bytes, two retries, the all-clear, bytes", got)
	}
	for i, r := range l.retries {
		if r.Offset != failAt || r.Attempt != i+1 || r.Wait != time.Millisecond<<i || r.For != 30*time.Second ||
			!errors.Is(r.Err, errReset) || r.Failing < 0 || r.Failing > 5*time.Second {
			t.Errorf("retry %d: %+v", i, r)
		}
		if s := r.String(); !strings.HasPrefix(s, "source read at 2.0 MiB failed (attempt ") || !strings.HasSuffix(s, "for up to 30s): "+errReset.Error()) {
			t.Errorf("retry %d says %q", i, s)
		}
	}
	if l.moved != int64(len(data)) || l.most > readPiece {
		t.Errorf("progress: %d bytes in reports of at most %d, want %d in at most %d", l.moved, l.most, len(data), readPiece)
	}
}

// TestImportRetriesGiveUp: a source that keeps failing at once is retried,
// reported each time and never cleared, for RetryFor; then the import
// fails naming the attempts and the error.
func TestImportRetriesGiveUp(t *testing.T) {
	data := cachetest.Data(3<<20, 14)
	src := &troubleSource{MemSource: cachetest.NewMemSource(data), failAt: 1 << 20, failures: 1 << 30}
	v := testVolume(t)
	var l retryLog
	e := New(Config{ChunkSize: 1 << 20, Backoff: 10 * time.Millisecond, MaxBackoff: 20 * time.Millisecond,
		RetryFor: 200 * time.Millisecond, FreeMargin: 1}, nil)
	start := time.Now()
	_, err := e.Import(context.Background(), ImportSpec{Volume: v, Source: src, Progress: l.progress, Retrying: l.retry})
	took := time.Since(start)
	if !errors.Is(err, errReset) || !strings.Contains(err.Error(), "read source at 1048576: gave up after ") {
		t.Fatalf("err = %v, want the source's, with the attempts", err)
	}
	assertNoVolume(t, v)
	l.mu.Lock()
	defer l.mu.Unlock()
	// Waits of 10 ms, then 20 ms: at most 10 retries start within 200 ms
	// (fewer on a loaded host).
	n := len(l.retries)
	if got := l.String(); got != "moved"+strings.Repeat(" retry", n) || n < 3 || n > 10 {
		t.Errorf("events %q, want bytes, then 3 to 10 retries and no all-clear", got)
	}
	if want := fmt.Sprintf("gave up after %d attempts in ", n+1); !strings.Contains(err.Error(), want) {
		t.Errorf("err = %v, want %q", err, want)
	}
	if took < 170*time.Millisecond || took > 2*time.Second {
		t.Errorf("gave up after %v, want about RetryFor (200ms)", took)
	}
}

// TestImportHungSourceNotRetried: a read that took longer than RetryFor to
// fail (a hung Glance: the client already retried for ~42 s) fails the
// import at once, without another round.
func TestImportHungSourceNotRetried(t *testing.T) {
	data := cachetest.Data(3<<20, 16)
	src := &troubleSource{MemSource: cachetest.NewMemSource(data), failAt: 1 << 20, failures: 1 << 30, hang: 150 * time.Millisecond}
	var l retryLog
	e := New(Config{ChunkSize: 1 << 20, Backoff: 10 * time.Millisecond, RetryFor: 100 * time.Millisecond, FreeMargin: 1}, nil)
	_, err := e.Import(context.Background(), ImportSpec{Volume: testVolume(t), Source: src, Retrying: l.retry})
	if !errors.Is(err, errReset) || !strings.Contains(err.Error(), "gave up after 1 attempt in ") {
		t.Fatalf("err = %v, want one attempt", err)
	}
	src.mu.Lock()
	defer src.mu.Unlock()
	if src.calls != 1 || len(l.retries) != 0 {
		t.Errorf("%d reads of the hung offset, %d retries reported; want 1 and none", src.calls, len(l.retries))
	}
}

// TestInspectReportsRetries: inspection's reads are retried and reported
// too (the header is read before any chunk).
func TestInspectReportsRetries(t *testing.T) {
	data := cachetest.Data(2<<20, 15)
	src := &troubleSource{MemSource: cachetest.NewMemSource(data), failAt: 0, failures: 1}
	var l retryLog
	e := New(Config{ChunkSize: 1 << 20, Backoff: time.Millisecond, FreeMargin: 1}, nil)
	if _, err := e.Import(context.Background(), ImportSpec{Volume: testVolume(t), Source: src, Retrying: l.retry}); err != nil {
		t.Fatal(err)
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if got := l.String(); got != "retry ok" || l.retries[0].Offset != 0 {
		t.Errorf("events %q %+v, want one retry of the header read and its all-clear", got, l.retries)
	}
}
