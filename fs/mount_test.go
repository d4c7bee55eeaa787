package fs

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"syscall"
	"testing"
	"time"
)

// needFUSE skips unless a real mount is possible here.
func needFUSE(t testing.TB) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("real FUSE mounts need root (DirectMount)")
	}
	if _, err := os.Stat("/dev/fuse"); err != nil {
		t.Skip("no /dev/fuse")
	}
}

// mountTest mounts d in a temp dir and unmounts it when the test ends.
func mountTest(t testing.TB, d Domain, cfg Config) (*Server, string) {
	t.Helper()
	needFUSE(t)
	dir := t.TempDir()
	s, err := Mount(context.Background(), dir, d, cfg, testLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		done := make(chan error, 1)
		go func() { done <- s.Unmount() }()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("unmount: %v", err)
			}
		case <-time.After(10 * time.Second):
			t.Errorf("unmount hangs")
		}
	})
	return s, dir
}

func TestMount(t *testing.T) {
	runSuite(t, func(t *testing.T, d *fakeDomain) suiteFS {
		_, dir := mountTest(t, d, suiteConfig())
		return mountFS{dir}
	})
}

func TestMountInfo(t *testing.T) {
	d := newFakeDomain()
	fixture(d)
	_, dir := mountTest(t, d, suiteConfig())
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	types, err := fuseMountsAt(f, dir)
	if err != nil || len(types) != 1 || types[0] != "fuse.glancegw" {
		t.Fatalf("mountinfo at %s: %q, %v; want one fuse.glancegw mount", dir, types, err)
	}
	var st syscall.Statfs_t
	if err := syscall.Statfs(dir, &st); err != nil {
		t.Fatal(err)
	}
	if st.Flags&syscall.MS_RDONLY == 0 {
		t.Errorf("mount is not read-only: flags %#x", st.Flags)
	}
}

func TestUnmountWithOpenFile(t *testing.T) {
	d := newFakeDomain()
	fixture(d)
	s, dir := mountTest(t, d, suiteConfig())
	f, err := os.Open(filepath.Join(dir, "by-id", idISO))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	done := make(chan error, 1)
	go func() { done <- s.Unmount() }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("unmount with an open file: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("unmount with an open file hangs")
	}
	// The open file still reads (lazy detach), the mountpoint is free.
	if _, err := f.ReadAt(make([]byte, 4096), 0); err != nil {
		t.Errorf("read from the detached file: %v", err)
	}
	mi, _ := os.Open("/proc/self/mountinfo")
	defer mi.Close()
	if types, _ := fuseMountsAt(mi, dir); len(types) != 0 {
		t.Errorf("still mounted after Unmount: %q", types)
	}
	f.Close()
	waited := make(chan struct{})
	go func() { s.Wait(); close(waited) }()
	select {
	case <-waited:
	case <-time.After(10 * time.Second):
		t.Error("serve loop did not end after the last close")
	}
}

// waitDone waits (bounded) for the serve loop of s to end.
func waitDone(t *testing.T, s *Server, why string) {
	t.Helper()
	select {
	case <-s.Done():
	case <-time.After(10 * time.Second):
		t.Fatalf("serve loop still running 10s after %s", why)
	}
}

// TestMountLost: a tree someone else unmounts ends its serve loop, is Lost,
// is no longer Attached, and its Unmount succeeds without touching the
// mount that took its place.
func TestMountLost(t *testing.T) {
	d := newFakeDomain()
	fixture(d)
	s, dir := mountTest(t, d, suiteConfig())
	if ok, err := s.Attached(); err != nil || !ok || s.Lost() {
		t.Fatalf("fresh mount: attached %v (%v), lost %v; want attached, not lost", ok, err, s.Lost())
	}
	// What `umount -l` does.
	if err := syscall.Unmount(dir, syscall.MNT_DETACH); err != nil {
		t.Fatal(err)
	}
	waitDone(t, s, "an external umount -l")
	if ok, err := s.Attached(); err != nil || ok || !s.Lost() {
		t.Fatalf("after umount -l: attached %v (%v), lost %v; want lost", ok, err, s.Lost())
	}

	// A new tree at the same place; letting the old one go must not
	// unmount it.
	s2, err := Mount(context.Background(), dir, d, suiteConfig(), testLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	defer s2.Unmount()
	start := time.Now()
	if err := s.Unmount(); err != nil {
		t.Fatalf("Unmount of a lost mount: %v", err)
	}
	if el := time.Since(start); el > time.Second {
		t.Errorf("Unmount of a lost mount took %v", el)
	}
	if ok, err := s2.Attached(); err != nil || !ok {
		t.Fatalf("the new mount after the old one's Unmount: attached %v, %v", ok, err)
	}
	if _, err := os.Stat(filepath.Join(dir, "by-id", idISO)); err != nil {
		t.Errorf("the new mount: %v", err)
	}
	if err := s2.Unmount(); err != nil {
		t.Fatal(err)
	}
	waitDone(t, s2, "Unmount")
	if s2.Lost() {
		t.Error("a tree ended by Unmount reports Lost")
	}
}

// TestMountDetachedWithOpenFile: after an external umount -l with a file
// open, the tree still serves that file but is not Attached; Unmount lets it
// go without touching the new mount at its place, and the loop ends with
// the last close.
func TestMountDetachedWithOpenFile(t *testing.T) {
	d := newFakeDomain()
	fixture(d)
	s, dir := mountTest(t, d, suiteConfig())
	f, err := os.Open(filepath.Join(dir, "by-id", idISO))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := syscall.Unmount(dir, syscall.MNT_DETACH); err != nil {
		t.Fatal(err)
	}
	if ok, err := s.Attached(); err != nil || ok {
		t.Fatalf("after umount -l with a file open: attached %v, %v; want false", ok, err)
	}
	select {
	case <-s.Done():
		t.Fatal("serve loop ended while a file is open in the detached tree")
	default:
	}
	s2, err := Mount(context.Background(), dir, d, suiteConfig(), testLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	defer s2.Unmount()
	done := make(chan error, 1)
	go func() { done <- s.Unmount() }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Unmount of a detached mount: %v", err)
		}
	case <-time.After(5 * time.Second):
		// A test process that exits with a file open in its own dead
		// tree hangs in the kernel: close it first.
		f.Close()
		t.Fatal("Unmount of a detached mount hangs (it waited for a serve loop that a file keeps open)")
	}
	if ok, err := s2.Attached(); err != nil || !ok {
		t.Fatalf("the new mount after the old one's Unmount: attached %v, %v", ok, err)
	}
	if _, err := f.ReadAt(make([]byte, 4096), 0); err != nil {
		t.Errorf("read from the file open in the detached tree: %v", err)
	}
	f.Close()
	waitDone(t, s, "the last close")
}

