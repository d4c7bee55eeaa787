package hostd

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/glancegw/glancegw/hostd/transfer"
)

// TestJobShowsSourceTrouble drives a job's progress and retries by hand
// against a fake clock: the rate is that of the last 10 s and falls to 0
// when nothing moves, stalled_seconds appears after 10 s without a byte and
// goes when bytes move, a retry shows as retrying until the engine reports
// the read went through, and a finished job (and jobs.json) keeps none of
// it.
func TestJobShowsSourceTrouble(t *testing.T) {
	clk := &fakeClock{t: time.Date(2025, 1, 1, 12, 0, 0, 0, time.UTC)}
	path := filepath.Join(t.TempDir(), "jobs.json")
	m := newJobManager(path, 2, slog.New(slog.DiscardHandler), clk.now)
	m.begin(context.Background())
	runs := make(chan *jobRun)
	release := make(chan struct{})
	j, err := m.start(Job{Kind: JobImport, Volume: "/v"}, "/v", func(ctx context.Context, r *jobRun, j *Job) error {
		r.total.Store(100 << 20)
		runs <- r
		<-release
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	r := <-runs
	get := func() Job {
		t.Helper()
		j, err := m.get(j.ID)
		if err != nil {
			t.Fatal(err)
		}
		return j
	}
	const mib = 1 << 20
	// 2 MiB/s for 20 s.
	for range 20 {
		clk.add(time.Second)
		r.progress(2 * mib)
	}
	if j := get(); j.State != JobRunning || j.Rate != 2*mib || j.StalledSeconds != 0 || j.Retrying != "" {
		t.Errorf("moving at 2 MiB/s: %+v", j)
	}
	// Then 4 MiB/s for 5 s: the last 10 s averaged 3 MiB/s (the average
	// since the start would be 2.4).
	for range 5 {
		clk.add(time.Second)
		r.progress(4 * mib)
	}
	if j := get(); j.Rate != 3*mib {
		t.Errorf("rate %.0f after 5 s at 4 MiB/s, want %d: the last 10 s", j.Rate, 3*mib)
	}
	// The source fails: the engine reports a retry; nothing moves.
	r.retry(&transfer.Retry{Offset: 60 * mib, Attempt: 1, Failing: 2 * time.Second, Wait: time.Second, For: 30 * time.Second,
		Err: errors.New("glance: read image x at 62914560 (+1048576): giving up after 4 attempts: GET: connection refused")})
	clk.add(9 * time.Second)
	j9 := get()
	if !strings.HasPrefix(j9.Retrying, "source read at 60.0 MiB failed (attempt 1, 2s in; retrying in 1s") ||
		!strings.HasSuffix(j9.Retrying, "connection refused") || j9.StalledSeconds != 0 || j9.Rate <= 0 {
		t.Errorf("9 s into a retry: %+v, want the retry, not yet stalled, a rate of the last bytes", j9)
	}
	clk.add(2 * time.Second)
	j11 := get()
	if j11.StalledSeconds != 11 || j11.Rate != 0 || j11.Retrying == "" {
		t.Errorf("11 s without a byte: %+v, want stalled 11 s at rate 0, still retrying", j11)
	}
	// The read went through and bytes move again.
	r.retry(nil)
	clk.add(time.Second)
	r.progress(mib)
	if j := get(); j.Retrying != "" || j.StalledSeconds != 0 || j.Rate <= 0 {
		t.Errorf("moving again: %+v, want no retry, not stalled, a rate", j)
	}
	// All bytes are in (the job may still fsync, or wait for Glance's
	// answer to an upload): no bytes remain, so it is not stalled.
	r.progress(100*mib - r.done.Load())
	clk.add(30 * time.Second)
	if j := get(); j.StalledSeconds != 0 {
		t.Errorf("all bytes moved, finishing: %+v, want not stalled", j)
	}
	// A job saved while in trouble, then finished, keeps none of it.
	r.retry(&transfer.Retry{Offset: 1, Attempt: 1, Err: errors.New("x")})
	m.save()
	close(release)
	<-r.finished
	m.save() // as finish does, after closing finished
	if j := get(); j.State != JobSucceeded || j.Retrying != "" || j.StalledSeconds != 0 || j.Rate <= 0 {
		t.Errorf("finished job %+v", j)
	}
	b, _ := os.ReadFile(path)
	if bytes.Contains(b, []byte(`"retrying"`)) || bytes.Contains(b, []byte(`"stalled_seconds"`)) {
		t.Errorf("jobs.json keeps live trouble of a finished job:\n%s", b)
	}
}

// TestJobLoadDropsTrouble: a job recorded while running, retrying and
// stalled comes back interrupted without them.
func TestJobLoadDropsTrouble(t *testing.T) {
	path := filepath.Join(t.TempDir(), "jobs.json")
	b, _ := json.Marshal(jobsFile{Version: jobsVersion, Jobs: []Job{{ID: "j", Kind: JobImport, State: JobRunning,
		Volume: "/v", Retrying: "source read at 1 B failed", StalledSeconds: 30}}})
	os.WriteFile(path, b, 0o600)
	m := newJobManager(path, 2, slog.New(slog.DiscardHandler), time.Now)
	if _, err := m.load(); err != nil {
		t.Fatal(err)
	}
	if j, _ := m.get("j"); j.State != JobInterrupted || j.Retrying != "" || j.StalledSeconds != 0 {
		t.Errorf("loaded %+v", j)
	}
}

// troubleRead makes the fake Glance's sources fail reads that reach past
// byte failAt and start before spare (inspection reads the last block)
// while failing is set; once it is not, every read takes slow.
type troubleRead struct {
	failAt, spare int64
	slow          time.Duration

	mu      sync.Mutex
	failing bool
}

func (tr *troubleRead) setFailing(v bool) { tr.mu.Lock(); tr.failing = v; tr.mu.Unlock() }

func (tr *troubleRead) check(ctx context.Context, off int64, n int) error {
	tr.mu.Lock()
	failing := tr.failing
	tr.mu.Unlock()
	if failing {
		if tr.failAt < off+int64(n) && off < tr.spare {
			return fmt.Errorf("glance: read image img-1 at %d: GET: dial tcp 10.0.0.1:9292: connection refused", off)
		}
		return nil
	}
	select {
	case <-time.After(tr.slow):
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// TestImportShowsRetryWhileItHappens: an import through a domain whose
// Glance refuses reads at 2 MiB for a while. The job shows the engine's
// retry (where, what failed) while it happens, clears it once the read
// went through while the job still runs (Glance is slow from then on), and
// succeeds.
func TestImportShowsRetryWhileItHappens(t *testing.T) {
	e := newTestEnv(t)
	g := e.net.glance("http://glance-a:9292")
	data := testData(8 << 20)
	addVerified(g, "img-1", "active", data)
	tr := &troubleRead{failAt: 2<<20 + 5, spare: 7 << 20, slow: 50 * time.Millisecond, failing: true}
	g.readHook = tr.check
	e.cfg.Transfer = transfer.Config{ChunkSize: 1 << 20, Backoff: 20 * time.Millisecond, MaxBackoff: 20 * time.Millisecond, RetryFor: time.Minute}
	r := e.start()
	if _, err := r.c.AddDomain(ctx, DomainSpec{Name: "alpha", URL: "http://glance-a:9292", UUID: uuidA}); err != nil {
		t.Fatal(err)
	}
	j, err := r.c.Import(ctx, importReq("http://glance-a:9292/v2/images/img-1/file", nil))
	if err != nil {
		t.Fatal(err)
	}
	poll := func(what string, ok func(Job) bool) Job {
		t.Helper()
		deadline := time.Now().Add(10 * time.Second)
		for {
			j, err := r.c.Job(ctx, j.ID)
			if err != nil {
				t.Fatal(err)
			}
			if ok(j) {
				return j
			}
			if j.Done() || time.Now().After(deadline) {
				t.Fatalf("waiting for %s: job %+v", what, j)
			}
			time.Sleep(5 * time.Millisecond)
		}
	}
	jr := poll("the retry", func(j Job) bool { return j.Retrying != "" })
	if jr.State != JobRunning || !strings.HasPrefix(jr.Retrying, "source read at 2.0 MiB failed (attempt ") ||
		!strings.Contains(jr.Retrying, "connection refused") || jr.BytesDone != 2<<20 {
		t.Errorf("while Glance refuses: %+v", jr)
	}
	tr.setFailing(false)
	poll("the retry cleared while running", func(j Job) bool {
		return j.State == JobRunning && j.Retrying == "" && j.BytesDone > 2<<20
	})
	j = waitDone(t, r, j.ID)
	if j.State != JobSucceeded || !j.Verified || j.Retrying != "" || j.StalledSeconds != 0 {
		t.Fatalf("job %+v", j)
	}
	if got, _ := os.ReadFile(volPath(e)); !bytes.Equal(got, data) {
		t.Fatal("volume differs")
	}
}
