package glance

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/glancegw/glancegw/cache"
	"github.com/glancegw/glancegw/cache/cachetest"
)

// fastConfig keeps fault tests quick: short stalls and back-off.
func fastConfig(url string) Config {
	return Config{
		URL: url, RequestTimeout: 2 * time.Second, IdleTimeout: 300 * time.Millisecond, UploadIdleTimeout: 300 * time.Millisecond,
		Retries: 3, Backoff: 5 * time.Millisecond, MaxBackoff: 20 * time.Millisecond,
	}
}

func newTestClient(t *testing.T, cfg Config) *Client {
	t.Helper()
	c, err := New(context.Background(), cfg, nil)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	return c
}

func randomBytes(n int, seed uint64) []byte {
	var key [32]byte
	key[0] = byte(seed)
	p := make([]byte, n)
	rand.NewChaCha8(key).Read(p)
	return p
}

// readAll reads src sequentially in chunks of n.
func readAll(ctx context.Context, t *testing.T, src cache.BlockSource, n int) []byte {
	t.Helper()
	var out []byte
	p := make([]byte, n)
	for off := int64(0); ; {
		k, err := src.ReadAt(ctx, p, off)
		out = append(out, p[:k]...)
		off += int64(k)
		if err == io.EOF {
			return out
		}
		if err != nil {
			t.Fatalf("read at %d: %v", off, err)
		}
	}
}

func closeSource(t *testing.T, s interface{ Close() error }) {
	t.Cleanup(func() { s.Close() })
}

// The conformance suite of every BlockSource, on each way a server may
// answer ranges.
func TestConformance(t *testing.T) {
	modes := map[string]func(w http.ResponseWriter, r *http.Request) bool{
		"ranges": nil,
		"ignores-range-200": func(w http.ResponseWriter, r *http.Request) bool {
			r.Header.Del("Range")
			return false
		},
		"refuses-range-400": func(w http.ResponseWriter, r *http.Request) bool {
			if r.Header.Get("Range") != "" && strings.HasSuffix(r.URL.Path, "/file") {
				http.Error(w, "ranges not supported by this store", http.StatusBadRequest)
				return true
			}
			return false
		},
	}
	for name, fault := range modes {
		t.Run("glance/"+name, func(t *testing.T) {
			t.Parallel()
			cachetest.Run(t, func(t *testing.T, data []byte) cache.BlockSource {
				g := newFakeGlance(t)
				g.setFault(fault)
				cfg := fastConfig(g.srv.URL)
				cfg.MinRangeSize = 64 << 10 // several windows even for small data
				src := newTestClient(t, cfg).Source("dom", g.add("img", data))
				closeSource(t, src)
				return src
			})
		})
		t.Run("http/"+name, func(t *testing.T) {
			t.Parallel()
			cachetest.Run(t, func(t *testing.T, data []byte) cache.BlockSource {
				g := newFakeGlance(t)
				g.setFault(fault)
				img := g.add("img", data)
				src, err := NewHTTPSource(context.Background(), HTTPSourceConfig{
					URL: g.srv.URL + "/v2/images/" + img.ID + "/file", MinRangeSize: 64 << 10,
					IdleTimeout: 300 * time.Millisecond, Backoff: 5 * time.Millisecond,
				}, nil)
				if err != nil {
					t.Fatalf("NewHTTPSource: %v", err)
				}
				closeSource(t, src)
				return src
			})
		})
	}
}

func TestIdentity(t *testing.T) {
	c := newTestClient(t, Config{URL: "http://127.0.0.1:1"})
	upd := time.Date(2024, 5, 1, 10, 0, 0, 0, time.UTC)
	for _, tc := range []struct {
		img  Image
		want string
	}{
		{Image{ID: "i1", Checksum: "md5", OSHashValue: "sha", UpdatedAt: upd}, "d/i1@md5"},
		{Image{ID: "i1", OSHashValue: "sha", UpdatedAt: upd}, "d/i1@sha"},
		{Image{ID: "i1", UpdatedAt: upd}, "d/i1@2024-05-01T10:00:00Z"},
	} {
		if got := c.Source("d", tc.img).Identity(); got != tc.want {
			t.Errorf("Identity of %+v = %q, want %q", tc.img, got, tc.want)
		}
	}
}

