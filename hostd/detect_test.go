package hostd

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"sync/atomic"
	"testing"
	"time"

	"github.com/glancegw/glancegw/cache"
	"github.com/glancegw/glancegw/fs"
	"github.com/glancegw/glancegw/glance"
)

// probeBackend wraps the fake Glance's sources: bad ones fail, slow ones
// take a while per read, hung ones block until their context ends.
type probeBackend struct {
	*fakeGlance
	bad, hung         string
	slow              time.Duration
	inflight, maxSeen atomic.Int64
}

type probeSource struct {
	cache.BlockSource
	b    *probeBackend
	fail bool
	hang bool
}

func (s probeSource) ReadAt(ctx context.Context, p []byte, off int64) (int, error) {
	n := s.b.inflight.Add(1)
	defer s.b.inflight.Add(-1)
	for {
		m := s.b.maxSeen.Load()
		if n <= m || s.b.maxSeen.CompareAndSwap(m, n) {
			break
		}
	}
	switch {
	case s.fail:
		return 0, errors.New("glance: 500 internal error")
	case s.hang:
		<-ctx.Done()
		return 0, ctx.Err()
	}
	if s.b.slow > 0 {
		time.Sleep(s.b.slow)
	}
	return s.BlockSource.ReadAt(ctx, p, off)
}

func (b *probeBackend) Source(domain string, img glance.Image) cache.BlockSource {
	return probeSource{BlockSource: b.fakeGlance.Source(domain, img), b: b, fail: img.ID == b.bad, hang: img.ID == b.hung}
}

func probeDomain(t *testing.T, be *probeBackend, inspectTimeout time.Duration) *domain {
	t.Helper()
	return newDomain(DomainRecord{UUID: uuidA, Name: "d", URL: "http://g"}, secrets{}, domainDeps{
		log: slog.New(slog.DiscardHandler), timeout: 10 * time.Second, ttl: time.Minute, missMin: time.Millisecond,
		now:            time.Now,
		connect:        func(context.Context, glance.Config, *slog.Logger) (backend, error) { return be, nil },
		open:           func(s cache.BlockSource) cache.BlockSource { return s },
		inspectTimeout: inspectTimeout,
	})
}

