package e2e

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/glancegw/glancegw/test/harness"
)

// isoDir is the ISO-domain image directory every domain shows.
const isoDir = "images/11111111-1111-1111-1111-111111111111"

// lazy runs an expensive setup once, on first use, and remembers its error.
type lazy[T any] struct {
	once sync.Once
	v    T
	err  error
}

func (l *lazy[T]) get(f func() (T, error)) (T, error) {
	l.once.Do(func() { l.v, l.err = f() })
	return l.v, l.err
}

var (
	sharedGlance lazy[*harness.Glance]
	sharedDomain lazy[*domainEnv]
)

// fixture is one image uploaded by the tests, with the bytes it must read as.
type fixture struct {
	Name   string
	Format string
	Data   []byte
	Img    harness.Image
}

// domainEnv is a daemon with one domain added and mounted.
type domainEnv struct {
	G          *harness.Glance
	D          *harness.Daemon
	Name       string // domain name
	SD         string // sdUUID
	MP         string // mountpoint
	Fixtures   []*fixture
	QcowRawRef []byte // `qemu-img convert -O raw` of the qcow2 fixture, done locally; nil without qemu-img
}

func (e *domainEnv) fixture(name string) *fixture {
	for _, f := range e.Fixtures {
		if f.Name == name {
			return f
		}
	}
	return nil
}

// nbdURI is the URI of an export of the daemon's unix socket.
func (e *domainEnv) nbdURI(export string) string {
	return "nbd+unix:///" + export + "?socket=" + e.D.NBDSocket
}

// requireTools skips the test loudly when a tool is missing.
func requireTools(t testing.TB, tools ...string) {
	t.Helper()
	if m := harness.Missing(tools...); len(m) > 0 {
		t.Skipf("REQUIRED TOOL MISSING: %s (run `make deps`); this test did NOT run", strings.Join(m, ", "))
	}
}

// requireBinary fails (not skips) when glancegw did not build.
func requireBinary(t testing.TB) {
	t.Helper()
	if env.buildErr != nil {
		t.Fatalf("glancegw binary: %v", env.buildErr)
	}
}

// newDir makes a short-named temp dir below the run's dir (unix socket
// paths must stay short).
func newDir(t testing.TB, prefix string) string {
	t.Helper()
	d, err := os.MkdirTemp(env.tmp, prefix)
	if err != nil {
		t.Fatal(err)
	}
	return d
}

// glanceOrSkip turns a missing Glance into a loud skip and any other start
// failure into a test failure.
func glanceOrSkip(t testing.TB, g *harness.Glance, err error) *harness.Glance {
	t.Helper()
	if errors.Is(err, harness.ErrGlanceMissing) {
		t.Skipf("REQUIRED TOOL MISSING: %v; this test did NOT run", err)
	}
	if err != nil {
		t.Fatalf("start glance: %v", err)
	}
	return g
}

// noauthGlance is the shared noauth Glance, stopped after all tests.
func noauthGlance(t testing.TB) *harness.Glance {
	t.Helper()
	g, err := sharedGlance.get(func() (*harness.Glance, error) {
		g, err := harness.StartGlance(context.Background(), harness.GlanceConfig{
			StateDir: filepath.Join(env.tmp, "glance-noauth"), Port: glancePort(), Reaper: env.reaper})
		if err == nil {
			atEnd(func() { _ = g.Stop() })
		}
		return g, err
	})
	return glanceOrSkip(t, g, err)
}

// startGlance starts a Glance owned by one test.
func startGlance(t testing.TB, cfg harness.GlanceConfig) *harness.Glance {
	t.Helper()
	cfg.Reaper = env.reaper
	if cfg.StateDir == "" {
		cfg.StateDir = filepath.Join(newDir(t, "g"), "state")
	}
	g, err := harness.StartGlance(context.Background(), cfg)
	g = glanceOrSkip(t, g, err)
	t.Cleanup(func() {
		if t.Failed() {
			for _, name := range []string{"glance-api.log", "keystone.log"} {
				if b, err := os.ReadFile(filepath.Join(g.StateDir(), name)); err == nil {
					t.Logf("%s (tail):\n%s", name, tailString(string(b), 4000))
				}
			}
		}
		if err := g.Stop(); err != nil {
			t.Errorf("stop glance: %v", err)
		}
	})
	return g
}

