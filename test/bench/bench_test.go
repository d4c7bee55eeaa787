// Package bench compares glancegw with the tools a user would otherwise use,
// side by side on the same machine, as ratios of median throughput. Runs
// alternate between the two sides because the machine is noisy.
//
// Run with `make bench` (GLANCEGW_BENCH=1); plain `go test ./...` skips it.
package bench

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/glancegw/glancegw/test/harness"
)

const (
	glancePort   = 9494
	keystonePort = 5494
	runs         = 5
)

// env is what every row shares: one Glance, the binary, a scratch dir.
type env struct {
	t      *testing.T
	ctx    context.Context
	bin    string
	dir    string
	glance *harness.Glance
	reaper *harness.Reaper
}

func TestBench(t *testing.T) {
	if os.Getenv("GLANCEGW_BENCH") != "1" {
		t.Skip("BENCHMARKS NOT RUN: set GLANCEGW_BENCH=1 (make bench) to run them")
	}
	if miss := harness.Missing("glance-api", "curl", "dd", "nbdcopy", "qemu-nbd", "nbdkit", "nginx"); len(miss) > 0 {
		t.Skipf("REQUIRED TOOL MISSING: %v (run make deps)", miss)
	}
	e := setup(t)
	// Each group reports as soon as it is done, so a late failure keeps the
	// figures already measured.
	// GLANCEGW_BENCH_ONLY=nbd,transfer runs only those groups.
	only := os.Getenv("GLANCEGW_BENCH_ONLY")
	for _, g := range []struct {
		name string
		run  func(*env) []row
	}{{"mount", benchMount}, {"nbd", benchNBD}, {"transfer", benchTransfer}} {
		if only == "" || slices.Contains(strings.Split(only, ","), g.name) {
			report(t, g.run(e))
		}
	}
}

func setup(t *testing.T) *env {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	bin := os.Getenv("GLANCEGW_BIN")
	if bin == "" {
		t.Fatal("GLANCEGW_BIN is not set (make bench sets it)")
	}
	root, err := harness.RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	reaper, err := harness.StartReaper(filepath.Join(root, "test/glance/stop.sh"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = reaper.Close() })
	dir, err := os.MkdirTemp("", "ggb")
	if err != nil {
		t.Fatal(err)
	}
	// nginx's workers (not root) serve the local copies from here.
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.RemoveAll(dir) })
	g, err := harness.StartGlance(ctx, harness.GlanceConfig{
		Port: glancePort, KeystonePort: keystonePort,
		StateDir: filepath.Join(dir, "glance"), Reaper: reaper,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = g.Stop() })
	return &env{t: t, ctx: ctx, bin: bin, dir: dir, glance: g, reaper: reaper}
}

// image writes size pseudo-random bytes to a local file and uploads it.
func (e *env) image(name string, size int64) (id, local string) {
	e.t.Helper()
	local = filepath.Join(e.dir, name+".raw")
	f, err := os.Create(local)
	if err != nil {
		e.t.Fatal(err)
	}
	const chunk = 8 << 20
	for off := int64(0); off < size; off += chunk {
		n := min(chunk, size-off)
		if _, err := f.Write(harness.RandomBytes(uint64(off)^uint64(len(name)), int(n))); err != nil {
			e.t.Fatal(err)
		}
	}
	if err := f.Close(); err != nil {
		e.t.Fatal(err)
	}
	id, err = e.glance.CreateRecord(e.ctx, map[string]any{"name": name, "disk_format": "raw", "container_format": "bare"})
	if err != nil {
		e.t.Fatal(err)
	}
	// curl -T streams the file as a user's upload would, without a client timeout.
	_ = e.timed(size, "curl", "-sf", "-X", "PUT", "-H", "Content-Type: application/octet-stream",
		"-T", local, e.glance.URL+"/v2/images/"+id+"/file")
	return id, local
}

// daemon starts `glancegw serve` in dir with one domain "bench" mounted.
// Starting again with the same dir restores the mount (a cold cache).
func (e *env) daemon(dir string, args ...string) *harness.Daemon {
	e.t.Helper()
	fresh := true
	if _, err := os.Stat(dir); err == nil {
		fresh = false
	}
	d, err := harness.StartDaemon(e.ctx, harness.DaemonConfig{Bin: e.bin, Dir: dir, Args: args, Reaper: e.reaper})
	if err != nil {
		e.t.Fatal(err)
	}
	if fresh {
		for _, a := range [][]string{{"domain", "add", "bench", "--url", e.glance.URL}, {"mount", "bench"}} {
			if r := d.CLI(e.ctx, 30*time.Second, a...); r.Code != 0 {
				e.t.Fatalf("glancegw %v: %s", a, r)
			}
		}
	}
	return d
}

func (e *env) stop(d *harness.Daemon) {
	e.t.Helper()
	if code, err := d.Stop(30 * time.Second); err != nil || code != 0 {
		e.t.Fatalf("daemon stop: code %d, %v\n%s", code, err, d.Log())
	}
}

// timed runs a command and returns bytes/second for size bytes.
func (e *env) timed(size int64, name string, args ...string) float64 {
	e.t.Helper()
	ctx, cancel := context.WithTimeout(e.ctx, 10*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	start := time.Now()
	out, err := cmd.CombinedOutput()
	el := time.Since(start)
	if err != nil {
		e.t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return float64(size) / el.Seconds()
}

func dd(path string) []string { return []string{"if=" + path, "of=/dev/null", "bs=1M", "status=none"} }

// row is one comparison: ours against theirs, medians over alternating runs.
type row struct {
	name, ours, theirs string
	our, their         []float64
	target             float64
	extra              string
}

func median(xs []float64) float64 {
	s := append([]float64(nil), xs...)
	sort.Float64s(s)
	if len(s) == 0 {
		return 0
	}
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

func mbs(xs []float64) string {
	parts := make([]string, len(xs))
	for i, x := range xs {
		parts[i] = fmt.Sprintf("%.0f", x/1e6)
	}
	return strings.Join(parts, " ")
}

func report(t *testing.T, rows []row) {
	var b strings.Builder
	fmt.Fprintf(&b, "\n%-44s %10s %10s %7s %7s  %s\n", "comparison (median MB/s over alternating runs)", "ours", "theirs", "ratio", "target", "")
	for _, r := range rows {
		if r.extra != "" {
			fmt.Fprintf(&b, "%-44s %s\n", r.name, r.extra)
			continue
		}
		om, tm := median(r.our), median(r.their)
		verdict := "ok"
		if r.target == 0 {
			verdict = "(no target)"
		} else if om/tm < r.target {
			verdict = "BELOW TARGET"
		}
		fmt.Fprintf(&b, "%-44s %10.0f %10.0f %7.2f %7.2f  %s\n", r.name, om/1e6, tm/1e6, om/tm, r.target, verdict)
		fmt.Fprintf(&b, "    ours   = %s: %s\n    theirs = %s: %s\n", r.ours, mbs(r.our), r.theirs, mbs(r.their))
	}
	t.Log(b.String())
	fmt.Print(b.String())
}
