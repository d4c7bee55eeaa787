package hostd

import (
	"bytes"
	"context"
	"crypto/rand"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"
)

func needTool(t *testing.T, name string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err != nil {
		t.Skipf("%s not installed", name)
	}
	return p
}

// TestNBDAndFUSEShareTheCache reads an image with nbdcopy over the daemon's
// NBD socket, then through the FUSE mount: the second read must not reach
// Glance.
func TestNBDAndFUSEShareTheCache(t *testing.T) {
	nbdcopy := needTool(t, "nbdcopy")
	nbdinfo := needTool(t, "nbdinfo")
	needFUSE(t)
	e := newTestEnv(t)
	data := make([]byte, 3<<20+12345)
	rand.Read(data)
	g := e.net.glance("http://g")
	g.add("img-1", "random.raw", "active", data)
	r := e.start()
	if _, err := r.c.AddDomain(ctx, DomainSpec{Name: "iso", URL: "http://g", UUID: uuidA}); err != nil {
		t.Fatal(err)
	}
	exps, err := r.c.Exports(ctx)
	if err != nil || len(exps) != 2 {
		t.Fatalf("exports = %+v, %v", exps, err)
	}

	tctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	list, err := exec.CommandContext(tctx, nbdinfo, "--list", "nbd+unix:///?socket="+e.cfg.NBDSocket).CombinedOutput()
	if err != nil {
		t.Fatalf("nbdinfo --list: %v\n%s", err, list)
	}
	for _, want := range []string{uuidA + "/img-1", "random.raw"} {
		if !bytes.Contains(list, []byte(want)) {
			t.Errorf("nbdinfo --list lacks %q:\n%s", want, list)
		}
	}

	out := filepath.Join(e.dir, "out.raw")
	for _, x := range exps {
		if x.Name != "img-1" {
			continue
		}
		if b, err := exec.CommandContext(tctx, nbdcopy, x.URI, out).CombinedOutput(); err != nil {
			t.Fatalf("nbdcopy %s: %v\n%s", x.URI, err, b)
		}
	}
	got, err := os.ReadFile(out)
	if err != nil || !bytes.Equal(got, data) {
		t.Fatalf("nbdcopy copied %d bytes (%v), want the image's %d", len(got), err, len(data))
	}
	readsAfterNBD := g.reads.Load()
	if readsAfterNBD == 0 {
		t.Fatal("NBD read did not reach the source")
	}

	if _, err := r.c.Mount(ctx, "iso", ""); err != nil {
		t.Fatal(err)
	}
	got, err = os.ReadFile(filepath.Join(e.cfg.MountRoot, "iso", "by-id", "img-1"))
	if err != nil || !bytes.Equal(got, data) {
		t.Fatalf("FUSE read %d bytes (%v)", len(got), err)
	}
	if n := g.reads.Load(); n != readsAfterNBD {
		t.Errorf("FUSE read after NBD made %d more source reads; the cache is not shared", n-readsAfterNBD)
	}
	s, _ := r.c.Status(ctx)
	if s.Cache.Hits == 0 || s.Cache.Bytes == 0 {
		t.Errorf("cache stats = %+v", s.Cache)
	}
	if s.NBDError != "" {
		t.Errorf("nbd error: %s", s.NBDError)
	}
}
