package transfer

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/glancegw/glancegw/cache/cachetest"
)

// troubleSource fails every read that covers byte failAt, delivering the
// bytes before it, until it has failed failures times; then it recovers.
type troubleSource struct {
	*cachetest.MemSource
	failAt int64

	mu       sync.Mutex
	failures int
}

var errReset = errors.New("read tcp 127.0.0.1:1->127.0.0.1:2: connection reset by peer")

func (s *troubleSource) ReadAt(ctx context.Context, p []byte, off int64) (int, error) {
	s.mu.Lock()
	fail := s.failures > 0 && off <= s.failAt && off+int64(len(p)) > s.failAt
	if fail {
		s.failures--
	}
	s.mu.Unlock()
	if !fail {
		return s.MemSource.ReadAt(ctx, p, off)
	}
	n, _ := s.MemSource.ReadAt(ctx, p[:s.failAt-off], off)
	return n, errReset
}

// retryLog records what an import reports, in order.
type retryLog struct {
	mu     sync.Mutex
	events []string // "retry <offset> <attempt>", "ok", "moved"
	msgs   []string
	moved  int64
	most   int64 // the largest single progress report
}

func (l *retryLog) retry(r *Retry) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if r == nil {
		l.events = append(l.events, "ok")
		return
	}
	l.events = append(l.events, "retry")
	l.msgs = append(l.msgs, r.String())
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

// TestImportReportsRetries: a source that fails twice in the middle of a
// chunk and then recovers. The spec's Retrying hears of both failures, with
// the offset of the last good byte, the attempt and the error, before the
// engine waits, and nil once the read went through; bytes are reported as
// they arrive, at most a piece at a time, and the import succeeds.
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
	if got := strings.Join(l.events, " "); got != "moved retry retry ok moved" {
		t.Errorf("events %q, want bytes, two retries, the all-clear, bytes", got)
	}
	want := []string{
		"source read at 2.0 MiB failed (attempt 1; next in 1ms): " + errReset.Error(),
		"source read at 2.0 MiB failed (attempt 2; next in 2ms): " + errReset.Error(),
	}
	if strings.Join(l.msgs, "\n") != strings.Join(want, "\n") {
		t.Errorf("retries reported as\n%s\nwant\n%s", strings.Join(l.msgs, "\n"), strings.Join(want, "\n"))
	}
	if l.moved != int64(len(data)) || l.most > readPiece {
		t.Errorf("progress: %d bytes in reports of at most %d, want %d in at most %d", l.moved, l.most, len(data), readPiece)
	}
}

// TestImportRetriesGiveUp: a source that keeps failing is reported at each
// retry and never cleared; the import fails naming the error.
func TestImportRetriesGiveUp(t *testing.T) {
	data := cachetest.Data(3<<20, 14)
	src := &troubleSource{MemSource: cachetest.NewMemSource(data), failAt: 1 << 20, failures: 1 << 30}
	v := testVolume(t)
	var l retryLog
	e := New(Config{ChunkSize: 1 << 20, Backoff: time.Millisecond, FreeMargin: 1}, nil)
	_, err := e.Import(context.Background(), ImportSpec{Volume: v, Source: src, Progress: l.progress, Retrying: l.retry})
	if !errors.Is(err, errReset) {
		t.Fatalf("err = %v, want the source's", err)
	}
	assertNoVolume(t, v)
	l.mu.Lock()
	defer l.mu.Unlock()
	if got := strings.Join(l.events, " "); got != "moved retry retry retry" {
		t.Errorf("events %q, want bytes, then the 3 retries and no all-clear", got)
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
	if got := strings.Join(l.events, " "); got != "retry ok" || !strings.HasPrefix(l.msgs[0], "source read at 0 B failed (attempt 1;") {
		t.Errorf("events %q %q, want one retry of the header read and its all-clear", got, l.msgs)
	}
}
