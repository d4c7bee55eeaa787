package fs

import (
	"context"
	"errors"
	"fmt"
	iofs "io/fs"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

func newTestCatalog(t *testing.T, d *fakeDomain) (*catalog, *fakeClock) {
	clk := &fakeClock{t: time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)}
	cfg := Config{RefreshTTL: 30 * time.Second, MissInterval: 2 * time.Second}.withDefaults()
	return newCatalog(context.Background(), d, cfg, testLogger(t), clk.now), clk
}

func TestCatalogTTL(t *testing.T) {
	d := newFakeDomain()
	fixture(d)
	c, clk := newTestCatalog(t, d)
	ctx := context.Background()
	for i := 0; i < 3; i++ {
		if _, err := c.get(ctx); err != nil {
			t.Fatal(err)
		}
	}
	if n := d.lists.Load(); n != 1 {
		t.Fatalf("%d listings within the TTL, want 1", n)
	}
	clk.advance(31 * time.Second)
	v, err := c.get(ctx)
	if err != nil || d.lists.Load() != 2 {
		t.Fatalf("after the TTL: %d listings, err %v; want 2", d.lists.Load(), err)
	}
	if len(v.images) != 10 {
		t.Errorf("view has %d images, want the 10 active", len(v.images))
	}
}

func TestCatalogMissRateLimit(t *testing.T) {
	d := newFakeDomain()
	c, clk := newTestCatalog(t, d)
	ctx := context.Background()
	if _, listed, err := c.miss(ctx); !listed || err != nil {
		t.Fatalf("first miss: listed %v, err %v", listed, err)
	}
	if _, listed, _ := c.miss(ctx); listed {
		t.Fatal("second miss within MissInterval listed again")
	}
	clk.advance(2 * time.Second)
	if _, listed, _ := c.miss(ctx); !listed {
		t.Fatal("miss after MissInterval did not list")
	}
	if n := d.lists.Load(); n != 2 {
		t.Errorf("%d listings, want 2", n)
	}
}

func TestCatalogErrors(t *testing.T) {
	d := newFakeDomain()
	fixture(d)
	d.listErr = errors.New("glance down")
	c, clk := newTestCatalog(t, d)
	ctx := context.Background()
	if _, err := c.get(ctx); err == nil || !strings.Contains(err.Error(), "glance down") {
		t.Fatalf("never listed and glance down: err = %v", err)
	}
	// No hammering: within MissInterval the failure is answered at once.
	if _, err := c.get(ctx); !errors.Is(err, ErrNotListed) || d.lists.Load() != 1 {
		t.Fatalf("retry within MissInterval: err %v, %d listings", err, d.lists.Load())
	}
	clk.advance(3 * time.Second)
	d.mu.Lock()
	d.listErr = nil
	d.mu.Unlock()
	if v, err := c.get(ctx); err != nil || len(v.images) != 10 {
		t.Fatalf("after recovery: %v", err)
	}
	// A failure after a good listing keeps serving the last good view.
	d.mu.Lock()
	d.listErr = errors.New("glance down again")
	d.mu.Unlock()
	clk.advance(time.Minute)
	if v, err := c.get(ctx); err != nil || len(v.images) != 10 {
		t.Fatalf("stale-on-error: %v", err)
	}
}

func TestCatalogSharesListing(t *testing.T) {
	d := newFakeDomain()
	release := make(chan struct{})
	d.listHook = func() { <-release }
	c, _ := newTestCatalog(t, d)
	var wg sync.WaitGroup
	for i := 0; i < 8; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if _, err := c.get(context.Background()); err != nil {
				t.Error(err)
			}
		}()
	}
	// A caller that gives up does not wait for the listing.
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if _, err := c.get(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("impatient caller: err = %v", err)
	}
	close(release)
	wg.Wait()
	if n := d.lists.Load(); n != 1 {
		t.Errorf("%d listings for concurrent callers, want 1", n)
	}
}

type nfErr struct{ nf bool }

func (e nfErr) Error() string  { return fmt.Sprintf("nf=%v", e.nf) }
func (e nfErr) NotFound() bool { return e.nf }

func TestTranslateError(t *testing.T) {
	log := testLogger(t)
	for _, tc := range []struct {
		err  error
		want syscall.Errno
	}{
		{nil, 0},
		{ErrNotFound, syscall.ENOENT},
		{fmt.Errorf("fs: lookup: %w", ErrNotFound), syscall.ENOENT},
		{fmt.Errorf("glance: get: %w", nfErr{true}), syscall.ENOENT},
		{fmt.Errorf("glance: get: %w", nfErr{false}), syscall.EIO},
		{iofs.ErrNotExist, syscall.ENOENT},
		{ErrReadOnly, syscall.EROFS},
		{fmt.Errorf("read: %w", context.Canceled), syscall.EINTR},
		{fmt.Errorf("read: %w", context.DeadlineExceeded), syscall.EIO},
		{errors.New("something odd"), syscall.EIO},
		{fmt.Errorf("dial: %w", syscall.ECONNREFUSED), syscall.EIO},
	} {
		if got := translateError(log, "test", tc.err); got != tc.want {
			t.Errorf("translateError(%v) = %v, want %v", tc.err, got, tc.want)
		}
	}
}