// staleMount leaves a FUSE mount at dir whose server is gone: the same
// state a SIGKILLed daemon leaves (the kernel aborts the connection when
// the last /dev/fuse descriptor closes).
func staleMount(t *testing.T, dir string) {
	t.Helper()
	fd, err := syscall.Open("/dev/fuse", syscall.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	opts := "fd=" + strconv.Itoa(fd) + ",rootmode=40000,user_id=0,group_id=0"
	if err := syscall.Mount("glancegw:stale", dir, "fuse.glancegw", syscall.MS_NOSUID|syscall.MS_NODEV, opts); err != nil {
		syscall.Close(fd)
		t.Fatalf("raw fuse mount: %v", err)
	}
	syscall.Close(fd)
	var st syscall.Stat_t
	if err := syscall.Stat(dir, &st); !errors.Is(err, syscall.ENOTCONN) {
		t.Fatalf("stat of a dead mount: %v, want ENOTCONN", err)
	}
}

func TestCleanStale(t *testing.T) {
	needFUSE(t)
	dir := t.TempDir()
	staleMount(t, dir)
	staleMount(t, dir) // stacked: both must go
	if err := CleanStale(dir); err != nil {
		t.Fatalf("CleanStale: %v", err)
	}
	var st syscall.Stat_t
	if err := syscall.Stat(dir, &st); err != nil {
		t.Fatalf("stat after CleanStale: %v", err)
	}
	// A new daemon can mount there again.
	d := newFakeDomain()
	fixture(d)
	s, err := Mount(context.Background(), dir, d, suiteConfig(), testLogger(t))
	if err != nil {
		t.Fatalf("mount after CleanStale: %v", err)
	}
	defer s.Unmount()
	if _, err := os.Stat(filepath.Join(dir, "by-id", idISO)); err != nil {
		t.Errorf("new mount: %v", err)
	}
	// Nothing to clean is not an error.
	if err := CleanStale(t.TempDir()); err != nil {
		t.Errorf("CleanStale of a plain dir: %v", err)
	}
}

// TestMountMmap: direct I/O files still map (DIRECT_IO_ALLOW_MMAP).
func TestMountMmap(t *testing.T) {
	d := newFakeDomain()
	fixture(d)
	cfg := suiteConfig()
	cfg.DirectIO = true
	_, dir := mountTest(t, d, cfg)
	f, err := os.Open(filepath.Join(dir, "by-id", idQcow))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	m, err := syscall.Mmap(int(f.Fd()), 0, 1<<20, syscall.PROT_READ, syscall.MAP_SHARED)
	if err != nil {
		t.Fatalf("mmap: %v", err)
	}
	defer syscall.Munmap(m)
	// Touching m from Go code would fault into our own FUSE server while the
	// goroutine is not in a syscall, and a GC stop-the-world would then
	// deadlock. Let the kernel fault the pages in, inside write(2).
	tmp, err := os.CreateTemp(t.TempDir(), "mmap")
	if err != nil {
		t.Fatal(err)
	}
	defer tmp.Close()
	if _, err := tmp.Write(m); err != nil {
		t.Fatalf("copy mapped bytes: %v", err)
	}
	got, err := os.ReadFile(tmp.Name())
	if err != nil || !bytes.Equal(got, d.bytes(idQcow)) {
		t.Error("mapped bytes differ from the image")
	}
}

// TestMountDirectIO runs the content checks with direct I/O.
func TestMountDirectIO(t *testing.T) {
	d := newFakeDomain()
	fixture(d)
	cfg := suiteConfig()
	cfg.DirectIO = true
	_, dir := mountTest(t, d, cfg)
	caseContent(t, d, mountFS{dir})
}

// TestMountReadAhead: the mount's read-ahead is raised to MaxReadAhead (the
// kernel starts a FUSE mount at 128 KiB).
func TestMountReadAhead(t *testing.T) {
	d := newFakeDomain()
	fixture(d)
	cfg := suiteConfig()
	cfg.MaxReadAhead = 2 << 20
	_, dir := mountTest(t, d, cfg)
	if got := bdiReadAhead(dir); got != "2048" {
		t.Errorf("read_ahead_kb = %s, want 2048", got)
	}
}
