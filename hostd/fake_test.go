package hostd

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/glancegw/glancegw/cache"
	"github.com/glancegw/glancegw/glance"
)

// fakeGlance is an in-memory Glance behind the backend seam.
type fakeGlance struct {
	mu      sync.Mutex
	images  []glance.Image
	data    map[string][]byte
	listErr error
	hang    chan struct{} // when set, List waits for it (or ctx): a Glance that never answers
	lists   int
	reads   atomic.Int64 // ReadAt calls on its sources
	// readHook, when set before a source is made, runs before each of its
	// reads; an error fails the read.
	readHook func(ctx context.Context, off int64, n int) error
}

func newFakeGlance() *fakeGlance { return &fakeGlance{data: map[string][]byte{}} }

func (f *fakeGlance) add(id, name, status string, data []byte) glance.Image {
	f.mu.Lock()
	defer f.mu.Unlock()
	im := glance.Image{
		ID: id, Name: name, Status: status, Size: int64(len(data)),
		DiskFormat: "raw", ContainerFormat: "bare", Checksum: fmt.Sprintf("sum-%s-%d", id, len(data)),
		Raw: []byte(fmt.Sprintf(`{"id":%q,"name":%q,"status":%q,"size":%d,"os_distro":"fake"}`, id, name, status, len(data))),
	}
	f.images = append(f.images, im)
	f.data[id] = data
	return im
}

func (f *fakeGlance) setListErr(err error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.listErr = err
}

func (f *fakeGlance) listCount() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.lists
}

func (f *fakeGlance) List(ctx context.Context) ([]glance.Image, error) {
	f.mu.Lock()
	hang := f.hang
	f.mu.Unlock()
	if hang != nil {
		select {
		case <-hang:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.lists++
	if f.listErr != nil {
		return nil, f.listErr
	}
	return append([]glance.Image(nil), f.images...), nil
}

type notFoundErr struct{}

func (notFoundErr) Error() string  { return "glance: 404 image not found" }
func (notFoundErr) NotFound() bool { return true }

func (f *fakeGlance) Get(ctx context.Context, id string) (glance.Image, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, im := range f.images {
		if im.ID == id {
			return im, nil
		}
	}
	return glance.Image{}, notFoundErr{}
}

func (f *fakeGlance) Source(domain string, img glance.Image) cache.BlockSource {
	f.mu.Lock()
	defer f.mu.Unlock()
	return &memSource{id: domain + "/" + img.ID + "/" + img.Checksum, b: f.data[img.ID], reads: &f.reads, hook: f.readHook}
}

type memSource struct {
	id    string
	b     []byte
	reads *atomic.Int64
	hook  func(ctx context.Context, off int64, n int) error
}

func (m *memSource) ReadAt(ctx context.Context, p []byte, off int64) (int, error) {
	m.reads.Add(1)
	if m.hook != nil {
		if err := m.hook(ctx, off, len(p)); err != nil {
			return 0, err
		}
	}
	if off >= int64(len(m.b)) {
		return 0, io.EOF
	}
	n := copy(p, m.b[off:])
	if n < len(p) {
		return n, io.EOF
	}
	return n, nil
}
func (m *memSource) Size() int64      { return int64(len(m.b)) }
func (m *memSource) Identity() string { return m.id }

// fakeNet maps Glance URLs to fakes; other URLs refuse connections. It
// records every config it was asked to connect with.
type fakeNet struct {
	mu      sync.Mutex
	glances map[string]*fakeGlance
	seen    []glance.Config
}

func newFakeNet() *fakeNet { return &fakeNet{glances: map[string]*fakeGlance{}} }

func (n *fakeNet) glance(url string) *fakeGlance {
	n.mu.Lock()
	defer n.mu.Unlock()
	g := newFakeGlance()
	n.glances[url] = g
	return g
}

func (n *fakeNet) configs() []glance.Config {
	n.mu.Lock()
	defer n.mu.Unlock()
	return append([]glance.Config(nil), n.seen...)
}

var errRefused = errors.New("dial tcp: connection refused")

func (n *fakeNet) connect(ctx context.Context, cfg glance.Config, log *slog.Logger) (backend, error) {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.seen = append(n.seen, cfg)
	g, ok := n.glances[cfg.URL]
	if !ok {
		return nil, errRefused
	}
	return g, nil
}

// logBuf collects a daemon's log at debug level.
type logBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *logBuf) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *logBuf) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// testEnv is a daemon configuration in a fresh short temp dir (unix socket
// paths are limited to 108 bytes).
type testEnv struct {
	t    *testing.T
	dir  string
	cfg  Config
	net  *fakeNet
	logs *logBuf
}

func newTestEnv(t *testing.T) *testEnv {
	t.Helper()
	dir, err := os.MkdirTemp("", "ggw")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	n := newFakeNet()
	return &testEnv{t: t, dir: dir, net: n, logs: &logBuf{}, cfg: Config{
		StateDir:     dir + "/state",
		MountRoot:    dir + "/mnt",
		RepoRoot:     dir + "/repo",
		Socket:       dir + "/api.sock",
		NBDSocket:    dir + "/nbd.sock",
		CacheSize:    64 << 20,
		RefreshTTL:   time.Minute,
		MissInterval: 50 * time.Millisecond,
		connect:      n.connect,
	}}
}

// running is a daemon started by testEnv.start.
type running struct {
	d      *Daemon
	c      *Client
	cancel context.CancelFunc
	done   chan error
}

// start runs a daemon and waits until its API answers.
func (e *testEnv) start() *running {
	e.t.Helper()
	log := slog.New(slog.NewTextHandler(e.logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	d, err := New(e.cfg, log)
	if err != nil {
		e.t.Fatalf("New: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	r := &running{d: d, c: NewClient(e.cfg.Socket), cancel: cancel, done: make(chan error, 1)}
	go func() { r.done <- d.Run(ctx) }()
	deadline := time.Now().Add(10 * time.Second)
	for {
		if _, err := r.c.Status(context.Background()); err == nil {
			break
		} else if time.Now().After(deadline) {
			cancel()
			e.t.Fatalf("daemon did not answer: %v", err)
		}
		select {
		case err := <-r.done:
			cancel()
			e.t.Fatalf("Run returned early: %v", err)
		case <-time.After(10 * time.Millisecond):
		}
	}
	e.t.Cleanup(func() { r.stop(e.t) })
	return r
}

// stop ends Run and checks it returned cleanly; calling it twice is fine.
func (r *running) stop(t *testing.T) {
	t.Helper()
	if r.cancel == nil {
		return
	}
	r.cancel()
	r.cancel = nil
	select {
	case err := <-r.done:
		if err != nil {
			t.Errorf("Run: %v", err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("Run did not return after cancel")
	}
}
