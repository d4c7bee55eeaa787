package transfer

import (
	"bytes"
	"context"
	"crypto/md5"
	"crypto/sha512"
	"encoding/hex"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"

	"github.com/glancegw/glancegw/cache/cachetest"
	"github.com/glancegw/glancegw/glance"
)

// fakeGlance keeps images in memory and computes checksums like Glance.
type fakeGlance struct {
	mu      sync.Mutex
	images  map[string]*glance.Image
	data    map[string][]byte
	corrupt bool  // store a flipped byte
	failUp  error // Upload fails after reading half
	deleted []string
	n       int
}

func newFakeGlance() *fakeGlance {
	return &fakeGlance{images: map[string]*glance.Image{}, data: map[string][]byte{}}
}

func (f *fakeGlance) Create(ctx context.Context, o glance.CreateOpts) (glance.Image, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.n++
	id := "img-" + string(rune('0'+f.n))
	img := &glance.Image{ID: id, Name: o.Name, Status: "queued", DiskFormat: o.DiskFormat, ContainerFormat: o.ContainerFormat}
	f.images[id] = img
	return *img, nil
}

func (f *fakeGlance) Upload(ctx context.Context, id string, r io.Reader, size int64) error {
	var b []byte
	var err error
	if f.failUp != nil {
		b = make([]byte, size/2)
		io.ReadFull(r, b)
		return f.failUp
	}
	b, err = io.ReadAll(r)
	if err != nil {
		return err
	}
	if int64(len(b)) != size {
		return errors.New("short body")
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	img := f.images[id]
	m, s := md5.Sum(b), sha512.Sum512(b)
	if f.corrupt && len(b) > 0 {
		b = bytes.Clone(b)
		b[0] ^= 1
		m, s = md5.Sum(b), sha512.Sum512(b)
	}
	f.data[id] = b
	img.Status, img.Size = "active", int64(len(b))
	img.Checksum, img.OSHashAlgo, img.OSHashValue = hex.EncodeToString(m[:]), "sha512", hex.EncodeToString(s[:])
	return nil
}

func (f *fakeGlance) Get(ctx context.Context, id string) (glance.Image, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	img, ok := f.images[id]
	if !ok {
		return glance.Image{}, &glance.HTTPError{Op: "get", Status: 404}
	}
	return *img, nil
}

func (f *fakeGlance) Delete(ctx context.Context, id string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	delete(f.images, id)
	f.deleted = append(f.deleted, id)
	return nil
}

func TestExportCreatesVerifiedImage(t *testing.T) {
	data := cachetest.Data(5<<20+17, 4)
	g := newFakeGlance()
	var progress int64
	res, err := testEngine(t).Export(context.Background(), ExportSpec{Source: cachetest.NewMemSource(data), What: "vol",
		Glance: g, Name: "exported", Progress: func(n int64) { progress += n }})
	if err != nil {
		t.Fatal(err)
	}
	if !res.Verified || res.DiskFormat != "raw" || res.MD5 != md5hex(data) || res.SHA512 != sha512hex(data) || res.Size != int64(len(data)) {
		t.Errorf("result %+v", res)
	}
	if !bytes.Equal(g.data[res.ImageID], data) || g.images[res.ImageID].Name != "exported" || g.images[res.ImageID].ContainerFormat != "bare" {
		t.Errorf("glance holds %d bytes, image %+v", len(g.data[res.ImageID]), g.images[res.ImageID])
	}
	if progress != int64(len(data)) {
		t.Errorf("progress %d", progress)
	}
}

func TestExportMismatchDeletesImage(t *testing.T) {
	data := cachetest.Data(2<<20, 4)
	g := newFakeGlance()
	g.corrupt = true
	_, err := testEngine(t).Export(context.Background(), ExportSpec{Source: cachetest.NewMemSource(data), What: "vol", Glance: g, Name: "x"})
	if !errors.Is(err, ErrChecksum) {
		t.Fatalf("err = %v, want checksum mismatch", err)
	}
	if len(g.images) != 0 || len(g.deleted) != 1 {
		t.Errorf("image not deleted: images %v deleted %v", g.images, g.deleted)
	}
}

func TestExportUploadFailureDeletesImage(t *testing.T) {
	g := newFakeGlance()
	g.failUp = errors.New("connection reset")
	_, err := testEngine(t).Export(context.Background(), ExportSpec{Source: cachetest.NewMemSource(cachetest.Data(3<<20, 1)), What: "vol", Glance: g, Name: "x"})
	if err == nil || !strings.Contains(err.Error(), "connection reset") {
		t.Fatalf("err = %v", err)
	}
	if len(g.images) != 0 || len(g.deleted) != 1 {
		t.Errorf("image not deleted: %v %v", g.images, g.deleted)
	}
}

func TestExportSourceFailureDeletesImage(t *testing.T) {
	g := newFakeGlance()
	src := cachetest.NewMemSource(cachetest.Data(3<<20, 1))
	e := testEngine(t)
	// Inspection reads headers; fail the data reads.
	_, err := e.Export(context.Background(), ExportSpec{Source: &failAfter{MemSource: src, after: 1}, What: "vol", Glance: g, Name: "x"})
	if err == nil {
		t.Fatal("export of an unreadable volume succeeded")
	}
	if len(g.images) != 0 || len(g.deleted) != 1 {
		t.Errorf("image not deleted: %v %v", g.images, g.deleted)
	}
}

type failAfter struct {
	*cachetest.MemSource
	mu    sync.Mutex
	after int
}

func (f *failAfter) ReadAt(ctx context.Context, p []byte, off int64) (int, error) {
	f.mu.Lock()
	f.after--
	fail := f.after < 0
	f.mu.Unlock()
	if fail && len(p) >= 1<<20 { // a data read, not inspection's

		return 0, glance.ErrSizeMismatch // not retried
	}
	return f.MemSource.ReadAt(ctx, p, off)
}

func TestExportRefusesUnsafeAndUnknown(t *testing.T) {
	g := newFakeGlance()
	// A QED image: detected, but Glance has no disk format for it.
	qed := make([]byte, 1<<20)
	copy(qed, "QED\x00")
	_, err := testEngine(t).Export(context.Background(), ExportSpec{Source: cachetest.NewMemSource(qed), What: "vol", Glance: g, Name: "x"})
	if err == nil {
		t.Fatal("exported a QED image")
	}
	if len(g.images) != 0 {
		t.Errorf("an image was created: %v", g.images)
	}
}

// TestExportHTTPPut sends to a Glance-like web server by URL and headers,
// and checks the record it reads back.
func TestExportHTTPPut(t *testing.T) {
	data := cachetest.Data(3<<20+1, 8)
	var mu sync.Mutex
	var stored []byte
	var gotToken, gotLen string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		defer mu.Unlock()
		switch {
		case r.Method == http.MethodPut && r.URL.Path == "/v2/images/abc/file":
			gotToken, gotLen = r.Header.Get("X-Auth-Token"), r.Header.Get("Content-Length")
			stored, _ = io.ReadAll(r.Body)
			w.WriteHeader(http.StatusNoContent)
		case r.Method == http.MethodGet && r.URL.Path == "/v2/images/abc":
			m, s := md5.Sum(stored), sha512.Sum512(stored)
			status := "active"
			if stored == nil {
				status = "queued"
			}
			json.NewEncoder(w).Encode(map[string]any{"id": "abc", "status": status, "disk_format": "raw", "size": len(stored),
				"checksum": hex.EncodeToString(m[:]), "os_hash_algo": "sha512", "os_hash_value": hex.EncodeToString(s[:])})
		default:
			http.NotFound(w, r)
		}
	}))
	defer srv.Close()
	res, err := testEngine(t).Export(context.Background(), ExportSpec{Source: cachetest.NewMemSource(data), What: "vol",
		URL: srv.URL + "/v2/images/abc/file", Header: http.Header{"X-Auth-Token": {"tok"}}})
	if err != nil {
		t.Fatal(err)
	}
	if !res.Verified || res.ImageID != "abc" || !bytes.Equal(stored, data) || gotToken != "tok" || gotLen != "3145729" {
		t.Errorf("res %+v, token %q, len %q, stored %d", res, gotToken, gotLen, len(stored))
	}
	// A plain web server: stored, not verified.
	mu.Lock()
	stored = nil // queued again
	mu.Unlock()
	res, err = testEngine(t).Export(context.Background(), ExportSpec{Source: cachetest.NewMemSource(data), What: "vol",
		URL: srv.URL + "/v2/images/abc/file?x=1#nope"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := testEngine(t).Export(context.Background(), ExportSpec{Source: cachetest.NewMemSource(data), What: "vol",
		URL: "ftp://h/x"}); !errors.Is(err, ErrInvalid) {
		t.Errorf("ftp target: %v", err)
	}
}

// TestExportIntoExistingImageChecked: an existing target image must be
// queued and declare the volume's format; otherwise nothing is sent.
func TestExportIntoExistingImageChecked(t *testing.T) {
	raw := cachetest.Data(1<<20, 3)
	qcow := make([]byte, 1<<20)
	copy(qcow, []byte{'Q', 'F', 'I', 0xfb, 0, 0, 0, 2}) // a qcow2 v2 header
	copy(qcow[20:], []byte{0, 0, 0, 16})                // cluster_bits
	copy(qcow[24:], []byte{0, 0, 0, 0, 0x40, 0, 0, 0})  // 1 GiB virtual
	for _, tc := range []struct {
		name, status, format string
		data                 []byte
		refused              string
	}{
		{"active image", "active", "raw", raw, "is active: Glance takes data only into a queued image"},
		{"qcow2 into raw", "queued", "raw", qcow, "the volume is qcow2 but image t declares disk_format raw"},
		{"raw into qcow2", "queued", "qcow2", raw, "the volume is raw but image t declares disk_format qcow2"},
		{"no disk_format", "queued", "", raw, "image t has no disk_format, so Glance refuses its data"},
		{"raw into iso", "queued", "iso", raw, ""},
		{"raw into raw", "queued", "raw", raw, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			g := newFakeGlance()
			g.images["t"] = &glance.Image{ID: "t", Status: tc.status, DiskFormat: tc.format, ContainerFormat: "bare"}
			_, err := testEngine(t).Export(context.Background(), ExportSpec{Source: cachetest.NewMemSource(tc.data), What: "vol", Glance: g, ImageID: "t"})
			if tc.refused == "" {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			if !errors.Is(err, ErrTarget) || !strings.Contains(err.Error(), tc.refused) {
				t.Fatalf("export: %v, want ErrTarget saying %q", err, tc.refused)
			}
			if g.data["t"] != nil || g.images["t"].Status != tc.status || len(g.deleted) != 0 {
				t.Errorf("a refused export changed the image: %+v, %d bytes, deleted %v", g.images["t"], len(g.data["t"]), g.deleted)
			}
		})
	}
}
