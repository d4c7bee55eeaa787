package hostd

import (
	"bytes"
	"context"
	"crypto/md5"
	"crypto/sha512"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/glancegw/glancegw/glance"
)

const (
	tSP  = "11111111-2222-4333-8444-555555555555"
	tImg = "01234567-89ab-4cde-8f01-23456789abcd"
	tVol = "fedcba98-7654-4321-8fed-cba987654321"
)

func testData(n int) []byte {
	b := make([]byte, n)
	for i := range b {
		if i < n/2 {
			b[i] = byte(i*7 + i/4096)
		}
	}
	return b
}

// addVerified adds an image whose checksums are real.
func addVerified(g *fakeGlance, id, status string, data []byte) {
	g.add(id, id, status, data)
	m, s := md5.Sum(data), sha512.Sum512(data)
	g.mu.Lock()
	defer g.mu.Unlock()
	im := &g.images[len(g.images)-1]
	im.Checksum, im.OSHashAlgo, im.OSHashValue = hex.EncodeToString(m[:]), "sha512", hex.EncodeToString(s[:])
}

func importReq(url string, headers map[string]string) ImportRequest {
	return ImportRequest{SPUUID: tSP, SDUUID: uuidA, ImgUUID: tImg, VolUUID: tVol,
		ImportInfo: TransferInfo{Method: "http", URL: url, Headers: headers}}
}

func waitDone(t *testing.T, r *running, id string) Job {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		j, err := r.c.WaitJob(ctx, id, 5*time.Second)
		if err != nil {
			t.Fatalf("wait: %v", err)
		}
		if j.Done() {
			return j
		}
	}
	t.Fatalf("job %s not done in 30s", id)
	return Job{}
}

func volPath(e *testEnv) string {
	return filepath.Join(e.cfg.RepoRoot, tSP, uuidA, "images", tImg, tVol)
}

func TestImportFromDomain(t *testing.T) {
	e := newTestEnv(t)
	g := e.net.glance("http://glance-a:9292")
	data := testData(3<<20 + 11)
	addVerified(g, "img-1", "active", data)
	addVerified(g, "img-q", "queued", nil)
	r := e.start()
	if _, err := r.c.AddDomain(ctx, DomainSpec{Name: "alpha", URL: "http://glance-a:9292", UUID: uuidA}); err != nil {
		t.Fatal(err)
	}
	j, err := r.c.Import(ctx, importReq("http://glance-a:9292/v2/images/img-1/file", nil))
	if err != nil {
		t.Fatal(err)
	}
	if j.Kind != JobImport || j.ID == "" || (j.State != JobQueued && j.State != JobRunning) {
		t.Errorf("new job %+v", j)
	}
	j = waitDone(t, r, j.ID)
	if j.State != JobSucceeded || !j.Verified || j.BytesDone != int64(len(data)) || j.BytesTotal != int64(len(data)) ||
		j.Format != "raw" || !strings.HasPrefix(j.Checksum, "sha512:") || j.Ended == nil || j.Started == nil {
		t.Fatalf("job %+v", j)
	}
	if got, _ := os.ReadFile(volPath(e)); !bytes.Equal(got, data) {
		t.Fatal("volume differs")
	}
	// Existing volume: conflict before any byte moves; overwrite works.
	if _, err := r.c.Import(ctx, importReq("http://glance-a:9292/v2/images/img-1/file", nil)); !errors.Is(err, ErrConflict) {
		t.Errorf("second import: %v, want conflict", err)
	}
	req := importReq("http://glance-a:9292/v2/images/img-q/file", nil)
	req.Overwrite = true
	if _, err := r.c.Import(ctx, req); !errors.Is(err, ErrConflict) || !strings.Contains(err.Error(), "is queued, not active") {
		t.Errorf("queued image: %v", err)
	}
	req.ImportInfo.URL = "http://glance-a:9292/v2/images/nope/file"
	if _, err := r.c.Import(ctx, req); !errors.Is(err, ErrNotFound) {
		t.Errorf("missing image: %v", err)
	}
	list, err := r.c.Jobs(ctx)
	if err != nil || len(list) != 1 || list[0].ID != j.ID {
		t.Errorf("jobs %+v %v", list, err)
	}
	if _, err := r.c.Job(ctx, "nope"); !errors.Is(err, ErrNotFound) {
		t.Errorf("unknown job: %v", err)
	}
	if _, err := r.c.CancelJob(ctx, j.ID); !errors.Is(err, ErrConflict) {
		t.Errorf("cancel of a finished job: %v", err)
	}
}

