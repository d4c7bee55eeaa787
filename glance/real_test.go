package glance

import (
	"bytes"
	"context"
	"crypto/md5"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/glancegw/glancegw/cache"
	"github.com/glancegw/glancegw/cache/cachetest"
)

// Real-Glance tests use GLANCEGW_TEST_GLANCE_URL (a noauth Glance) when
// set; otherwise they start a private Glance with test/glance/start.sh on
// free ports, and skip loudly when glance-api is not installed. The
// keystone test needs GLANCEGW_TEST_KEYSTONE_URL (+ GLANCEGW_TEST_GLANCE_URL,
// OS_USERNAME, OS_PASSWORD, OS_PROJECT_NAME) or starts keystone mode itself
// (about 13 s; skipped with -short).

// sharedGlance is one noauth Glance for every test of the package run,
// stopped by TestMain: starting one takes seconds.
var sharedGlance struct {
	once  sync.Once
	url   string
	state string
	err   error
}

func TestMain(m *testing.M) {
	code := m.Run()
	if sharedGlance.state != "" {
		if err := stopGlance(sharedGlance.state); err != nil {
			fmt.Fprintln(os.Stderr, err)
		}
	}
	os.Exit(code)
}

func glanceScripts() string {
	dir, err := filepath.Abs("../test/glance")
	if err != nil {
		panic(err)
	}
	return dir
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// startGlance runs start.sh in mode on free ports with its state in a new
// temp dir, and returns the Glance URL and the state dir.
func startGlance(mode string) (url, state string, err error) {
	parent, err := os.MkdirTemp("", "glancegw-glance-test-")
	if err != nil {
		return "", "", err
	}
	state = filepath.Join(parent, "state") // start.sh wants to create it
	gport, err1 := freePort()
	kport, err2 := freePort()
	if err := errors.Join(err1, err2); err != nil {
		return "", "", err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "bash", filepath.Join(glanceScripts(), "start.sh"), mode, state)
	cmd.Env = append(os.Environ(), "GLANCE_PORT="+strconv.Itoa(gport), "KEYSTONE_PORT="+strconv.Itoa(kport))
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		stopGlance(state)
		return "", "", fmt.Errorf("start.sh %s: %w\n%s", mode, err, stderr.String())
	}
	fields := strings.Fields(string(out))
	if len(fields) == 0 {
		stopGlance(state)
		return "", "", fmt.Errorf("start.sh %s printed no URL\n%s", mode, stderr.String())
	}
	return fields[len(fields)-1], state, nil
}

// stopGlance runs stop.sh (which removes the state dir) and removes the
// temp parent.
func stopGlance(state string) error {
	out, err := exec.Command("bash", filepath.Join(glanceScripts(), "stop.sh"), state).CombinedOutput()
	os.RemoveAll(filepath.Dir(state))
	if err != nil {
		return fmt.Errorf("stop.sh %s: %w\n%s", state, err, out)
	}
	return nil
}

func skipWithoutGlance(t testing.TB) {
	t.Helper()
	if _, err := exec.LookPath("glance-api"); err != nil {
		t.Skip("*** SKIPPING REAL-GLANCE TEST: glance-api is not installed (run test/glance/install.sh) ***")
	}
}

// realGlanceURL is GLANCEGW_TEST_GLANCE_URL or the shared private Glance.
func realGlanceURL(t testing.TB) string {
	t.Helper()
	if u := os.Getenv("GLANCEGW_TEST_GLANCE_URL"); u != "" {
		return u
	}
	skipWithoutGlance(t)
	sharedGlance.once.Do(func() {
		sharedGlance.url, sharedGlance.state, sharedGlance.err = startGlance("noauth")
	})
	if sharedGlance.err != nil {
		t.Fatal(sharedGlance.err)
	}
	return sharedGlance.url
}

// uploaded creates an active image holding data, deleted when t ends.
func uploaded(t testing.TB, c *Client, name string, data []byte, size int64) Image {
	t.Helper()
	return uploadedFor(t, t, c, name, data, size)
}

// uploadedFor is uploaded with the image deleted when owner ends.
func uploadedFor(t, owner testing.TB, c *Client, name string, data []byte, size int64) Image {
	t.Helper()
	ctx := context.Background()
	img, err := c.Create(ctx, CreateOpts{Name: name, DiskFormat: "raw", ContainerFormat: "bare"})
	if err != nil {
		t.Fatal(err)
	}
	owner.Cleanup(func() { c.Delete(context.Background(), img.ID) })
	if err := c.Upload(ctx, img.ID, bytes.NewReader(data), size); err != nil {
		t.Fatal(err)
	}
	img, err = c.Get(ctx, img.ID)
	if err != nil {
		t.Fatal(err)
	}
	sum := md5.Sum(data)
	if img.Status != "active" || img.Size != int64(len(data)) || img.Checksum != hex.EncodeToString(sum[:]) {
		t.Fatalf("uploaded image: status %s size %d checksum %s; want active %d %x", img.Status, img.Size, img.Checksum, len(data), sum)
	}
	return img
}

