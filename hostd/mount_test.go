package hostd

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"log/slog"

	"github.com/glancegw/glancegw/cache"
	"github.com/glancegw/glancegw/fs"
	"github.com/glancegw/glancegw/glance"
)

func needFUSE(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("FUSE mount tests run as root")
	}
	if _, err := os.Stat("/dev/fuse"); err != nil {
		t.Skip("no /dev/fuse")
	}
}

// fuseMounted reports whether a FUSE file system is mounted at mp.
func fuseMounted(t *testing.T, mp string) bool {
	t.Helper()
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) > 4 && fields[4] == mp && strings.Contains(sc.Text(), " - fuse") {
			return true
		}
	}
	return false
}

func recordedMounted(t *testing.T, e *testEnv, uuid string) (bool, string) {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(e.cfg.StateDir, "domains.json"))
	if err != nil {
		t.Fatal(err)
	}
	var st stateFile
	if err := json.Unmarshal(b, &st); err != nil {
		t.Fatal(err)
	}
	for _, r := range st.Domains {
		if r.UUID == uuid {
			return r.Mounted, r.Mountpoint
		}
	}
	t.Fatalf("domain %s not in state", uuid)
	return false, ""
}

func TestMountThroughDaemon(t *testing.T) {
	needFUSE(t)
	e := newTestEnv(t)
	data := []byte(strings.Repeat("glance image bytes ", 1000))
	e.net.glance("http://g").add("img-1", "cirros.iso", "active", data)
	r := e.start()
	if _, err := r.c.AddDomain(ctx, DomainSpec{Name: "iso", URL: "http://g", UUID: uuidA}); err != nil {
		t.Fatal(err)
	}
	d, err := r.c.Mount(ctx, "iso", "")
	mp := filepath.Join(e.cfg.MountRoot, "iso")
	if err != nil || !d.Active || !d.Mounted || d.Mountpoint != mp {
		t.Fatalf("mount = %+v, %v", d, err)
	}
	read := func() {
		t.Helper()
		got, err := os.ReadFile(filepath.Join(mp, "by-id", "img-1"))
		if err != nil || string(got) != string(data) {
			t.Fatalf("read through the mount: %d bytes, %v", len(got), err)
		}
		if _, err := os.Stat(filepath.Join(mp, uuidA, "dom_md", "metadata")); err != nil {
			t.Errorf("dom_md/metadata: %v", err)
		}
	}
	read()
	// The same mount again is fine; elsewhere it conflicts.
	if _, err := r.c.Mount(ctx, "iso", mp); err != nil {
		t.Errorf("mount again: %v", err)
	}
	if _, err := r.c.Mount(ctx, "iso", filepath.Join(e.dir, "elsewhere")); !errors.Is(err, ErrConflict) {
		t.Errorf("mount elsewhere: %v, want conflict", err)
	}
	full := filepath.Join(e.dir, "full")
	os.MkdirAll(full, 0o755)
	os.WriteFile(filepath.Join(full, "keep"), nil, 0o644)
	if _, err := r.c.Unmount(ctx, "iso"); err != nil {
		t.Fatal(err)
	}
	if _, err := r.c.Mount(ctx, "iso", full); !errors.Is(err, ErrConflict) {
		t.Errorf("mount over a non-empty dir: %v, want conflict", err)
	}
	if _, err := r.c.Mount(ctx, "iso", ""); err != nil {
		t.Fatal(err)
	}
	if _, err := r.c.Mount(ctx, "iso", "relative"); !errors.Is(err, ErrBadRequest) {
		t.Errorf("relative mountpoint: %v, want bad request", err)
	}
	if s, _ := r.c.Status(ctx); len(s.Mounts) != 1 || s.Mounts[0].Mountpoint != mp {
		t.Errorf("status mounts = %+v", s.Mounts)
	}

	// Shutdown unmounts but keeps the wish; the next start mounts again.
	r.stop(t)
	if fuseMounted(t, mp) {
		t.Fatal("still mounted after shutdown")
	}
	if m, p := recordedMounted(t, e, uuidA); !m || p != mp {
		t.Fatalf("state after shutdown: mounted=%v at %q", m, p)
	}
	r = e.start()
	if !fuseMounted(t, mp) {
		t.Fatal("mount not restored on start")
	}
	read()

	// An explicit unmount is remembered.
	if d, err := r.c.Unmount(ctx, "iso"); err != nil || d.Active || d.Mounted {
		t.Fatalf("unmount = %+v, %v", d, err)
	}
	if fuseMounted(t, mp) {
		t.Fatal("still mounted after unmount")
	}
	if d, err := r.c.Unmount(ctx, "iso"); err != nil || d.Active {
		t.Errorf("second unmount: %+v, %v", d, err)
	}
	r.stop(t)
	if m, _ := recordedMounted(t, e, uuidA); m {
		t.Fatal("unmount not persisted")
	}
	r = e.start()
	if fuseMounted(t, mp) {
		t.Fatal("unmounted domain mounted on start")
	}

	// Remove unmounts first.
	if _, err := r.c.Mount(ctx, uuidA, ""); err != nil {
		t.Fatal(err)
	}
	if err := r.c.RemoveDomain(ctx, "iso"); err != nil {
		t.Fatal(err)
	}
	if fuseMounted(t, mp) {
		t.Error("remove left the mount")
	}
}

// TestStaleMountReplaced leaves a FUSE mount at a recorded mountpoint, as a
// killed daemon would, and checks the next start takes its place.
func TestStaleMountReplaced(t *testing.T) {
	needFUSE(t)
	e := newTestEnv(t)
	e.net.glance("http://g").add("img-1", "new", "active", []byte("fresh"))
	r := e.start()
	if _, err := r.c.AddDomain(ctx, DomainSpec{Name: "iso", URL: "http://g", UUID: uuidA}); err != nil {
		t.Fatal(err)
	}
	if _, err := r.c.Mount(ctx, "iso", ""); err != nil {
		t.Fatal(err)
	}
	r.stop(t)
	mp := filepath.Join(e.cfg.MountRoot, "iso")

	// An orphan tree of another "daemon" that serves other bytes.
	other := newFakeGlance()
	other.add("img-1", "old", "active", []byte("stale"))
	orphanDom := newDomain(DomainRecord{UUID: uuidA, Name: "iso", URL: "http://old"}, secrets{}, domainDeps{
		log: r.d.log, timeout: e.cfg.GlanceTimeout, ttl: e.cfg.RefreshTTL, missMin: e.cfg.MissInterval, now: r.d.now,
		connect: func(_ context.Context, _ glance.Config, _ *slog.Logger) (backend, error) { return other, nil },
		open:    func(s cache.BlockSource) cache.BlockSource { return s },
	})
	// A clean stop removed the mountpoint it made; a killed daemon leaves it.
	if err := os.MkdirAll(mp, 0o755); err != nil {
		t.Fatal(err)
	}
	orphan, err := fs.Mount(ctx, mp, orphanDom, fs.Config{}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer orphan.Unmount()
	if b, err := os.ReadFile(filepath.Join(mp, "by-id", "img-1")); err != nil || string(b) != "stale" {
		t.Fatalf("orphan serves %q, %v", b, err)
	}

	r = e.start()
	b, err := os.ReadFile(filepath.Join(mp, "by-id", "img-1"))
	if err != nil || string(b) != "fresh" {
		t.Fatalf("after start the mount serves %q, %v; want the daemon's own tree", b, err)
	}
}