// startDaemon starts `glancegw serve` in dir (reused dir = restart with
// state). The test's cleanup stops it and shows its log on failure.
func startDaemon(t testing.TB, dir string, args ...string) *harness.Daemon {
	t.Helper()
	requireBinary(t)
	d, err := harness.StartDaemon(context.Background(), harness.DaemonConfig{
		Bin: env.bin, Dir: dir, Args: args, Reaper: env.reaper})
	if err != nil {
		t.Fatalf("start daemon: %v", err)
	}
	t.Cleanup(func() { stopDaemon(t, d) })
	return d
}

func stopDaemon(t testing.TB, d *harness.Daemon) {
	if !d.Exited() {
		if _, err := d.Stop(30 * time.Second); err != nil {
			t.Errorf("stop daemon: %v", err)
		}
	}
	if err := d.CleanupMounts(); err != nil {
		t.Errorf("daemon left mounts behind: %v", err)
	}
	if t.Failed() {
		t.Logf("daemon log (%s):\n%s", d.LogPath, tailString(d.Log(), 6000))
	}
}

// cli runs a glancegw command against d (bounded at 2 minutes).
func cli(t testing.TB, d *harness.Daemon, args ...string) harness.Result {
	t.Helper()
	r := d.CLI(context.Background(), 2*time.Minute, args...)
	if r.Err != nil {
		t.Fatalf("glancegw %s: %v", strings.Join(args, " "), r.Err)
	}
	return r
}

// mustCLI runs a command that must succeed and returns its stdout.
func mustCLI(t testing.TB, d *harness.Daemon, args ...string) string {
	t.Helper()
	r := cli(t, d, args...)
	if r.Code != 0 {
		t.Fatalf("%s", r)
	}
	return r.Stdout
}

// addAndMount adds domain name for g's URL (plus extra domain-add flags) and
// mounts it at <dir>/mnt/<name>.
func addAndMount(t testing.TB, d *harness.Daemon, name, url string, extra ...string) (sd, mp string) {
	t.Helper()
	sd = uuidString()
	mustCLI(t, d, append([]string{"domain", "add", name, "--url", url, "--uuid", sd}, extra...)...)
	mp = filepath.Join(d.MountRoot, name)
	mustCLI(t, d, "mount", name, "--mountpoint", mp)
	if _, ok, err := harness.MountedAt(mp); err != nil || !ok {
		t.Fatalf("after `glancegw mount`, %s is not in mountinfo (err %v)", mp, err)
	}
	return sd, mp
}

// sharedEnv is the shared daemon (serve --refresh 2s) with domain "e2e" of
// the shared Glance mounted, and the standard fixtures uploaded.
func sharedEnv(t testing.TB) *domainEnv {
	t.Helper()
	requireTools(t, "/dev/fuse", "fusermount3")
	requireBinary(t)
	g := noauthGlance(t)
	e, err := sharedDomain.get(func() (*domainEnv, error) { return setupShared(g) })
	if err != nil {
		t.Fatalf("shared daemon: %v", err)
	}
	return e
}