func TestXattrProtocol(t *testing.T) {
	xs := imageXattrs(&Image{ID: "abc", DiskFormat: "raw", VirtualSize: 42})
	if n, errno := getxattr(xs, "user.glance.id", nil); n != 3 || errno != syscall.ERANGE {
		t.Errorf("size query = %d, %v; want 3, ERANGE", n, errno)
	}
	if n, errno := getxattr(xs, "user.glance.id", make([]byte, 2)); n != 3 || errno != syscall.ERANGE {
		t.Errorf("small buffer = %d, %v; want 3, ERANGE", n, errno)
	}
	buf := make([]byte, 10)
	if n, errno := getxattr(xs, "user.glance.virtual_size", buf); errno != 0 || string(buf[:n]) != "42" {
		t.Errorf("get = %q, %v", buf[:n], errno)
	}
	if _, errno := getxattr(xs, "user.glance.checksum", buf); errno != syscall.ENODATA {
		t.Errorf("unknown checksum: %v, want ENODATA", errno)
	}
	want := "user.glance.disk_format\x00user.glance.id\x00user.glance.virtual_size\x00"
	if n, errno := listxattr(xs, nil); n != uint32(len(want)) || errno != syscall.ERANGE {
		t.Errorf("list size = %d, %v", n, errno)
	}
	lb := make([]byte, 100)
	if n, errno := listxattr(xs, lb); errno != 0 || string(lb[:n]) != want {
		t.Errorf("list = %q, %v", lb[:n], errno)
	}
}

func TestFuseMountsAt(t *testing.T) {
	mi := `22 1 0:21 / /proc rw,nosuid - proc proc rw
97 29 0:50 / /run/glancegw/mnt/my\040dom rw,nosuid,nodev shared:55 - fuse.glancegw glancegw:dom ro,user_id=0
98 29 0:51 / /run/glancegw/mnt/my\040dom rw - fuse.glancegw glancegw:dom ro
99 29 0:52 / /run/glancegw/mnt/other rw - fuse.sshfs x rw
100 29 0:53 / /run/glancegw/mnt/my\040dom/tmp rw - tmpfs tmpfs rw
101 29 0:54 / /mnt/t rw - tmpfs tmpfs rw
garbage line
`
	for _, tc := range []struct {
		path string
		want int
	}{
		{"/run/glancegw/mnt/my dom", 2},
		{"/run/glancegw/mnt/other", 1},
		{"/mnt/t", 0}, // not FUSE
		{"/nowhere", 0},
	} {
		got, err := fuseMountsAt(strings.NewReader(mi), tc.path)
		if err != nil || len(got) != tc.want {
			t.Errorf("fuseMountsAt(%q) = %q, %v; want %d mounts", tc.path, got, err, tc.want)
		}
	}
	// Stacked mounts in mountinfo's order, told apart by their device.
	got, err := mountsAt(strings.NewReader(mi), "/run/glancegw/mnt/my dom")
	want := []mountEntry{{"0:50", "fuse.glancegw"}, {"0:51", "fuse.glancegw"}}
	if err != nil || len(got) != 2 || got[0] != want[0] || got[1] != want[1] {
		t.Errorf("mountsAt = %+v, %v; want %+v", got, err, want)
	}
}

// shortSource claims more bytes than it has.
type shortSource struct{ memSource }

func (s *shortSource) Size() int64 { return int64(len(s.data)) + 100 }

func TestReadImageShortSource(t *testing.T) {
	d := newFakeDomain()
	tr := newTree(context.Background(), d, suiteConfig().withDefaults(), testLogger(t), time.Now)
	img := &Image{ID: "x", Size: 110}
	src := &shortSource{memSource{data: make([]byte, 10)}}
	_, err := tr.readImage(context.Background(), src, img, make([]byte, 50), 0)
	if !errors.Is(err, ErrShortSource) {
		t.Errorf("short source: err = %v, want ErrShortSource", err)
	}
	if n, err := tr.readImage(context.Background(), src, img, make([]byte, 5), 200); n != 0 || err != nil {
		t.Errorf("read past the image: %d, %v; want 0, nil (EOF)", n, err)
	}
}