// A sequential reader gets one growing window after another, not one
// request per read.
func TestSequentialReaderStreams(t *testing.T) {
	g := newFakeGlance(t)
	data := randomBytes(40<<20+123, 1)
	img := g.add("big", data)
	src := newTestClient(t, fastConfig(g.srv.URL)).Source("d", img)
	closeSource(t, src)

	got := readAll(context.Background(), t, src, 256<<10)
	if !bytes.Equal(got, data) {
		t.Fatal("bytes differ")
	}
	// 4 MiB, then 16, and the rest: 3 requests for 161 reads.
	want := []string{"bytes=0-4194303", "bytes=4194304-20971519", "bytes=20971520-41943162"}
	if rs := g.seenRanges(); fmt.Sprint(rs) != fmt.Sprint(want) {
		t.Errorf("ranges asked = %q, want %q", rs, want)
	}
}

// Concurrent readers at different offsets keep separate bodies, and each
// continues on its own.
func TestConcurrentReadersOwnStreams(t *testing.T) {
	g := newFakeGlance(t)
	data := randomBytes(32<<20, 2)
	img := g.add("big", data)
	src := newTestClient(t, Config{URL: g.srv.URL}).Source("d", img)
	closeSource(t, src)

	var wg sync.WaitGroup
	for r := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			base := int64(r) * 8 << 20
			p := make([]byte, 128<<10)
			for off := base; off < base+4<<20; off += int64(len(p)) {
				if _, err := src.ReadAt(context.Background(), p, off); err != nil {
					t.Errorf("read at %d: %v", off, err)
					return
				}
				if !bytes.Equal(p, data[off:off+int64(len(p))]) {
					t.Errorf("bytes at %d differ", off)
					return
				}
			}
		}()
	}
	wg.Wait()
	if n := g.fileGETs.Load(); n != 4 {
		t.Errorf("%d GETs for 4 sequential readers of one window each, want 4 (ranges %q)", n, g.seenRanges())
	}
}

func TestIdleStreamsCappedAndExpired(t *testing.T) {
	g := newFakeGlance(t)
	data := randomBytes(16<<20, 3)
	img := g.add("big", data)
	cfg := fastConfig(g.srv.URL)
	cfg.MaxIdleStreams = 2
	cfg.StreamIdleTime = time.Second
	src := newTestClient(t, cfg).Source("d", img)
	closeSource(t, src)

	p := make([]byte, 4096)
	for i := range 5 {
		if _, err := src.ReadAt(context.Background(), p, int64(i)*3<<20); err != nil {
			t.Fatal(err)
		}
	}
	parked := func() int {
		src.f.mu.Lock()
		defer src.f.mu.Unlock()
		return len(src.f.idle)
	}
	if n := parked(); n != 2 {
		t.Errorf("%d parked bodies after 5 jumps, want the cap 2", n)
	}
	deadline := time.Now().Add(3 * time.Second)
	for parked() > 0 && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	if n := parked(); n != 0 {
		t.Errorf("%d parked bodies after the idle time, want 0", n)
	}
}

// A small jump forward reuses the open body by discarding the gap.
func TestSmallSkipReusesStream(t *testing.T) {
	g := newFakeGlance(t)
	data := randomBytes(8<<20, 4)
	src := newTestClient(t, fastConfig(g.srv.URL)).Source("d", g.add("x", data))
	closeSource(t, src)
	p := make([]byte, 64<<10)
	for _, off := range []int64{0, 1 << 20, 3 << 20} { // gaps of under 2 MiB
		if _, err := src.ReadAt(context.Background(), p, off); err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(p, data[off:off+int64(len(p))]) {
			t.Fatalf("bytes at %d differ", off)
		}
	}
	if n := g.fileGETs.Load(); n != 1 {
		t.Errorf("%d GETs, want 1 (ranges %q)", n, g.seenRanges())
	}
}

