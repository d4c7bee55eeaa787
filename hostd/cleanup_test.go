package hostd

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/glancegw/glancegw/glance"
	"github.com/glancegw/glancegw/hostd/transfer"
)

// hungGlance answers nothing until the caller gives up.
type hungGlance struct{ *fakeGlance }

func (h hungGlance) Get(ctx context.Context, id string) (glance.Image, error) {
	<-ctx.Done()
	return glance.Image{}, ctx.Err()
}

// TestCleanerRecovery runs the clean-up after a restart over the jobs a
// killed daemon left: a queued image is deleted, an active one is kept, an
// unreachable or hung domain is retried (each attempt bounded) and its
// image stays recorded for the next start.
func TestCleanerRecovery(t *testing.T) {
	const (
		uuidDown = "cccccccc-0000-4000-8000-000000000003"
		uuidHung = "dddddddd-0000-4000-8000-000000000004"
	)
	g := newFakeGlance()
	g.add("partial", "backup", "queued", nil)
	g.add("saving", "backup2", "saving", nil)
	g.add("done", "backup3", "active", []byte("abc"))
	g.add("other", "unrelated", "queued", nil)
	var tries sync.Map // sdUUID -> *atomic.Int32
	resolve := func(ctx context.Context, sd string) (transfer.Glance, error) {
		n, _ := tries.LoadOrStore(sd, new(atomic.Int32))
		n.(*atomic.Int32).Add(1)
		switch sd {
		case uuidA:
			return g, nil
		case uuidHung:
			return hungGlance{g}, nil
		}
		return nil, errRefused
	}
	count := func(sd string) int32 {
		n, ok := tries.Load(sd)
		if !ok {
			return 0
		}
		return n.(*atomic.Int32).Load()
	}

	dir := t.TempDir()
	path := filepath.Join(dir, "jobs.json")
	export := func(id, state, sd, img string) Job {
		return Job{ID: id, Kind: JobExport, State: state, Created: time.Unix(1, 0).UTC(), Volume: "/v/" + id,
			Domain: sd, ImageID: img, CleanupImage: img}
	}
	failed := export("j-failed", JobFailed, uuidA, "gone") // its export deleted it already
	failed.Error = "upload: connection reset"
	imp := Job{ID: "j-import", Kind: JobImport, State: JobRunning, Created: time.Unix(1, 0).UTC(), Volume: "/v/i"}
	jobs := []Job{
		export("j-queued", JobRunning, uuidA, "partial"),
		export("j-saving", JobQueued, uuidA, "saving"),
		export("j-active", JobRunning, uuidA, "done"),
		export("j-down", JobRunning, uuidDown, "far"),
		export("j-hung", JobRunning, uuidHung, "stuck"),
		failed, imp,
	}
	b, _ := json.Marshal(jobsFile{Version: jobsVersion, Jobs: jobs})
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}

	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	m := newJobManager(path, 2, log, time.Now)
	if changed, err := m.load(); err != nil || !changed {
		t.Fatalf("load: %v %v", changed, err)
	}
	if j, _ := m.get("j-queued"); j.State != JobInterrupted || !strings.Contains(j.Error, "partial image partial is being removed") {
		t.Errorf("loaded job %+v", j)
	}
	const every, giveUp = 20 * time.Millisecond, 300 * time.Millisecond
	c := newCleaner(m, resolve, log, 50*time.Millisecond, every, giveUp)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	start := time.Now()
	c.begin(ctx)
	if took := time.Since(start); took > 20*time.Millisecond {
		t.Errorf("begin took %v: it must not wait on Glance", took)
	}
	done := make(chan struct{})
	go func() { c.wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("the clean-up did not give up within 10s")
	}

	for _, tc := range []struct {
		job, keep, msg string
	}{
		{"j-queued", "", "partial image partial was removed from Glance"},
		{"j-saving", "", "partial image saving was removed from Glance"},
		{"j-active", "", "partial image done is active in Glance and was kept"},
		{"j-failed", "", "upload: connection reset; partial image gone was removed from Glance"},
		{"j-down", "far", "partial image far could not be removed (the next start tries again): dial tcp: connection refused"},
		{"j-hung", "stuck", "partial image stuck could not be removed (the next start tries again): get image stuck: context deadline exceeded"},
		{"j-import", "", "its temporary files are removed"},
	} {
		j, err := m.get(tc.job)
		if err != nil || j.CleanupImage != tc.keep || !strings.HasSuffix(j.Error, tc.msg) {
			t.Errorf("%s: cleanup_image %q error %q (%v); want %q and an error ending %q", tc.job, j.CleanupImage, j.Error, err, tc.keep, tc.msg)
		}
		if strings.Count(j.Error, cleanupMarker) > 1 {
			t.Errorf("%s: notes pile up: %q", tc.job, j.Error)
		}
	}
	for id, want := range map[string]bool{"partial": false, "saving": false, "done": true, "other": true} {
		if _, err := g.Get(ctx, id); (err == nil) != want {
			t.Errorf("image %s exists: %v, want %v", id, err == nil, want)
		}
	}
	// Unreachable and hung domains were tried again, about every `every`
	// until giveUp; each hung attempt ended at its bound.
	for _, sd := range []string{uuidDown, uuidHung} {
		if n := count(sd); n < 3 || n > int32(giveUp/every)+1 {
			t.Errorf("domain %s: %d attempts, want several and at most %d", sd, n, giveUp/every+1)
		}
	}
	// What is left is on disk for the next start.
	m2 := newJobManager(path, 2, log, time.Now)
	if _, err := m2.load(); err != nil {
		t.Fatal(err)
	}
	left := map[string]string{}
	for _, j := range m2.list() {
		if j.CleanupImage != "" {
			left[j.ID] = j.CleanupImage
		}
	}
	if len(left) != 2 || left["j-down"] != "far" || left["j-hung"] != "stuck" {
		t.Errorf("recorded for the next start: %v", left)
	}
}