func readTestdata(t *testing.T, path string) []byte {
	t.Helper()
	b, err := os.ReadFile("../testdata/inspect/" + path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func byID(imgs []fs.Image) map[string]fs.Image {
	m := map[string]fs.Image{}
	for _, im := range imgs {
		m[im.ID] = im
	}
	return m
}

// The catalog shows the detected format and virtual size of each active
// image, reads headers once per image version, and shows failures as
// unknown without failing the listing.
func TestCatalogDetectsFormats(t *testing.T) {
	g := newFakeGlance()
	qcow := readTestdata(t, "C12-qcow2-versions-virtual-size/v3-5GiB.qcow2")
	g.add("q", "disk.qcow2", "active", qcow) // Glance says raw, no virtual size
	g.add("r", "plain", "active", make([]byte, 3<<20))
	g.add("b", "backed", "active", readTestdata(t, "extra-qemu-img/qcow2-backing.qcow2"))
	g.add("x", "broken", "active", []byte("xxxx"))
	g.add("h", "hung", "active", []byte("hhhh"))
	g.add("z", "queued", "queued", nil)
	be := &probeBackend{fakeGlance: g, bad: "x", hung: "h"}
	d := probeDomain(t, be, 200*time.Millisecond)

	start := time.Now()
	imgs, err := d.Images(ctx, false)
	if err != nil {
		t.Fatalf("listing failed: %v", err)
	}
	if took := time.Since(start); took > 5*time.Second {
		t.Errorf("listing took %v; a hung image must be bounded by the inspect timeout", took)
	}
	m := byID(imgs)
	for _, tc := range []struct {
		id, format string
		vsize      int64
		unsafe     bool
	}{
		{"q", "qcow2", 5 << 30, false},
		{"r", "raw", 3 << 20, false},
		{"b", "qcow2", 1 << 20, true},
		{"x", formatUnknown, 0, false},
		{"h", formatUnknown, 0, false},
	} {
		im := m[tc.id]
		var meta struct {
			GG struct {
				SDUUID      string    `json:"sd_uuid"`
				Format      string    `json:"format"`
				VirtualSize int64     `json:"virtual_size"`
				Unsafe      *[]string `json:"unsafe"`
				Err         string    `json:"inspect_error"`
			} `json:"glancegw"`
		}
		if err := jsonUnmarshal(im.Meta, &meta); err != nil {
			t.Fatalf("%s: meta %s: %v", tc.id, im.Meta, err)
		}
		gg := meta.GG
		if gg.SDUUID != uuidA || gg.Format != tc.format || gg.VirtualSize != tc.vsize {
			t.Errorf("%s: meta glancegw = %+v, want format %s vsize %d", tc.id, gg, tc.format, tc.vsize)
		}
		if tc.format == formatUnknown {
			if gg.Err == "" || gg.Unsafe != nil {
				t.Errorf("%s: failed inspection shows %+v, want inspect_error and no unsafe", tc.id, gg)
			}
		} else if gg.Unsafe == nil || (len(*gg.Unsafe) > 0) != tc.unsafe {
			t.Errorf("%s: unsafe = %v, want unsafe=%v", tc.id, gg.Unsafe, tc.unsafe)
		}
		if im.VirtualSize != tc.vsize {
			t.Errorf("%s: fs VirtualSize %d, want %d (Glance has none)", tc.id, im.VirtualSize, tc.vsize)
		}
	}
	if z := m["z"]; string(z.Meta) == "" || jsonHas(t, z.Meta, "format") {
		t.Errorf("queued image was inspected: %s", z.Meta)
	}

	// Refreshes do not read headers again; a new version is inspected.
	reads := g.reads.Load()
	if _, err := d.Images(ctx, true); err != nil {
		t.Fatal(err)
	}
	if n := g.reads.Load(); n != reads {
		t.Errorf("a refresh made %d more reads: images re-inspected", n-reads)
	}
	g.mu.Lock()
	g.images[1].Checksum = "new"
	g.mu.Unlock()
	time.Sleep(2 * time.Millisecond)
	if _, err := d.Images(ctx, true); err != nil {
		t.Fatal(err)
	}
	if g.reads.Load() == reads {
		t.Error("a changed image (new checksum) was not inspected again")
	}
	if len(d.detect.done) != 5 {
		t.Errorf("detector keeps %d results for 5 active listed images", len(d.detect.done))
	}
}

func jsonHas(t *testing.T, raw []byte, key string) bool {
	t.Helper()
	var m struct {
		GG map[string]any `json:"glancegw"`
	}
	if err := jsonUnmarshal(raw, &m); err != nil {
		t.Fatal(err)
	}
	_, ok := m.GG[key]
	return ok
}

// At most the configured number of images are inspected at once.
func TestCatalogDetectBoundedConcurrency(t *testing.T) {
	g := newFakeGlance()
	for i := range 16 {
		g.add(fmt.Sprintf("i%02d", i), "n", "active", make([]byte, 4096))
	}
	be := &probeBackend{fakeGlance: g, slow: 10 * time.Millisecond}
	d := probeDomain(t, be, 0)
	if _, err := d.Images(ctx, false); err != nil {
		t.Fatal(err)
	}
	if n := be.maxSeen.Load(); n > defaultInspectWorkers || n < 2 {
		t.Errorf("%d concurrent inspections, want 2..%d", n, defaultInspectWorkers)
	}
	if len(d.detect.done) != 16 {
		t.Errorf("%d of 16 images inspected", len(d.detect.done))
	}
}

// The API shows the detection next to Glance's fields.
func TestAPIImagesDetected(t *testing.T) {
	e := newTestEnv(t)
	g := e.net.glance("http://g")
	g.add("q", "disk.qcow2", "active", readTestdata(t, "C12-qcow2-versions-virtual-size/v3-5GiB.qcow2"))
	g.add("z", "queued", "queued", nil)
	r := e.start()
	if _, err := r.c.AddDomain(ctx, DomainSpec{Name: "a", URL: "http://g"}); err != nil {
		t.Fatal(err)
	}
	imgs, err := r.c.Images(ctx, "a", false)
	if err != nil || len(imgs) != 2 {
		t.Fatalf("images: %v %v", imgs, err)
	}
	if q := imgs[0]; q.DetectedFormat != "qcow2" || q.DetectedVirtualSize != 5<<30 || q.DiskFormat != "raw" || len(q.DetectedUnsafe) != 0 {
		t.Errorf("qcow2 image shows %+v", q)
	}
	if z := imgs[1]; z.DetectedFormat != "" || z.DetectedVirtualSize != 0 {
		t.Errorf("queued image shows a detection: %+v", z)
	}
}