func TestImportChecksumMismatchLeavesNoVolume(t *testing.T) {
	e := newTestEnv(t)
	g := e.net.glance("http://glance-a:9292")
	addVerified(g, "img-1", "active", testData(2<<20))
	g.mu.Lock()
	g.data["img-1"] = append([]byte{1}, g.data["img-1"][1:]...)
	g.mu.Unlock()
	r := e.start()
	r.c.AddDomain(ctx, DomainSpec{Name: "alpha", URL: "http://glance-a:9292"})
	j, err := r.c.Import(ctx, importReq("http://glance-a:9292/v2/images/img-1/file", nil))
	if err != nil {
		t.Fatal(err)
	}
	j = waitDone(t, r, j.ID)
	if j.State != JobFailed || !strings.Contains(j.Error, "checksum mismatch") {
		t.Fatalf("job %+v", j)
	}
	ents, _ := os.ReadDir(filepath.Dir(volPath(e)))
	if len(ents) != 0 {
		t.Errorf("left behind: %v", ents)
	}
}

func TestImportValidation(t *testing.T) {
	e := newTestEnv(t)
	r := e.start()
	for name, req := range map[string]ImportRequest{
		"bad uuid":   {SPUUID: "x", SDUUID: uuidA, ImgUUID: tImg, VolUUID: tVol, ImportInfo: TransferInfo{Method: "http", URL: "http://h/x"}},
		"dotdot":     {SPUUID: tSP, SDUUID: uuidA, ImgUUID: "../../../etc", VolUUID: tVol, ImportInfo: TransferInfo{Method: "http", URL: "http://h/x"}},
		"method":     importReq("http://h/x", nil),
		"file url":   importReq("file:///etc/passwd", nil),
		"no method":  {SPUUID: tSP, SDUUID: uuidA, ImgUUID: tImg, VolUUID: tVol, ImportInfo: TransferInfo{URL: "http://h/x"}},
		"bad header": importReq("http://h/x", map[string]string{"X-Auth-Token": "a\r\nb"}),
		"domain":     {SPUUID: tSP, SDUUID: uuidA, ImgUUID: tImg, VolUUID: tVol, ImportInfo: TransferInfo{Method: "http", URL: "http://h/x", Domain: "d"}},
	} {
		if name == "method" {
			req.ImportInfo.Method = "ftp"
		}
		if _, err := r.c.Import(ctx, req); !errors.Is(err, ErrBadRequest) {
			t.Errorf("%s: %v, want bad request", name, err)
		}
	}
	// Export of a missing volume.
	_, err := r.c.Export(ctx, ExportRequest{SPUUID: tSP, SDUUID: uuidB, ImgUUID: tImg, VolUUID: tVol,
		ExportInfo: TransferInfo{Domain: "x", Name: "n"}})
	if !errors.Is(err, ErrNotFound) {
		t.Errorf("export of a missing volume: %v", err)
	}
	// A symlink in the repository is refused.
	os.MkdirAll(e.cfg.RepoRoot, 0o755)
	os.Symlink(t.TempDir(), filepath.Join(e.cfg.RepoRoot, tSP))
	if _, err := r.c.Import(ctx, importReq("http://h/x", nil)); !errors.Is(err, ErrBadRequest) || !strings.Contains(err.Error(), "symlink") {
		t.Errorf("symlink: %v", err)
	}
	if jobs, _ := r.c.Jobs(ctx); len(jobs) != 0 {
		t.Errorf("refused requests made jobs: %+v", jobs)
	}
}

// slowServer serves data slowly, with a token it checks.
func slowServer(t *testing.T, data []byte, token string, delay time.Duration) *httptest.Server {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("X-Auth-Token") != token {
			http.Error(w, "no", http.StatusUnauthorized)
			return
		}
		if delay > 0 && r.Header.Get("Range") != "bytes=0-0" {
			time.Sleep(delay)
		}
		http.ServeContent(w, r, "x", time.Unix(1, 0), bytes.NewReader(data))
	}))
	t.Cleanup(srv.Close)
	return srv
}