// TestCleanerStopsWithDaemon checks that a clean-up waiting between
// attempts ends when the daemon stops, leaving the image recorded.
func TestCleanerStopsWithDaemon(t *testing.T) {
	path := filepath.Join(t.TempDir(), "jobs.json")
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	m := newJobManager(path, 2, log, time.Now)
	m.jobs = append(m.jobs, &jobRun{job: Job{ID: "j", Kind: JobExport, State: JobInterrupted, Domain: uuidB, CleanupImage: "img"}})
	var tries atomic.Int32
	c := newCleaner(m, func(context.Context, string) (transfer.Glance, error) {
		tries.Add(1)
		return nil, errRefused
	}, log, time.Second, time.Hour, 10*time.Hour)
	ctx, cancel := context.WithCancel(context.Background())
	c.begin(ctx)
	deadline := time.Now().Add(5 * time.Second)
	for tries.Load() == 0 && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	cancel()
	done := make(chan struct{})
	go func() { c.wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("the clean-up did not stop with its context")
	}
	if j, _ := m.get("j"); tries.Load() != 1 || j.CleanupImage != "img" {
		t.Errorf("after %d attempts the job is %+v", tries.Load(), j)
	}
	// After wait, an export that ends starts no clean-up.
	c.jobEnded(Job{ID: "k", Kind: JobExport, State: JobFailed, CleanupImage: "x"})
	if tries.Load() != 1 {
		t.Errorf("a clean-up started after wait")
	}
}

// uploadHook is a fake Glance that calls before at the start of each
// upload.
type uploadHook struct {
	*fakeGlance
	before func(id string)
}

func (u uploadHook) Upload(ctx context.Context, id string, r io.Reader, size int64) error {
	u.before(id)
	return u.fakeGlance.Upload(ctx, id, r, size)
}

