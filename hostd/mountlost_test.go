package hostd

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// A tree unmounted outside the daemon (umount -l) is noticed: a warning
// names the domain and the mountpoint, status and the domain show it lost,
// not mounted, the record keeps it mounted, and mount mounts it again for
// real. With a file open in the detached tree, mount does not believe the
// tree it still holds. Unmount of a lost domain succeeds and removes the
// directories the daemon made.
func TestMountLostAndMountedAgain(t *testing.T) {
	needFUSE(t)
	e := newTestEnv(t)
	data := []byte(strings.Repeat("lost and found ", 500))
	e.net.glance("http://g").add("img-1", "a.iso", "active", data)
	r := e.start()
	if _, err := r.c.AddDomain(ctx, DomainSpec{Name: "lab", URL: "http://g", UUID: uuidA}); err != nil {
		t.Fatal(err)
	}
	parent := filepath.Join(e.dir, "made")
	mp := filepath.Join(parent, "lab")
	mount := func() {
		t.Helper()
		d, err := r.c.Mount(ctx, "lab", "")
		if err != nil || !d.Active || d.Lost != "" || d.Mountpoint != mp {
			t.Fatalf("mount = %+v, %v", d, err)
		}
		if !fuseMounted(t, mp) {
			t.Fatalf("mount answered %s, but nothing is mounted there", mp)
		}
		if got, err := os.ReadFile(filepath.Join(mp, "by-id", "img-1")); err != nil || string(got) != string(data) {
			t.Fatalf("read through the mount: %d bytes, %v", len(got), err)
		}
		if s, err := r.c.Status(ctx); err != nil || len(s.Mounts) != 1 || s.Mounts[0].Mountpoint != mp || len(s.LostMounts) != 0 {
			t.Fatalf("status after mount: %+v, %v", s, err)
		}
	}
	// lost waits (bounded) until the API shows the domain lost.
	lost := func(why string) {
		t.Helper()
		var s Status
		var d Domain
		deadline := time.Now().Add(10 * time.Second)
		for {
			var err error
			if s, err = r.c.Status(ctx); err != nil {
				t.Fatal(err)
			}
			if d, err = r.c.Domain(ctx, "lab"); err != nil {
				t.Fatal(err)
			}
			if len(s.Mounts) == 0 && len(s.LostMounts) == 1 && !d.Active && d.Lost != "" {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s: status %+v, domain %+v; want the mount lost, not active", why, s, d)
			}
			sleep(20)
		}
		if m := s.LostMounts[0]; m.Domain != "lab" || m.Mountpoint != mp {
			t.Errorf("lost mounts = %+v", s.LostMounts)
		}
		if !d.Mounted || !strings.Contains(d.Lost, mp) || !strings.Contains(d.Lost, "glancegw mount lab") {
			t.Errorf("domain after %s: mounted %v, lost %q", why, d.Mounted, d.Lost)
		}
		if m, p := recordedMounted(t, e, uuidA); !m || p != mp {
			t.Errorf("record after %s: mounted=%v at %q; want kept", why, m, p)
		}
	}

	if _, err := r.c.Mount(ctx, "lab", mp); err != nil {
		t.Fatal(err)
	}
	mount()

	// umount -l with nothing open: the serve loop ends and the daemon
	// notices by itself.
	if err := syscall.Unmount(mp, syscall.MNT_DETACH); err != nil {
		t.Fatal(err)
	}
	lost("umount -l")
	deadline := time.Now().Add(5 * time.Second)
	for !strings.Contains(e.logs.String(), "mount lost") && time.Now().Before(deadline) {
		sleep(20)
	}
	var warned bool
	for _, l := range strings.Split(e.logs.String(), "\n") {
		if strings.Contains(l, "level=WARN") && strings.Contains(l, "mount lost") &&
			strings.Contains(l, "domain=lab") && strings.Contains(l, "mountpoint="+mp) {
			warned = true
		}
	}
	if !warned {
		t.Errorf("no warning naming the domain and the mountpoint in the log:\n%s", e.logs.String())
	}
	mount()

	// umount -l with a file open: the detached tree still serves it, so the
	// loop goes on; status and mount must not believe it.
	f, err := os.Open(filepath.Join(mp, "by-id", "img-1"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := syscall.Unmount(mp, syscall.MNT_DETACH); err != nil {
		t.Fatal(err)
	}
	lost("umount -l with a file open")
	mount()
	if _, err := f.ReadAt(make([]byte, 100), 0); err != nil {
		t.Errorf("read from the file open in the detached tree: %v", err)
	}
	f.Close()

	// Unmount of a lost domain succeeds, forgets it, and removes what the
	// daemon made (the mountpoint and its parent).
	if err := syscall.Unmount(mp, syscall.MNT_DETACH); err != nil {
		t.Fatal(err)
	}
	lost("umount -l before unmount")
	d, err := r.c.Unmount(ctx, "lab")
	if err != nil || d.Active || d.Mounted || d.Lost != "" {
		t.Fatalf("unmount of a lost domain = %+v, %v", d, err)
	}
	if m, _ := recordedMounted(t, e, uuidA); m {
		t.Error("unmount of a lost domain not recorded")
	}
	for _, p := range []string{mp, parent} {
		if _, err := os.Lstat(p); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("%s left after unmount (%v); the daemon made it", p, err)
		}
	}
}
