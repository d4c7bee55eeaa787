package e2e

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/glancegw/glancegw/test/harness"
)

// faultBound is the longest a read may take to fail while Glance is hung or
// gone (the design: bounded retries, then EIO, never a hang).
const faultBound = 60 * time.Second

// TestGlanceDown: with Glance hung (SIGSTOP) or gone (SIGKILL), FUSE reads
// fail with EIO and NBD reads with an I/O error within faultBound, and the
// next read after Glance is back succeeds. Own Glance and daemon: this test
// breaks them.
func TestGlanceDown(t *testing.T) {
	t.Parallel()
	requireTools(t, "/dev/fuse", "fusermount3", "nbdcopy")
	requireBinary(t)
	ctx := context.Background()
	g := startGlance(t, harness.GlanceConfig{Port: faultGlancePort})
	data := harness.RandomBytes(11, 48<<20)
	img, err := g.CreateImage(ctx, "fault.raw", "raw", data)
	if err != nil {
		t.Fatal(err)
	}
	hungData, goneData := harness.RandomBytes(12, 8<<20), harness.RandomBytes(13, 8<<20)
	nbdHung, err := g.CreateImage(ctx, "fault-nbd-hung.raw", "raw", hungData)
	if err != nil {
		t.Fatal(err)
	}
	nbdGone, err := g.CreateImage(ctx, "fault-nbd-gone.raw", "raw", goneData)
	if err != nil {
		t.Fatal(err)
	}
	d := startDaemon(t, newDir(t, "flt"))
	sd, mp := addAndMount(t, d, "flt", g.URL)

	f, err := os.Open(filepath.Join(mp, "by-id", img.ID))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	buf := make([]byte, 1<<20)
	if r := preadWithin(f, buf, 0, faultBound); r.Err != nil || r.Hung || !bytes.Equal(buf, data[:1<<20]) {
		t.Fatalf("first read with Glance up: %+v", r)
	}

	// fuseFails reads 1 MiB at off (not read before, so not cached) and
	// wants EIO within the bound.
	fuseFails := func(t *testing.T, off int64) {
		r := preadWithin(f, buf, off, faultBound)
		if r.Hung {
			t.Fatalf("FUSE read at %d still blocked after %v: a hang, not EIO", off, faultBound)
		}
		if !errors.Is(r.Err, syscall.EIO) {
			t.Fatalf("FUSE read at %d with Glance down: n=%d err=%v, want EIO", off, r.N, r.Err)
		}
		t.Logf("FUSE read failed with EIO after %v (bound %v)", r.Elapsed.Round(time.Millisecond), faultBound)
	}
	fuseWorks := func(t *testing.T, off int64) {
		r := preadWithin(f, buf, off, faultBound)
		if r.Hung || r.Err != nil || !bytes.Equal(buf, data[off:off+int64(len(buf))]) {
			t.Fatalf("FUSE read at %d after Glance came back: %+v identical=%v", off, r, bytes.Equal(buf, data[off:off+int64(len(buf))]))
		}
		t.Logf("FUSE read after recovery took %v", r.Elapsed.Round(time.Millisecond))
	}
	// nbdFails copies a whole export (never read before) and wants the
	// client to report an I/O error within the bound.
	nbdFails := func(t *testing.T, id string) {
		start := time.Now()
		out, err := tool(t, faultBound, "nbdcopy", "--connections", "4", "nbd+unix:///"+sd+"/"+id+"?socket="+d.NBDSocket, "null:")
		if err == nil {
			t.Fatalf("nbdcopy succeeded with Glance down:\n%s", out)
		}
		if !strings.Contains(out, "Input/output error") {
			t.Fatalf("nbdcopy failed, but not with an I/O error: %v\n%s", err, out)
		}
		t.Logf("NBD client got an I/O error after %v (bound %v)", time.Since(start).Round(time.Millisecond), faultBound)
	}
	nbdWorks := func(t *testing.T, id string, want []byte) {
		dst := filepath.Join(newDir(t, "fn"), "out")
		mustTool(t, "nbdcopy", "--connections", "4", "nbd+unix:///"+sd+"/"+id+"?socket="+d.NBDSocket, dst)
		got, err := os.ReadFile(dst)
		if err != nil || !bytes.Equal(got, want) {
			t.Fatalf("nbdcopy after Glance came back: %d bytes, err %v, identical=%v", len(got), err, bytes.Equal(got, want))
		}
	}
	hung := func(t *testing.T) {
		if err := g.Pause(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = g.Resume() })
	}
	gone := func(t *testing.T) {
		if err := g.Kill(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = g.Restart(ctx) })
	}

	t.Run("fuse-hung", func(t *testing.T) {
		hung(t)
		fuseFails(t, 16<<20)
		if err := g.Resume(); err != nil {
			t.Fatal(err)
		}
		fuseWorks(t, 16<<20)
	})
	t.Run("fuse-refused", func(t *testing.T) {
		gone(t)
		fuseFails(t, 32<<20)
		if err := g.Restart(ctx); err != nil {
			t.Fatal(err)
		}
		fuseWorks(t, 32<<20)
	})
	t.Run("nbd-hung", func(t *testing.T) {
		hung(t)
		nbdFails(t, nbdHung.ID)
		if err := g.Resume(); err != nil {
			t.Fatal(err)
		}
		nbdWorks(t, nbdHung.ID, hungData)
	})
	t.Run("nbd-refused", func(t *testing.T) {
		gone(t)
		nbdFails(t, nbdGone.ID)
		if err := g.Restart(ctx); err != nil {
			t.Fatal(err)
		}
		nbdWorks(t, nbdGone.ID, goneData)
	})
}