// TestExportRecordsImageBeforeUpload checks on a running daemon that an
// export's new image is in jobs.json before the upload starts and cleared
// when it succeeds; then that a daemon started over the state a kill -9
// mid-upload leaves deletes that image, and keeps an active one.
func TestExportRecordsImageBeforeUpload(t *testing.T) {
	e := newTestEnv(t)
	g := e.net.glance("http://glance-a:9292")
	var mu sync.Mutex
	var onDisk []Job // jobs.json as the upload starts
	var uploaded string
	e.cfg.connect = func(ctx context.Context, cfg glance.Config, log *slog.Logger) (backend, error) {
		be, err := e.net.connect(ctx, cfg, log)
		if err != nil {
			return nil, err
		}
		return uploadHook{be.(*fakeGlance), func(id string) {
			var jf jobsFile
			b, err := os.ReadFile(jobsPath(e.cfg.StateDir))
			if err == nil {
				err = json.Unmarshal(b, &jf)
			}
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				t.Errorf("read jobs.json during the upload: %v", err)
			}
			onDisk, uploaded = jf.Jobs, id
		}}, nil
	}
	r := e.start()
	if _, err := r.c.AddDomain(ctx, DomainSpec{Name: "alpha", URL: "http://glance-a:9292", UUID: uuidA}); err != nil {
		t.Fatal(err)
	}
	os.MkdirAll(filepath.Dir(volPath(e)), 0o755)
	os.WriteFile(volPath(e), testData(1<<20), 0o640)
	j, err := r.c.Export(ctx, ExportRequest{SPUUID: tSP, SDUUID: uuidA, ImgUUID: tImg, VolUUID: tVol,
		ExportInfo: TransferInfo{Domain: "alpha", Name: "backup"}})
	if err != nil {
		t.Fatal(err)
	}
	if j.Domain != uuidA {
		t.Errorf("queued export: domain %q, want %s", j.Domain, uuidA)
	}
	j = waitDone(t, r, j.ID)
	if j.State != JobSucceeded || j.CleanupImage != "" || j.ImageID == "" || j.Domain != uuidA {
		t.Fatalf("job %+v", j)
	}
	mu.Lock()
	if uploaded != j.ImageID || len(onDisk) != 1 || onDisk[0].CleanupImage != j.ImageID || onDisk[0].State != JobRunning {
		t.Errorf("jobs.json as the upload of %s started: %+v", uploaded, onDisk)
	}
	mu.Unlock()
	r.stop(t)
	if b, _ := os.ReadFile(jobsPath(e.cfg.StateDir)); strings.Contains(string(b), "cleanup_image") {
		t.Errorf("a succeeded export keeps an image to delete: %s", b)
	}

	// The state a kill -9 mid-upload leaves: two running exports.
	g.add("partial", "backup", "queued", nil)
	addVerified(g, "finished", "active", []byte("uploaded just before the kill"))
	state := jobsFile{Version: jobsVersion}
	for _, id := range []string{"partial", "finished"} {
		state.Jobs = append(state.Jobs, Job{ID: "j-" + id, Kind: JobExport, State: JobRunning, Created: time.Unix(1, 0).UTC(),
			Volume: volPath(e), Domain: uuidA, ImageID: id, CleanupImage: id})
	}
	b, _ := json.Marshal(state)
	if err := os.WriteFile(jobsPath(e.cfg.StateDir), b, 0o600); err != nil {
		t.Fatal(err)
	}
	r2 := e.start()
	deadline := time.Now().Add(10 * time.Second)
	for {
		p, _ := r2.c.Job(ctx, "j-partial")
		f, _ := r2.c.Job(ctx, "j-finished")
		if p.CleanupImage == "" && f.CleanupImage == "" {
			if p.State != JobInterrupted || !strings.HasSuffix(p.Error, "partial image partial was removed from Glance") {
				t.Errorf("job %+v", p)
			}
			if f.State != JobInterrupted || !strings.HasSuffix(f.Error, "is active in Glance and was kept") {
				t.Errorf("job %+v", f)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("images still recorded after 10s: %+v %+v", p, f)
		}
		time.Sleep(10 * time.Millisecond)
	}
	if _, err := g.Get(ctx, "partial"); !isNotFound(err) {
		t.Errorf("partial image: %v, want deleted", err)
	}
	if im, err := g.Get(ctx, "finished"); err != nil || im.Status != "active" {
		t.Errorf("active image: %+v %v, want kept", im, err)
	}
	if logs := e.logs.String(); !strings.Contains(logs, "deleted the partial image") || !strings.Contains(logs, "job=j-partial") {
		t.Errorf("no info line for the deletion in the log")
	}
}

// TestPruneKeepsPendingCleanup checks that pruning old jobs never drops
// one whose image still waits to be deleted: it is the only trace of it.
func TestPruneKeepsPendingCleanup(t *testing.T) {
	m := newJobManager(filepath.Join(t.TempDir(), "jobs.json"), 2, slog.New(slog.DiscardHandler), time.Now)
	add := func(id, cleanup string) {
		m.jobs = append(m.jobs, &jobRun{job: Job{ID: id, Kind: JobExport, State: JobInterrupted, CleanupImage: cleanup}})
	}
	add("oldest", "img")
	for i := range keepFinished + 5 {
		add(fmt.Sprint("j", i), "")
	}
	m.pruneLocked()
	if len(m.jobs) != keepFinished+1 || m.jobs[0].job.ID != "oldest" || m.jobs[1].job.ID != "j5" {
		t.Errorf("after pruning %d jobs remain, first %s, %s", len(m.jobs), m.jobs[0].job.ID, m.jobs[1].job.ID)
	}
}