// Without ranges, reads are served from one stream from 0; a read behind
// the stream restarts it.
func TestNoRangeFallback(t *testing.T) {
	for name, fault := range map[string]func(w http.ResponseWriter, r *http.Request) bool{
		"200": func(w http.ResponseWriter, r *http.Request) bool { r.Header.Del("Range"); return false },
		"400": func(w http.ResponseWriter, r *http.Request) bool {
			if r.Header.Get("Range") != "" {
				http.Error(w, "no ranges", http.StatusBadRequest)
				return true
			}
			return false
		},
	} {
		t.Run(name, func(t *testing.T) {
			g := newFakeGlance(t)
			g.setFault(fault)
			data := randomBytes(10<<20, 5)
			src := newTestClient(t, fastConfig(g.srv.URL)).Source("d", g.add("x", data))
			closeSource(t, src)
			if got := readAll(context.Background(), t, src, 1<<20); !bytes.Equal(got, data) {
				t.Fatal("bytes differ")
			}
			if src.RangesSupported() {
				t.Error("RangesSupported() = true after the fallback")
			}
			wantGETs := int64(1)
			if name == "400" {
				wantGETs = 2 // the refused ranged GET, then the stream
			}
			if n := g.fileGETs.Load(); n != wantGETs {
				t.Errorf("%d GETs for a sequential read, want %d", n, wantGETs)
			}
			// Behind the stream: a new stream from 0.
			p := make([]byte, 1000)
			if _, err := src.ReadAt(context.Background(), p, 5000); err != nil || !bytes.Equal(p, data[5000:6000]) {
				t.Fatalf("read behind: %v", err)
			}
			if n := g.fileGETs.Load(); n != wantGETs+1 {
				t.Errorf("%d GETs after a read behind the stream, want %d", n, wantGETs+1)
			}
		})
	}
}

// faultConfig asks exactly what is read, so a fault cannot be hidden by
// a window larger than the read.
func faultConfig(url string) Config {
	cfg := fastConfig(url)
	cfg.MinRangeSize = 64 << 10
	return cfg
}

// faultN answers the first n file GETs with fn, then lets them through.
func faultN(n int64, fn func(w http.ResponseWriter, r *http.Request)) (func(w http.ResponseWriter, r *http.Request) bool, *atomic.Int64) {
	var hits atomic.Int64
	return func(w http.ResponseWriter, r *http.Request) bool {
		if !strings.HasSuffix(r.URL.Path, "/file") || r.Method != http.MethodGet {
			return false
		}
		if hits.Add(1) > n {
			return false
		}
		fn(w, r)
		return true
	}, &hits
}

func TestFaultsRetried(t *testing.T) {
	data := randomBytes(3<<20, 6)
	size := int64(len(data))
	cases := []struct {
		name  string
		fault func(w http.ResponseWriter, r *http.Request)
	}{
		{"503", func(w http.ResponseWriter, r *http.Request) {
			http.Error(w, "busy", http.StatusServiceUnavailable)
		}},
		{"500", func(w http.ResponseWriter, r *http.Request) {
			http.Error(w, "oops", http.StatusInternalServerError)
		}},
		{"wrong-content-range-start", func(w http.ResponseWriter, r *http.Request) {
			start, end, _ := parseRangeHeader(r.Header.Get("Range"), size)
			w.Header().Set("Content-Range", fmt.Sprintf("bytes %d-%d/%d", start+1, end, size))
			w.WriteHeader(http.StatusPartialContent)
			w.Write(data[start+1 : end+1])
		}},
		{"content-range-longer-than-asked", func(w http.ResponseWriter, r *http.Request) {
			start, _, _ := parseRangeHeader(r.Header.Get("Range"), size)
			w.Header().Set("Content-Range", fmt.Sprintf("bytes %d-%d/%d", start, size-1, size))
			w.WriteHeader(http.StatusPartialContent)
			w.Write(data[start:])
		}},
		{"no-content-range", func(w http.ResponseWriter, r *http.Request) {
			w.WriteHeader(http.StatusPartialContent)
			w.Write(data[:10])
		}},
		{"truncated", func(w http.ResponseWriter, r *http.Request) {
			start, end, _ := parseRangeHeader(r.Header.Get("Range"), size)
			w.Header().Set("Content-Range", fmt.Sprintf("bytes %d-%d/%d", start, end, size))
			w.Header().Set("Content-Length", strconv.FormatInt(end-start+1, 10))
			w.WriteHeader(http.StatusPartialContent)
			w.Write(data[start : start+(end-start)/2]) // the server then closes the connection
		}},
		{"stall", func(w http.ResponseWriter, r *http.Request) {
			start, end, _ := parseRangeHeader(r.Header.Get("Range"), size)
			w.Header().Set("Content-Range", fmt.Sprintf("bytes %d-%d/%d", start, end, size))
			w.Header().Set("Content-Length", strconv.FormatInt(end-start+1, 10))
			w.WriteHeader(http.StatusPartialContent)
			w.Write(data[start : start+1000])
			w.(http.Flusher).Flush()
			select {
			case <-r.Context().Done():
			case <-time.After(10 * time.Second):
			}
		}},
		{"connection-dropped", func(w http.ResponseWriter, r *http.Request) {
			conn, _, err := w.(http.Hijacker).Hijack()
			if err == nil {
				conn.Close()
			}
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			g := newFakeGlance(t)
			fault, hits := faultN(2, tc.fault)
			g.setFault(fault)
			src := newTestClient(t, faultConfig(g.srv.URL)).Source("d", g.add("x", data))
			closeSource(t, src)
			p := make([]byte, 2<<20)
			start := time.Now()
			n, err := src.ReadAt(context.Background(), p, 4096)
			if err != nil || n != len(p) {
				t.Fatalf("ReadAt = %d, %v; want a full read after 2 faults", n, err)
			}
			if !bytes.Equal(p, data[4096:4096+len(p)]) {
				t.Fatal("bytes differ: a faulty answer was trusted")
			}
			if hits.Load() < 3 {
				t.Errorf("%d file GETs, want at least 3 (2 faults + 1 good)", hits.Load())
			}
			if d := time.Since(start); d > 3*time.Second {
				t.Errorf("took %v", d)
			}
		})
		t.Run(tc.name+"/gives-up", func(t *testing.T) {
			g := newFakeGlance(t)
			fault, hits := faultN(1000, tc.fault)
			g.setFault(fault)
			src := newTestClient(t, faultConfig(g.srv.URL)).Source("d", g.add("x", data))
			closeSource(t, src)
			p := make([]byte, 2<<20)
			n, err := src.ReadAt(context.Background(), p, 4096)
			if err == nil || n == len(p) {
				t.Fatalf("ReadAt = %d, %v; want an error", n, err)
			}
			if !strings.Contains(err.Error(), "giving up after 4 attempts") {
				t.Errorf("error %q does not say it gave up after 4 attempts", err)
			}
			if h := hits.Load(); h != 4 {
				t.Errorf("%d attempts, want 1 + Retries(3) = 4", h)
			}
		})
	}
}