func TestRealGlance(t *testing.T) {
	url := realGlanceURL(t)
	ctx := context.Background()
	c := newTestClient(t, Config{URL: url, PageSize: 2})

	data := randomBytes(3<<20+123, 30)
	img := uploaded(t, c, "real-len", data, int64(len(data)))
	chunked := uploaded(t, c, "real-chunked", data[:1<<20], -1)

	t.Run("ReadSource", func(t *testing.T) {
		src := c.Source("dom", img)
		defer src.Close()
		if got := readAll(ctx, t, src, 256<<10); !bytes.Equal(got, data) {
			t.Fatal("sequential read differs")
		}
		var wg sync.WaitGroup
		for g := range 4 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := range 20 {
					off := int64((g*7919 + i*104729) % len(data))
					if !cachetest.CheckRead(t, src, data, off, 300000) {
						return
					}
				}
			}()
		}
		wg.Wait()
		if !src.RangesSupported() {
			t.Error("the file store serves ranges, but the source fell back")
		}
	})

	t.Run("HTTPSource", func(t *testing.T) {
		hs, err := NewHTTPSource(ctx, HTTPSourceConfig{URL: c.FileURL(chunked.ID)}, nil)
		if err != nil {
			t.Fatal(err)
		}
		defer hs.Close()
		if hs.Size() != 1<<20 || !hs.RangesSupported() {
			t.Errorf("discovered size %d ranges %v; want %d true", hs.Size(), hs.RangesSupported(), 1<<20)
		}
		if got := readAll(ctx, t, hs, 100000); !bytes.Equal(got, data[:1<<20]) {
			t.Fatal("HTTP source read differs")
		}
	})

	t.Run("ListPages", func(t *testing.T) {
		var ids []string
		for i := range 3 {
			ids = append(ids, uploaded(t, c, fmt.Sprintf("page-%d", i), []byte{byte(i)}, 1).ID)
		}
		imgs, err := c.List(ctx) // 5+ images, 2 per page
		if err != nil {
			t.Fatal(err)
		}
		seen := map[string]bool{}
		for _, im := range imgs {
			seen[im.ID] = true
		}
		for _, id := range append(ids, img.ID, chunked.ID) {
			if !seen[id] {
				t.Errorf("image %s missing from the %d listed", id, len(imgs))
			}
		}
	})

	t.Run("DeletedImage", func(t *testing.T) {
		gone := uploaded(t, c, "gone", data[:1000], 1000)
		src := c.Source("dom", gone)
		defer src.Close()
		if err := c.Delete(ctx, gone.ID); err != nil {
			t.Fatal(err)
		}
		var nf interface{ NotFound() bool }
		if _, err := c.Get(ctx, gone.ID); !errors.As(err, &nf) || !nf.NotFound() {
			t.Errorf("Get deleted: %v, want NotFound", err)
		}
		if _, err := src.ReadAt(ctx, make([]byte, 10), 0); !errors.As(err, &nf) || !nf.NotFound() {
			t.Errorf("read deleted: %v, want NotFound", err)
		}
	})

	t.Run("UploadToActive409", func(t *testing.T) {
		err := c.Upload(ctx, img.ID, bytes.NewReader(data[:10]), 10)
		var he *HTTPError
		if !errors.As(err, &he) || !he.Conflict() {
			t.Errorf("upload to an active image: %v, want 409", err)
		}
	})
}

// The conformance suite against the real Glance: one upload per size.
func TestRealGlanceConformance(t *testing.T) {
	if testing.Short() {
		t.Skip("-short: skipping the real-Glance conformance suite")
	}
	url := realGlanceURL(t)
	c := newTestClient(t, Config{URL: url, MinRangeSize: 256 << 10})
	var mu sync.Mutex
	images := map[string]Image{}
	owner := t
	cachetest.Run(t, func(t *testing.T, data []byte) cache.BlockSource {
		sum := md5.Sum(data)
		key := string(sum[:])
		mu.Lock()
		img, ok := images[key]
		mu.Unlock()
		if !ok {
			img = uploadedFor(t, owner, c, "conf", data, int64(len(data)))
			mu.Lock()
			images[key] = img
			mu.Unlock()
		}
		src := c.Source("dom", img)
		t.Cleanup(func() { src.Close() })
		return src
	})
}

