package e2e

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/glancegw/glancegw/test/harness"
)

// Ports: the shared noauth Glance uses GLANCE_PORT (9292); the others are
// fixed and kept clear of the glance package's own tests (9390/5090) and of
// the harness self-test (9298); usability_test.go uses 9398/5398.
const (
	faultGlancePort    = 9294
	nbdDownGlancePort  = 9596 // TestNBDGlanceDownAfterRestart
	keystoneGlancePort = 9492
	keystonePort       = 5492
	// tokenLifetime is the Keystone token lifetime of the keystone test.
	tokenLifetime = 60 * time.Second
)

// env is what TestMain sets up for every test; the expensive parts are
// started on first use (see shared.go).
var env struct {
	root     string // repository root
	bin      string // glancegw binary
	tmp      string // parent of all temp dirs of this run (short: socket paths)
	reaper   *harness.Reaper
	buildErr error

	mu      sync.Mutex
	cleanup []func() // run in reverse at the end
}

func TestMain(m *testing.M) {
	flag.Parse()
	// Most tests wait on I/O (Glance, FUSE, token expiry), not CPU: run
	// them together unless the caller chose -parallel.
	parallelSet := false
	flag.Visit(func(f *flag.Flag) { parallelSet = parallelSet || f.Name == "test.parallel" })
	if !parallelSet {
		_ = flag.Set("test.parallel", "8")
	}
	os.Exit(run(m))
}

func run(m *testing.M) int {
	root, err := harness.RepoRoot()
	if err != nil {
		fmt.Fprintln(os.Stderr, "e2e:", err)
		return 1
	}
	env.root = root
	env.tmp, err = os.MkdirTemp("", "ggw-e2e-")
	if err != nil {
		fmt.Fprintln(os.Stderr, "e2e:", err)
		return 1
	}
	env.reaper, err = harness.StartReaper(filepath.Join(root, "test", "glance", "stop.sh"))
	if err != nil {
		fmt.Fprintln(os.Stderr, "e2e:", err)
		return 1
	}
	env.reaper.Add(harness.ReapMounts, env.tmp)
	env.bin, env.buildErr = binary(root, env.tmp)

	code := m.Run()

	env.mu.Lock()
	fns := env.cleanup
	env.cleanup = nil
	env.mu.Unlock()
	for i := len(fns) - 1; i >= 0; i-- {
		fns[i]()
	}
	if code == 0 || os.Getenv("GLANCEGW_E2E_KEEP") != "1" {
		env.reaper.Add(harness.ReapDir, env.tmp)
	} else {
		fmt.Fprintf(os.Stderr, "e2e: FAILED; kept %s (daemon logs, glance state)\n", env.tmp)
	}
	if err := env.reaper.Close(); err != nil {
		fmt.Fprintln(os.Stderr, "e2e: reaper:", err)
	}
	return code
}

// atEnd registers f to run after all tests (shared resources).
func atEnd(f func()) {
	env.mu.Lock()
	defer env.mu.Unlock()
	env.cleanup = append(env.cleanup, f)
}

// binary returns GLANCEGW_BIN, or builds bin/glancegw.
func binary(root, tmp string) (string, error) {
	if b := os.Getenv("GLANCEGW_BIN"); b != "" {
		if _, err := os.Stat(b); err != nil {
			return "", fmt.Errorf("GLANCEGW_BIN: %w", err)
		}
		return b, nil
	}
	out := filepath.Join(root, "bin", "glancegw")
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "go", "build", "-o", out, "./cmd/glancegw")
	cmd.Dir = root
	if b, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("go build ./cmd/glancegw: %w\n%s", err, b)
	}
	return out, nil
}

// glancePort is the shared noauth Glance's port.
func glancePort() int {
	if p, err := strconv.Atoi(os.Getenv("GLANCE_PORT")); err == nil && p > 0 {
		return p
	}
	return 9292
}