// A truncated body resumes at the last good byte, keeping what was read.
func TestTruncatedResumes(t *testing.T) {
	data := randomBytes(1<<20, 7)
	size := int64(len(data))
	g := newFakeGlance(t)
	fault, _ := faultN(1, func(w http.ResponseWriter, r *http.Request) {
		start, end, _ := parseRangeHeader(r.Header.Get("Range"), size)
		w.Header().Set("Content-Range", fmt.Sprintf("bytes %d-%d/%d", start, end, size))
		w.Header().Set("Content-Length", strconv.FormatInt(end-start+1, 10))
		w.WriteHeader(http.StatusPartialContent)
		w.Write(data[start : start+300000])
	})
	g.setFault(fault)
	src := newTestClient(t, fastConfig(g.srv.URL)).Source("d", g.add("x", data))
	closeSource(t, src)
	p := make([]byte, 500000)
	if n, err := src.ReadAt(context.Background(), p, 100); err != nil || n != len(p) {
		t.Fatalf("ReadAt = %d, %v", n, err)
	}
	if !bytes.Equal(p, data[100:100+len(p)]) {
		t.Fatal("bytes differ")
	}
	rs := g.seenRanges()
	if len(rs) != 2 || !strings.HasPrefix(rs[1], "bytes=300100-") {
		t.Errorf("ranges = %q, want the truncated one and one resuming at 300100", rs)
	}
}

// A stall is an error bounded by the idle timeout, and reports Timeout().
func TestStallBounded(t *testing.T) {
	data := randomBytes(1<<20, 8)
	g := newFakeGlance(t)
	release := make(chan struct{})
	defer close(release)
	g.setFault(func(w http.ResponseWriter, r *http.Request) bool {
		if !strings.HasSuffix(r.URL.Path, "/file") {
			return false
		}
		start, end, _ := parseRangeHeader(r.Header.Get("Range"), int64(len(data)))
		w.Header().Set("Content-Length", strconv.FormatInt(end-start+1, 10))
		w.Header().Set("Content-Range", fmt.Sprintf("bytes %d-%d/%d", start, end, len(data)))
		w.WriteHeader(http.StatusPartialContent)
		w.Write(data[start : start+10])
		w.(http.Flusher).Flush()
		select {
		case <-release:
		case <-r.Context().Done():
		}
		return true
	})
	cfg := fastConfig(g.srv.URL)
	cfg.Retries = 1
	src := newTestClient(t, cfg).Source("d", g.add("x", data))
	closeSource(t, src)
	start := time.Now()
	_, err := src.ReadAt(context.Background(), make([]byte, 1<<20), 0)
	took := time.Since(start)
	if !errors.Is(err, ErrIdleTimeout) {
		t.Fatalf("err = %v, want ErrIdleTimeout", err)
	}
	var to interface{ Timeout() bool }
	if !errors.As(err, &to) || !to.Timeout() {
		t.Errorf("err %v does not report Timeout()", err)
	}
	// 2 attempts of 300 ms idle each, plus a 5 ms back-off.
	if took < 550*time.Millisecond || took > 2*time.Second {
		t.Errorf("took %v, want about 600ms", took)
	}
}