func TestImportHTTPWithSecretHeader(t *testing.T) {
	e := newTestEnv(t)
	data := testData(1<<20 + 3)
	srv := slowServer(t, data, testToken, 0)
	r := e.start()
	j, err := r.c.Import(ctx, importReq(srv.URL+"/img.raw?token="+testToken, map[string]string{"X-Auth-Token": testToken}))
	if err != nil {
		t.Fatal(err)
	}
	j = waitDone(t, r, j.ID)
	if j.State != JobSucceeded || j.Verified || !strings.Contains(j.Note, "not verified") {
		t.Fatalf("job %+v", j)
	}
	if got, _ := os.ReadFile(volPath(e)); !bytes.Equal(got, data) {
		t.Fatal("volume differs")
	}
	state, _ := os.ReadFile(filepath.Join(e.cfg.StateDir, "jobs.json"))
	fi, _ := os.Stat(filepath.Join(e.cfg.StateDir, "jobs.json"))
	meta, _ := os.ReadFile(volPath(e) + ".meta")
	for what, s := range map[string]string{"jobs.json": string(state), "log": e.logs.String(), "meta": string(meta), "job": j.Source} {
		if strings.Contains(s, testToken) {
			t.Errorf("%s holds the token", what)
		}
	}
	if fi == nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("jobs.json mode %v", fi)
	}
}

func TestCancelAndRecovery(t *testing.T) {
	e := newTestEnv(t)
	data := testData(64 << 20)
	srv := slowServer(t, data, "", 300*time.Millisecond)
	e.cfg.Transfer.ChunkSize = 1 << 20
	r := e.start()
	j, err := r.c.Import(ctx, importReq(srv.URL+"/slow", nil))
	if err != nil {
		t.Fatal(err)
	}
	time.Sleep(500 * time.Millisecond)
	// An export of the volume being imported is refused as busy, not as
	// a volume that does not exist yet.
	_, err = r.c.Export(ctx, ExportRequest{SPUUID: tSP, SDUUID: uuidA, ImgUUID: tImg, VolUUID: tVol, ExportInfo: TransferInfo{Domain: "alpha", Name: "x"}})
	if !errors.Is(err, ErrConflict) || !strings.Contains(err.Error(), "in use by job "+j.ID) {
		t.Errorf("export of a volume being imported: %v, want a conflict naming the job", err)
	}
	c, err := r.c.CancelJob(ctx, j.ID)
	if err != nil || c.State != JobCancelled {
		t.Fatalf("cancel: %+v %v", c, err)
	}
	ents, _ := os.ReadDir(filepath.Dir(volPath(e)))
	if len(ents) != 0 {
		t.Errorf("left behind after cancel: %v", ents)
	}
	r.stop(t)

	// A daemon killed mid-import leaves a running job and a temp file.
	dir := filepath.Dir(volPath(e))
	tmp := filepath.Join(dir, "."+tVol+".glancegw-tmp-0123456789abcdef")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(tmp, []byte("partial"), 0o600); err != nil {
		t.Fatal(err)
	}
	state := `{"version":1,"jobs":[{"id":"j1","kind":"import","state":"running","bytes_done":5,"bytes_total":9,"rate":0,"created":"2024-01-01T00:00:00Z","volume":"` + volPath(e) + `","verified":false}]}`
	os.WriteFile(filepath.Join(e.cfg.StateDir, "jobs.json"), []byte(state), 0o600)
	r2 := e.start()
	got, err := r2.c.Job(ctx, "j1")
	if err != nil || got.State != JobInterrupted || got.Ended == nil {
		t.Fatalf("recovered job %+v %v", got, err)
	}
	if _, err := os.Stat(tmp); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("temp file not removed: %v", err)
	}
	jobs, _ := r2.c.Jobs(ctx)
	if len(jobs) != 1 || jobs[0].BytesDone != 5 {
		t.Errorf("jobs after restart: %+v", jobs)
	}
}

// The export half of transfer.Glance on the fake: an upload stores the bytes
// and sets real checksums, as Glance does.

func (f *fakeGlance) Create(ctx context.Context, o glance.CreateOpts) (glance.Image, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	im := glance.Image{ID: fmt.Sprintf("new-%d", len(f.images)), Name: o.Name, Status: "queued", DiskFormat: o.DiskFormat, ContainerFormat: o.ContainerFormat}
	f.images = append(f.images, im)
	return im, nil
}