func setupShared(g *harness.Glance) (*domainEnv, error) {
	ctx := context.Background()
	e := &domainEnv{G: g, Name: "e2e"}
	fx := []*fixture{
		{Name: "fix-0.raw", Format: "raw", Data: []byte{}},
		{Name: "fix-1000.raw", Format: "raw", Data: harness.RandomBytes(1, 1000)},
		{Name: "fix-3m.iso", Format: "iso", Data: harness.RandomBytes(2, 3<<20+123)},
		{Name: "fix-64m.raw", Format: "raw", Data: harness.RandomBytes(3, 64<<20)},
		{Name: "fix-sparse.raw", Format: "raw", Data: sparseData()},
	}
	if len(harness.Missing("qemu-img", "qemu-io")) == 0 {
		q, ref, err := makeQcow2(ctx)
		if err != nil {
			return nil, err
		}
		fx = append(fx, &fixture{Name: "fix-q.qcow2", Format: "qcow2", Data: q})
		e.QcowRawRef = ref
	}
	for _, f := range fx {
		img, err := g.CreateImage(ctx, f.Name, f.Format, f.Data)
		if err != nil {
			return nil, fmt.Errorf("upload %s: %w", f.Name, err)
		}
		f.Img = img
	}
	e.Fixtures = fx

	dir, err := os.MkdirTemp(env.tmp, "shared")
	if err != nil {
		return nil, err
	}
	d, err := harness.StartDaemon(ctx, harness.DaemonConfig{
		Bin: env.bin, Dir: dir, Args: []string{"--refresh", "2s"}, Reaper: env.reaper})
	if err != nil {
		return nil, err
	}
	e.D = d
	atEnd(func() {
		_, _ = d.Stop(30 * time.Second)
		_ = d.CleanupMounts()
	})
	e.SD = uuidString()
	run := func(args ...string) error {
		r := d.CLI(ctx, 2*time.Minute, args...)
		if r.Err != nil || r.Code != 0 {
			return fmt.Errorf("%s\ndaemon log:\n%s", r, tailString(d.Log(), 3000))
		}
		return nil
	}
	if err := run("domain", "add", e.Name, "--url", g.URL, "--uuid", e.SD); err != nil {
		return nil, err
	}
	e.MP = filepath.Join(d.MountRoot, e.Name)
	if err := run("mount", e.Name, "--mountpoint", e.MP); err != nil {
		return nil, err
	}
	return e, nil
}

// makeQcow2 builds a 64 MiB qcow2 with two written regions and returns it
// and its local conversion to raw.
func makeQcow2(ctx context.Context) (qcow, raw []byte, err error) {
	dir, err := os.MkdirTemp(env.tmp, "qcow")
	if err != nil {
		return nil, nil, err
	}
	defer os.RemoveAll(dir)
	q, r := filepath.Join(dir, "q.qcow2"), filepath.Join(dir, "q.raw")
	for _, args := range [][]string{
		{"qemu-img", "create", "-q", "-f", "qcow2", q, "64M"},
		{"qemu-io", "-f", "qcow2", "-c", "write -q -P 0xab 0 4M", "-c", "write -q -P 0x5c 40M 1M", "-c", "write -q -P 0x01 63M 512", q},
		{"qemu-img", "convert", "-f", "qcow2", "-O", "raw", q, r},
	} {
		if b, err := exec.CommandContext(ctx, args[0], args[1:]...).CombinedOutput(); err != nil {
			return nil, nil, fmt.Errorf("%s: %w: %s", strings.Join(args, " "), err, b)
		}
	}
	if qcow, err = os.ReadFile(q); err != nil {
		return nil, nil, err
	}
	raw, err = os.ReadFile(r)
	return qcow, raw, err
}

// sparseData is 8 MiB of zeros with 1 MiB + 3 bytes of data in the middle.
func sparseData() []byte {
	b := make([]byte, 8<<20)
	copy(b[3<<20:], harness.RandomBytes(4, 1<<20+3))
	return b
}

func uuidString() string {
	var b [16]byte
	_, _ = rand.Read(b[:]) // crypto/rand.Read never fails
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	return fmt.Sprintf("%x-%x-%x-%x-%x", b[0:4], b[4:6], b[6:8], b[8:10], b[10:16])
}

func tailString(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return "...\n" + s[len(s)-n:]
}