// ctx cancellation ends a read promptly, even mid-body and even when the
// server sends nothing at all.
func TestContextCancelPrompt(t *testing.T) {
	data := randomBytes(1<<20, 9)
	for _, mode := range []string{"no-headers", "mid-body"} {
		t.Run(mode, func(t *testing.T) {
			g := newFakeGlance(t)
			release := make(chan struct{})
			defer close(release)
			g.setFault(func(w http.ResponseWriter, r *http.Request) bool {
				if !strings.HasSuffix(r.URL.Path, "/file") {
					return false
				}
				if mode == "mid-body" {
					w.Header().Set("Content-Length", "1048576")
					w.Header().Set("Content-Range", "bytes 0-1048575/1048576")
					w.WriteHeader(http.StatusPartialContent)
					w.Write(data[:10])
					w.(http.Flusher).Flush()
				}
				select {
				case <-release:
				case <-r.Context().Done():
				}
				return true
			})
			cfg := fastConfig(g.srv.URL)
			cfg.IdleTimeout, cfg.RequestTimeout = 10*time.Second, 10*time.Second
			src := newTestClient(t, cfg).Source("d", g.add("x", data))
			closeSource(t, src)
			ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
			defer cancel()
			start := time.Now()
			_, err := src.ReadAt(ctx, make([]byte, 1<<20), 0)
			if !errors.Is(err, context.DeadlineExceeded) {
				t.Errorf("err = %v, want DeadlineExceeded", err)
			}
			if d := time.Since(start); d > time.Second {
				t.Errorf("cancel took %v", d)
			}
		})
	}
}

func TestNotFoundNotRetried(t *testing.T) {
	g := newFakeGlance(t)
	img := g.add("x", randomBytes(1000, 10))
	c := newTestClient(t, fastConfig(g.srv.URL))
	src := c.Source("d", img)
	closeSource(t, src)
	if err := c.Delete(context.Background(), img.ID); err != nil {
		t.Fatal(err)
	}
	_, err := src.ReadAt(context.Background(), make([]byte, 10), 0)
	var nf interface{ NotFound() bool }
	if !errors.As(err, &nf) || !nf.NotFound() {
		t.Fatalf("err = %v, want NotFound()", err)
	}
	if !errors.Is(err, ErrNotFound) {
		t.Errorf("errors.Is(%v, ErrNotFound) = false", err)
	}
	if n := g.fileGETs.Load(); n != 1 {
		t.Errorf("%d GETs for a 404, want 1 (no retry)", n)
	}
	if _, err := c.Get(context.Background(), img.ID); !errors.Is(err, ErrNotFound) {
		t.Errorf("Get of a deleted image: %v, want ErrNotFound", err)
	}
}

// The image changed size under us: never trusted, never retried.
func TestSizeMismatch(t *testing.T) {
	g := newFakeGlance(t)
	img := g.add("x", randomBytes(5000, 11))
	img.Size = 6000 // a stale record
	src := newTestClient(t, fastConfig(g.srv.URL)).Source("d", img)
	closeSource(t, src)
	_, err := src.ReadAt(context.Background(), make([]byte, 100), 0)
	if !errors.Is(err, ErrSizeMismatch) {
		t.Fatalf("err = %v, want ErrSizeMismatch", err)
	}
	if n := g.fileGETs.Load(); n != 1 {
		t.Errorf("%d GETs, want 1", n)
	}
}

func TestClosedSource(t *testing.T) {
	g := newFakeGlance(t)
	src := newTestClient(t, fastConfig(g.srv.URL)).Source("d", g.add("x", randomBytes(10<<20, 12)))
	if _, err := src.ReadAt(context.Background(), make([]byte, 10), 0); err != nil {
		t.Fatal(err)
	}
	src.Close()
	if _, err := src.ReadAt(context.Background(), make([]byte, 10), 10); !errors.Is(err, ErrClosed) {
		t.Errorf("read after Close: %v, want ErrClosed", err)
	}
}
