package hostd

import (
	"os"
	"path/filepath"
	"testing"
)

// Unmounting removes the mountpoint directories the daemon created (when
// empty), and never one it found.
func TestUnmountRemovesCreatedMountpoint(t *testing.T) {
	needFUSE(t)
	e := newTestEnv(t)
	e.net.glance("http://g").add("img-1", "a.iso", "active", []byte("bytes"))
	r := e.start()
	if _, err := r.c.AddDomain(ctx, DomainSpec{Name: "iso", URL: "http://g", UUID: uuidA}); err != nil {
		t.Fatal(err)
	}
	exists := func(p string) bool {
		_, err := os.Lstat(p)
		return err == nil
	}
	mountUnmount := func(mp string) string {
		t.Helper()
		m, err := r.c.Mount(ctx, "iso", mp)
		if err != nil || !fuseMounted(t, m.Mountpoint) {
			t.Fatalf("mount at %q: %+v, %v", mp, m, err)
		}
		if _, err := r.c.Unmount(ctx, "iso"); err != nil {
			t.Fatal(err)
		}
		return m.Mountpoint
	}

	// Created with a parent: both go.
	parent := filepath.Join(e.dir, "made")
	if mp := mountUnmount(filepath.Join(parent, "here")); exists(mp) || exists(parent) {
		t.Errorf("after unmount: %s exists %v, %s exists %v; want both removed", mp, exists(mp), parent, exists(parent))
	}
	if !exists(e.dir) {
		t.Fatal("removed a directory it did not create")
	}
	// Found: it stays.
	found := filepath.Join(e.dir, "found")
	if err := os.Mkdir(found, 0o700); err != nil {
		t.Fatal(err)
	}
	if mountUnmount(found); !exists(found) {
		t.Errorf("a mountpoint that existed before was removed")
	}
	// The default one under the mount root goes, the root stays.
	if mp := mountUnmount(""); exists(mp) || !exists(e.cfg.MountRoot) {
		t.Errorf("default mountpoint %s exists %v (want removed), mount root exists %v", mp, exists(mp), exists(e.cfg.MountRoot))
	}

	// Shutdown unmounts and removes what it made; the next start makes it
	// again and mounts there.
	mp := filepath.Join(e.dir, "made2", "here")
	if _, err := r.c.Mount(ctx, "iso", mp); err != nil {
		t.Fatal(err)
	}
	r.stop(t)
	if exists(mp) || exists(filepath.Dir(mp)) {
		t.Errorf("after shutdown %s is left", mp)
	}
	r = e.start()
	if !fuseMounted(t, mp) {
		t.Fatalf("not mounted again at %s after a restart", mp)
	}
	if _, err := r.c.Unmount(ctx, "iso"); err != nil {
		t.Fatal(err)
	}
	if exists(mp) || exists(filepath.Dir(mp)) {
		t.Errorf("after unmount (mounted by a restart): %s is left", mp)
	}
}