func TestRealKeystone(t *testing.T) {
	gurl, kurl := os.Getenv("GLANCEGW_TEST_GLANCE_URL"), os.Getenv("GLANCEGW_TEST_KEYSTONE_URL")
	auth := Auth{Type: AuthKeystone, AuthURL: kurl, Username: os.Getenv("OS_USERNAME"),
		Password: os.Getenv("OS_PASSWORD"), Project: os.Getenv("OS_PROJECT_NAME")}
	if kurl == "" {
		if testing.Short() {
			t.Skip("-short: skipping the keystone test (starting keystone takes ~13 s)")
		}
		skipWithoutGlance(t)
		if _, err := exec.LookPath("keystone-manage"); err != nil {
			t.Skip("*** SKIPPING REAL-KEYSTONE TEST: keystone is not installed (run test/glance/install.sh) ***")
		}
		var state string
		var err error
		gurl, state, err = startGlance("keystone")
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() {
			if err := stopGlance(state); err != nil {
				t.Error(err)
			}
		})
		env, err := os.ReadFile(filepath.Join(state, "env.sh"))
		if err != nil {
			t.Fatal(err)
		}
		vars := map[string]string{}
		for _, line := range strings.Split(string(env), "\n") {
			k, v, ok := strings.Cut(strings.TrimPrefix(line, "export "), "=")
			if ok {
				vars[k] = strings.Trim(v, `"'`)
			}
		}
		auth = Auth{Type: AuthKeystone, AuthURL: vars["OS_AUTH_URL"], Username: vars["OS_USERNAME"],
			Password: vars["OS_PASSWORD"], Project: vars["OS_PROJECT_NAME"],
			UserDomain: vars["OS_USER_DOMAIN_NAME"], ProjectDomain: vars["OS_PROJECT_DOMAIN_NAME"]}
	}
	ctx := context.Background()
	c, err := New(ctx, Config{URL: gurl, Auth: auth}, nil)
	if err != nil {
		t.Fatal(err)
	}
	data := randomBytes(2<<20+7, 31)
	img := uploaded(t, c, "ks", data, -1)
	src := c.Source("dom", img)
	defer src.Close()
	if got := readAll(ctx, t, src, 1<<20); !bytes.Equal(got, data) {
		t.Fatal("read differs")
	}
	// The catalog gives the endpoint too.
	c2, err := New(ctx, Config{Auth: auth}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c2.Get(ctx, img.ID); err != nil {
		t.Errorf("Get through the catalog endpoint: %v", err)
	}
	// A bad password fails clearly.
	bad := auth
	bad.Password = "not-the-password"
	if _, err := New(ctx, Config{URL: gurl, Auth: bad}, nil); err == nil ||
		strings.Contains(err.Error(), "not-the-password") {
		t.Errorf("New with a bad password: %v", err)
	}
}

// BenchmarkRealSequential reads a 256 MiB image sequentially through a
// Source (1 MiB ReadAt calls, as the cache issues them), against one plain
// GET of the whole file and against 4 MiB ranged GETs without streaming.
func BenchmarkRealSequential(b *testing.B) {
	url := realGlanceURL(b)
	c, err := New(context.Background(), Config{URL: url}, nil)
	if err != nil {
		b.Fatal(err)
	}
	const size = 256 << 20
	data := randomBytes(size, 40)
	img := uploaded(b, c, "bench", data, size)
	ctx := context.Background()

	for _, rs := range []struct {
		name string
		size int
	}{{"Source-1MiB-reads", 1 << 20}, {"Source-128KiB-reads", 128 << 10}} {
		b.Run(rs.name, func(b *testing.B) {
			b.SetBytes(size)
			p := make([]byte, rs.size)
			for b.Loop() {
				src := c.Source("dom", img)
				for off := int64(0); off < size; off += int64(len(p)) {
					if _, err := src.ReadAt(ctx, p, off); err != nil {
						b.Fatal(err)
					}
				}
				src.Close()
			}
		})
	}
	b.Run("PlainGET", func(b *testing.B) {
		b.SetBytes(size)
		for b.Loop() {
			resp, err := http.Get(c.FileURL(img.ID))
			if err != nil {
				b.Fatal(err)
			}
			n, err := io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if err != nil || n != size {
				b.Fatalf("GET: %d bytes, %v", n, err)
			}
		}
	})
	b.Run("Ranged-4MiB-GETs", func(b *testing.B) {
		b.SetBytes(size)
		buf := make([]byte, 4<<20)
		for b.Loop() {
			for off := 0; off < size; off += len(buf) {
				req, _ := http.NewRequest(http.MethodGet, c.FileURL(img.ID), nil)
				req.Header.Set("Range", fmt.Sprintf("bytes=%d-%d", off, off+len(buf)-1))
				resp, err := http.DefaultClient.Do(req)
				if err != nil {
					b.Fatal(err)
				}
				_, err = io.ReadFull(resp.Body, buf)
				resp.Body.Close()
				if err != nil {
					b.Fatal(err)
				}
			}
		}
	})
}
