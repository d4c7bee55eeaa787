package harness

import (
	"bytes"
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"syscall"
	"testing"
	"time"
)

// TestReaperCleansUp checks the safety net: a registered process group is
// killed and a registered dir removed once the reaper's pipe closes.
func TestReaperCleansUp(t *testing.T) {
	root, err := RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	r, err := StartReaper(filepath.Join(root, "test", "glance", "stop.sh"))
	if err != nil {
		t.Fatal(err)
	}
	sleeper := exec.Command("sleep", "300")
	sleeper.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := sleeper.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- sleeper.Wait() }()
	dir := t.TempDir()
	sub := filepath.Join(dir, "junk")
	if err := os.MkdirAll(filepath.Join(sub, "a"), 0o755); err != nil {
		t.Fatal(err)
	}
	r.Add(ReapGroup, strconv.Itoa(sleeper.Process.Pid))
	r.Add(ReapDir, sub)
	r.Add(ReapDir, dir+"/forgotten")
	r.Forget(ReapDir, dir+"/forgotten")
	if err := r.Close(); err != nil {
		t.Fatalf("reaper: %v", err)
	}
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		_ = sleeper.Process.Kill()
		t.Fatal("registered process group still alive after the reaper ran")
	}
	if _, err := os.Stat(sub); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("registered dir still there: %v", err)
	}
}

// TestGlanceLifecycle drives a real Glance through what the fault tests
// need: upload, download, pause (hung), kill (refused), restart with state.
func TestGlanceLifecycle(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a real Glance")
	}
	if m := Missing("glance-api", "glance-manage"); len(m) > 0 {
		t.Skipf("REQUIRED TOOL MISSING: %v (run make deps)", m)
	}
	ctx := context.Background()
	state := filepath.Join(t.TempDir(), "glance")
	g, err := StartGlance(ctx, GlanceConfig{StateDir: state, Port: 9298})
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		if err := g.Stop(); err != nil {
			t.Errorf("stop: %v", err)
		}
		if _, err := os.Stat(state); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("state dir left behind: %v", err)
		}
	}()
	data := RandomBytes(7, 3<<20+123)
	img, err := g.CreateImage(ctx, "h1", "raw", data)
	if err != nil {
		t.Fatal(err)
	}
	got, err := g.Download(ctx, img.ID)
	if err != nil || !bytes.Equal(got, data) {
		t.Fatalf("download: %v, equal=%v", err, bytes.Equal(got, data))
	}

	if err := g.Pause(); err != nil {
		t.Fatal(err)
	}
	short, cancel := context.WithTimeout(ctx, 2*time.Second)
	_, err = g.Image(short, img.ID)
	cancel()
	if err == nil {
		t.Fatal("paused glance answered")
	}
	if err := g.Resume(); err != nil {
		t.Fatal(err)
	}
	if _, err := g.Image(ctx, img.ID); err != nil {
		t.Fatalf("after resume: %v", err)
	}

	if err := g.Kill(); err != nil {
		t.Fatal(err)
	}
	if _, err := g.Image(ctx, img.ID); !errors.Is(err, syscall.ECONNREFUSED) {
		t.Fatalf("killed glance: err %v, want connection refused", err)
	}
	if err := g.Restart(ctx); err != nil {
		t.Fatal(err)
	}
	got, err = g.Download(ctx, img.ID)
	if err != nil || !bytes.Equal(got, data) {
		t.Fatalf("download after restart: %v, equal=%v", err, bytes.Equal(got, data))
	}
	if err := g.DeleteImage(ctx, img.ID); err != nil {
		t.Fatal(err)
	}
	var he *HTTPError
	if _, err := g.Image(ctx, img.ID); !errors.As(err, &he) || he.Status != 404 {
		t.Fatalf("deleted image: %v, want HTTP 404", err)
	}
}