func (f *fakeGlance) Upload(ctx context.Context, id string, r io.Reader, size int64) error {
	b, err := io.ReadAll(r)
	if err != nil {
		return err
	}
	m, s := md5.Sum(b), sha512.Sum512(b)
	f.mu.Lock()
	defer f.mu.Unlock()
	for i := range f.images {
		if f.images[i].ID == id {
			im := &f.images[i]
			im.Status, im.Size = "active", int64(len(b))
			im.Checksum, im.OSHashAlgo, im.OSHashValue = hex.EncodeToString(m[:]), "sha512", hex.EncodeToString(s[:])
			f.data[id] = b
			return nil
		}
	}
	return notFoundErr{}
}

func (f *fakeGlance) Delete(ctx context.Context, id string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	for i := range f.images {
		if f.images[i].ID == id {
			f.images = append(f.images[:i], f.images[i+1:]...)
			return nil
		}
	}
	return notFoundErr{}
}

func TestExportToDomain(t *testing.T) {
	e := newTestEnv(t)
	g := e.net.glance("http://glance-a:9292")
	r := e.start()
	r.c.AddDomain(ctx, DomainSpec{Name: "alpha", URL: "http://glance-a:9292"})
	data := testData(2<<20 + 5)
	os.MkdirAll(filepath.Dir(volPath(e)), 0o755)
	os.WriteFile(volPath(e), data, 0o640)
	req := ExportRequest{SPUUID: tSP, SDUUID: uuidA, ImgUUID: tImg, VolUUID: tVol, ExportInfo: TransferInfo{Domain: "alpha", Name: "backup"}}
	j, err := r.c.Export(ctx, req)
	if err != nil {
		t.Fatal(err)
	}
	j = waitDone(t, r, j.ID)
	if j.State != JobSucceeded || !j.Verified || j.ImageID == "" || j.Format != "raw" || j.BytesDone != int64(len(data)) {
		t.Fatalf("job %+v", j)
	}
	im, err := g.Get(ctx, j.ImageID)
	if err != nil || im.Name != "backup" || im.Status != "active" || !bytes.Equal(g.data[j.ImageID], data) {
		t.Fatalf("glance image %+v %v", im, err)
	}
	for name, info := range map[string]TransferInfo{
		"both":      {Domain: "alpha", Name: "x", URL: "http://h/x", Method: "http"},
		"no name":   {Domain: "alpha"},
		"no method": {URL: "http://h/x"},
		"scheme":    {Method: "http", URL: "file:///tmp/x"},
	} {
		req.ExportInfo = info
		if _, err := r.c.Export(ctx, req); !errors.Is(err, ErrBadRequest) {
			t.Errorf("%s: %v, want bad request", name, err)
		}
	}
	req.ExportInfo = TransferInfo{Domain: "nope", Name: "x"}
	if _, err := r.c.Export(ctx, req); !errors.Is(err, ErrNotFound) {
		t.Errorf("unknown domain: %v", err)
	}
}

// TestShutdownInterruptsJobsFirst: on shutdown a client long-polling a
// running job hears it was interrupted, and the daemon does not wait out
// the poll.
func TestShutdownInterruptsJobsFirst(t *testing.T) {
	e := newTestEnv(t)
	srv := slowServer(t, testData(64<<20), "", 300*time.Millisecond)
	e.cfg.Transfer.ChunkSize = 1 << 20
	e.cfg.ShutdownTimeout = 20 * time.Second
	r := e.start()
	j, err := r.c.Import(ctx, importReq(srv.URL+"/slow", nil))
	if err != nil {
		t.Fatal(err)
	}
	time.Sleep(300 * time.Millisecond)
	waited := make(chan Job, 1)
	go func() {
		got, _ := r.c.WaitJob(ctx, j.ID, 30*time.Second)
		waited <- got
	}()
	time.Sleep(200 * time.Millisecond) // the poll is in the daemon
	start := time.Now()
	r.stop(t)
	if took := time.Since(start); took > 5*time.Second {
		t.Errorf("shutdown with a job and a waiting client took %v", took)
	}
	select {
	case got := <-waited:
		if got.State != JobInterrupted {
			t.Errorf("the waiting client heard %q, want interrupted", got.State)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the waiting client got no answer")
	}
}
