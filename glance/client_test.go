package glance

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"
)

func TestNewRejectsBadConfig(t *testing.T) {
	for _, tc := range []struct {
		name string
		cfg  Config
		want string
	}{
		{"no url", Config{}, "endpoint URL"},
		{"ftp", Config{URL: "ftp://h/x"}, "want http(s)"},
		{"credentials in url", Config{URL: "http://u:secretpw@h:9292"}, "no credentials"},
		{"unknown auth", Config{URL: "http://h", Auth: Auth{Type: "basic"}}, "unknown auth type"},
		{"token without token", Config{URL: "http://h", Auth: Auth{Type: "token"}}, "no token"},
		{"keystone missing", Config{URL: "http://h", Auth: Auth{Type: "keystone", Username: "u"}}, "missing auth URL, password, project"},
		{"ca file missing", Config{URL: "https://h", CAFile: "/nonexistent/ca.pem"}, "read CA file"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := New(context.Background(), tc.cfg, nil)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("New error = %v, want it to contain %q", err, tc.want)
			}
			if strings.Contains(fmt.Sprint(err), "secretpw") {
				t.Errorf("error leaks the password: %v", err)
			}
		})
	}
}

func TestEndpointBase(t *testing.T) {
	for in, want := range map[string]string{
		"http://h:9292":          "http://h:9292",
		"http://h:9292/":         "http://h:9292",
		"http://h:9292/v2/":      "http://h:9292",
		"https://h/image":        "https://h/image",
		"https://h/image/v2":     "https://h/image",
		"http://127.0.0.1:9292/": "http://127.0.0.1:9292",
	} {
		got, err := endpointBase(in)
		if err != nil || got != want {
			t.Errorf("endpointBase(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
	c := newTestClient(t, Config{URL: "http://h:9292/v2/"})
	if got, want := c.FileURL("abc-1"), "http://h:9292/v2/images/abc-1/file"; got != want {
		t.Errorf("FileURL = %q, want %q", got, want)
	}
}

func TestCheckID(t *testing.T) {
	for _, id := range []string{"", ".", "..", "a/b", "a?b", "a#b", "a b", "../x"} {
		if checkID(id) == nil {
			t.Errorf("checkID(%q) = nil, want an error", id)
		}
	}
	for _, id := range []string{"0f3c1a4e-5b6d-4e7f-8a9b-0c1d2e3f4a5b", "my_image.1"} {
		if err := checkID(id); err != nil {
			t.Errorf("checkID(%q) = %v", id, err)
		}
	}
}

// List follows every page: 60 images at Glance's default 25 per page.
func TestListPages(t *testing.T) {
	g := newFakeGlance(t)
	var want []string
	for i := range 60 {
		want = append(want, g.add(fmt.Sprintf("img-%02d", i), []byte{byte(i)}).ID)
	}
	c := newTestClient(t, fastConfig(g.srv.URL))
	imgs, err := c.List(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, img := range imgs {
		got = append(got, img.ID)
	}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("listed %d images %v, want %d %v", len(got), got, len(want), want)
	}
	if n := g.listCalls.Load(); n != 3 {
		t.Errorf("%d list requests, want 3 pages", n)
	}
	first := imgs[0]
	if first.Name != "img-00" || first.Status != "active" || first.Size != 1 || first.DiskFormat != "raw" ||
		first.Checksum == "" || first.UpdatedAt.IsZero() || !bytes.Contains(first.Raw, []byte(`"visibility":"shared"`)) {
		t.Errorf("first image decoded as %+v (raw %s)", first, first.Raw)
	}
}

func TestListEmpty(t *testing.T) {
	g := newFakeGlance(t)
	imgs, err := newTestClient(t, fastConfig(g.srv.URL)).List(context.Background())
	if err != nil || len(imgs) != 0 {
		t.Fatalf("List = %v, %v; want none", imgs, err)
	}
}

func TestCreateUploadGetDelete(t *testing.T) {
	g := newFakeGlance(t)
	c := newTestClient(t, fastConfig(g.srv.URL))
	ctx := context.Background()
	data := randomBytes(300000, 20)
	for _, tc := range []struct {
		name    string
		size    int64
		chunked bool
		data    []byte
	}{
		{"with-length", int64(len(data)), false, data},
		{"chunked", -1, true, data},
		{"empty", 0, false, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			img, err := c.Create(ctx, CreateOpts{Name: tc.name, DiskFormat: "raw", ContainerFormat: "bare"})
			if err != nil {
				t.Fatal(err)
			}
			if img.Status != "queued" || img.DiskFormat != "raw" || img.ContainerFormat != "bare" || img.Name != tc.name {
				t.Errorf("created %+v", img)
			}
			if err := c.Upload(ctx, img.ID, bytes.NewReader(tc.data), tc.size); err != nil {
				t.Fatal(err)
			}
			g.mu.Lock()
			put := g.puts[len(g.puts)-1]
			g.mu.Unlock()
			if put.chunked != tc.chunked || (!tc.chunked && put.length != tc.size) || put.got != len(tc.data) {
				t.Errorf("PUT seen as %+v, want chunked=%v length=%d", put, tc.chunked, tc.size)
			}
			got, err := c.Get(ctx, img.ID)
			if err != nil {
				t.Fatal(err)
			}
			if got.Status != "active" || got.Size != int64(len(tc.data)) {
				t.Errorf("after upload: %+v", got)
			}
			src := c.Source("d", got)
			closeSource(t, src)
			if back := readAll(ctx, t, src, 1<<20); !bytes.Equal(back, tc.data) {
				t.Error("downloaded bytes differ")
			}
			if err := c.Delete(ctx, img.ID); err != nil {
				t.Fatal(err)
			}
			var nf interface{ NotFound() bool }
			if err := c.Delete(ctx, img.ID); !errors.As(err, &nf) || !nf.NotFound() {
				t.Errorf("second Delete: %v, want NotFound", err)
			}
		})
	}
	// A second upload to an active image is a 409.
	img, _ := c.Create(ctx, CreateOpts{Name: "twice", DiskFormat: "raw", ContainerFormat: "bare"})
	if err := c.Upload(ctx, img.ID, bytes.NewReader(data), int64(len(data))); err != nil {
		t.Fatal(err)
	}
	err := c.Upload(ctx, img.ID, bytes.NewReader(data), int64(len(data)))
	var he *HTTPError
	if !errors.As(err, &he) || !he.Conflict() {
		t.Errorf("upload to an active image: %v, want a 409", err)
	}
	if _, err := c.Create(ctx, CreateOpts{}); err == nil {
		t.Error("Create without a name succeeded")
	}
}

// infiniteReader never ends.
type infiniteReader struct{}

func (infiniteReader) Read(p []byte) (int, error) { clear(p); return len(p), nil }

// A server that stops taking the body fails the upload within the idle
// timeout instead of hanging.
func TestUploadStallBounded(t *testing.T) {
	g := newFakeGlance(t)
	release := make(chan struct{})
	defer close(release)
	g.setFault(func(w http.ResponseWriter, r *http.Request) bool {
		if r.Method != http.MethodPut {
			return false
		}
		select { // never reads the body
		case <-release:
		case <-r.Context().Done():
		}
		return true
	})
	c := newTestClient(t, fastConfig(g.srv.URL))
	img, err := c.Create(context.Background(), CreateOpts{Name: "x", DiskFormat: "raw", ContainerFormat: "bare"})
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	err = c.Upload(context.Background(), img.ID, infiniteReader{}, -1)
	if !errors.Is(err, ErrIdleTimeout) {
		t.Fatalf("err = %v, want ErrIdleTimeout", err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("took %v", d)
	}
}

// A pause of Glance shorter than UploadIdleTimeout is ridden out (a body
// cannot be sent again), however short the read IdleTimeout is.
func TestUploadRidesOutAPause(t *testing.T) {
	for _, tc := range []struct {
		idle time.Duration
		ok   bool
	}{{5 * time.Second, true}, {300 * time.Millisecond, false}} {
		g := newFakeGlance(t)
		g.setFault(func(w http.ResponseWriter, r *http.Request) bool {
			if r.Method == http.MethodPut {
				time.Sleep(1500 * time.Millisecond) // takes no byte meanwhile
			}
			return false
		})
		cfg := fastConfig(g.srv.URL)
		cfg.UploadIdleTimeout = tc.idle
		c := newTestClient(t, cfg)
		img, err := c.Create(context.Background(), CreateOpts{Name: "x", DiskFormat: "raw", ContainerFormat: "bare"})
		if err != nil {
			t.Fatal(err)
		}
		data := randomBytes(16<<20, 5)
		err = c.Upload(context.Background(), img.ID, bytes.NewReader(data), int64(len(data)))
		if tc.ok && err != nil {
			t.Errorf("upload idle %v, Glance paused 1.5 s: %v", tc.idle, err)
		}
		if !tc.ok && !errors.Is(err, ErrIdleTimeout) {
			t.Errorf("upload idle %v, Glance paused 1.5 s: %v, want ErrIdleTimeout", tc.idle, err)
		}
	}
}

func TestFixedTokenRejected(t *testing.T) {
	g := newFakeGlance(t)
	img := g.add("x", randomBytes(1000, 21))
	g.allowToken("good", true)
	cfg := fastConfig(g.srv.URL)
	cfg.Auth = Auth{Type: AuthToken, Token: "good"}
	var logs logBuffer
	c, err := New(context.Background(), cfg, newTestLogger(&logs))
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if _, err := c.List(ctx); err != nil {
		t.Fatalf("List with a good token: %v", err)
	}
	src := c.Source("d", img)
	closeSource(t, src)
	if _, err := src.ReadAt(ctx, make([]byte, 10), 0); err != nil {
		t.Fatalf("read with a good token: %v", err)
	}

	g.allowToken("good", false) // the token expires
	src = c.Source("d", img)    // a fresh source: no open body to reuse
	closeSource(t, src)
	const want = "token rejected (401); a fixed token cannot be renewed"
	_, errList := c.List(ctx)
	_, errGet := c.Get(ctx, img.ID)
	_, errRead := src.ReadAt(ctx, make([]byte, 10), 500)
	errUp := c.Upload(ctx, img.ID, strings.NewReader("abc"), 3)
	for what, err := range map[string]error{"list": errList, "get": errGet, "read": errRead, "upload": errUp} {
		if !errors.Is(err, ErrTokenRejected) || !strings.Contains(err.Error(), want) {
			t.Errorf("%s: %v, want %q", what, err, want)
		}
	}
	if n := g.fileGETs.Load(); n != 2 {
		t.Errorf("%d file GETs, want 2 (a rejected fixed token is not retried)", n)
	}
	if strings.Contains(logs.String(), "good") {
		t.Errorf("the token appears in the log:\n%s", logs.String())
	}
}

func TestKeystoneReauth(t *testing.T) {
	g := newFakeGlance(t)
	data := randomBytes(3<<20, 22)
	img := g.add("x", data)
	k := newFakeKeystone(t, g, "s3cret-pw", time.Hour)
	cfg := fastConfig("") // the endpoint comes from the catalog
	cfg.Auth = Auth{Type: AuthKeystone, AuthURL: k.srv.URL + "/v3", Username: "admin", Password: "s3cret-pw", Project: "admin"}
	var logs logBuffer
	ctx := context.Background()
	c, err := New(ctx, cfg, newTestLogger(&logs))
	if err != nil {
		t.Fatal(err)
	}
	if c.FileURL(img.ID) != g.srv.URL+"/v2/images/"+img.ID+"/file" {
		t.Errorf("endpoint from the catalog: FileURL = %s", c.FileURL(img.ID))
	}
	src := c.Source("d", img)
	closeSource(t, src)
	p := make([]byte, 1<<20)
	if _, err := src.ReadAt(ctx, p, 0); err != nil {
		t.Fatal(err)
	}

	// The token expires mid-read: the range is retried with a new token.
	g.allowToken(k.lastToken(), false)
	src.Close()
	src = c.Source("d", img)
	closeSource(t, src)
	if _, err := src.ReadAt(ctx, p, 1<<20); err != nil || !bytes.Equal(p, data[1<<20:2<<20]) {
		t.Fatalf("read after expiry: %v", err)
	}
	if n := k.auths.Load(); n != 2 {
		t.Errorf("%d authentications, want 2", n)
	}
	// gophercloud calls re-authenticate too.
	g.allowToken(k.lastToken(), false)
	if _, err := c.List(ctx); err != nil {
		t.Fatalf("List after expiry: %v", err)
	}
	if n := k.auths.Load(); n != 3 {
		t.Errorf("%d authentications, want 3", n)
	}
	for _, s := range []string{"s3cret-pw", k.lastToken()} {
		if strings.Contains(logs.String(), s) {
			t.Errorf("secret %q appears in the log", s)
		}
	}
}

func TestKeystoneBadPassword(t *testing.T) {
	g := newFakeGlance(t)
	k := newFakeKeystone(t, g, "right", time.Hour)
	cfg := fastConfig(g.srv.URL)
	cfg.Auth = Auth{Type: AuthKeystone, AuthURL: k.srv.URL, Username: "admin", Password: "wrong-pw", Project: "admin"}
	_, err := New(context.Background(), cfg, nil)
	if err == nil || !strings.Contains(err.Error(), "keystone authentication") {
		t.Fatalf("New with a bad password: %v", err)
	}
	if strings.Contains(err.Error(), "wrong-pw") {
		t.Errorf("error leaks the password: %v", err)
	}
}

// A token about to expire is renewed before an upload starts, since the
// body cannot be sent twice; a 401 after the body was sent is reported,
// not retried with an empty body.
func TestUploadKeystone(t *testing.T) {
	g := newFakeGlance(t)
	k := newFakeKeystone(t, g, "pw", 30*time.Second) // expires within the 1 min margin
	cfg := fastConfig(g.srv.URL)
	cfg.Auth = Auth{Type: AuthKeystone, AuthURL: k.srv.URL, Username: "admin", Password: "pw", Project: "admin"}
	ctx := context.Background()
	c, err := New(ctx, cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	img, err := c.Create(ctx, CreateOpts{Name: "up", DiskFormat: "raw", ContainerFormat: "bare"})
	if err != nil {
		t.Fatal(err)
	}
	before := k.auths.Load()
	if err := c.Upload(ctx, img.ID, strings.NewReader("hello"), 5); err != nil {
		t.Fatal(err)
	}
	if k.auths.Load() <= before {
		t.Error("no fresh token was fetched before the upload")
	}
	g.mu.Lock()
	put := g.puts[len(g.puts)-1]
	g.mu.Unlock()
	if put.token != k.lastToken() {
		t.Errorf("upload sent token %q, want the fresh %q", put.token, k.lastToken())
	}

	// Glance reads the body and then says 401.
	img2, err := c.Create(ctx, CreateOpts{Name: "up2", DiskFormat: "raw", ContainerFormat: "bare"})
	if err != nil {
		t.Fatal(err)
	}
	g.setFault(func(w http.ResponseWriter, r *http.Request) bool {
		if r.Method != http.MethodPut {
			return false
		}
		io.Copy(io.Discard, r.Body)
		g.mu.Lock()
		g.puts = append(g.puts, fakePut{token: r.Header.Get("X-Auth-Token")})
		g.mu.Unlock()
		http.Error(w, "unauthorized", http.StatusUnauthorized)
		return true
	})
	g.mu.Lock()
	putsBefore := len(g.puts)
	g.mu.Unlock()
	err = c.Upload(ctx, img2.ID, bytes.NewReader(randomBytes(200000, 23)), 200000)
	if !errors.Is(err, ErrBodyConsumed) {
		t.Fatalf("err = %v, want ErrBodyConsumed", err)
	}
	g.mu.Lock()
	putsAfter := len(g.puts)
	g.mu.Unlock()
	if putsAfter-putsBefore != 1 {
		t.Errorf("%d PUTs, want exactly 1 (never re-sent with an empty body)", putsAfter-putsBefore)
	}
}

// Many readers hit the expired token at once: one re-authentication
// serves them all.
func TestKeystoneConcurrentReauthOnce(t *testing.T) {
	g := newFakeGlance(t)
	data := randomBytes(8<<20, 24)
	img := g.add("x", data)
	k := newFakeKeystone(t, g, "pw", time.Hour)
	cfg := fastConfig(g.srv.URL)
	cfg.Auth = Auth{Type: AuthKeystone, AuthURL: k.srv.URL, Username: "admin", Password: "pw", Project: "admin"}
	c, err := New(context.Background(), cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	g.allowToken(k.lastToken(), false)
	src := c.Source("d", img)
	closeSource(t, src)
	var wg sync.WaitGroup
	for i := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			off := int64(i) << 20
			p := make([]byte, 100000)
			if _, err := src.ReadAt(context.Background(), p, off); err != nil || !bytes.Equal(p, data[off:off+int64(len(p))]) {
				t.Errorf("read at %d: %v", off, err)
			}
		}()
	}
	wg.Wait()
	if n := k.auths.Load(); n != 2 {
		t.Errorf("%d authentications for 8 readers after one expiry, want 2", n)
	}
}

func TestNoRetries(t *testing.T) {
	g := newFakeGlance(t)
	fault, hits := faultN(1, func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, "busy", http.StatusServiceUnavailable)
	})
	g.setFault(fault)
	cfg := fastConfig(g.srv.URL)
	cfg.Retries = -1
	src := newTestClient(t, cfg).Source("d", g.add("x", randomBytes(1000, 25)))
	closeSource(t, src)
	_, err := src.ReadAt(context.Background(), make([]byte, 10), 0)
	var he *HTTPError
	if !errors.As(err, &he) || he.Status != http.StatusServiceUnavailable || hits.Load() != 1 {
		t.Errorf("Retries -1: err %v after %d attempts, want the 503 after 1", err, hits.Load())
	}
}

// Glance takes the whole body and then never answers: bounded by
// UploadFinishTimeout, not by RequestTimeout and not forever.
func TestUploadNoAnswerBounded(t *testing.T) {
	g := newFakeGlance(t)
	release := make(chan struct{})
	defer close(release)
	g.setFault(func(w http.ResponseWriter, r *http.Request) bool {
		if r.Method != http.MethodPut {
			return false
		}
		io.Copy(io.Discard, r.Body)
		select {
		case <-release:
		case <-r.Context().Done():
		}
		return true
	})
	cfg := fastConfig(g.srv.URL)
	cfg.RequestTimeout = 100 * time.Millisecond // must not apply to the answer of an upload
	cfg.UploadFinishTimeout = 600 * time.Millisecond
	c := newTestClient(t, cfg)
	img, err := c.Create(context.Background(), CreateOpts{Name: "x", DiskFormat: "raw", ContainerFormat: "bare"})
	if err != nil {
		t.Fatal(err)
	}
	for _, size := range []int64{0, 100000, -1} {
		start := time.Now()
		err = c.Upload(context.Background(), img.ID, bytes.NewReader(make([]byte, max(size, 5000))), size)
		took := time.Since(start)
		if !errors.Is(err, ErrNoAnswer) {
			t.Fatalf("size %d: err = %v, want ErrNoAnswer", size, err)
		}
		if took < 500*time.Millisecond || took > 3*time.Second {
			t.Errorf("size %d: took %v, want about 600ms", size, took)
		}
	}
}

// A reader longer than the declared size sends exactly size bytes.
func TestUploadSendsExactlySize(t *testing.T) {
	g := newFakeGlance(t)
	c := newTestClient(t, fastConfig(g.srv.URL))
	img, err := c.Create(context.Background(), CreateOpts{Name: "x", DiskFormat: "raw", ContainerFormat: "bare"})
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Upload(context.Background(), img.ID, infiniteReader{}, 12345); err != nil {
		t.Fatal(err)
	}
	got, err := c.Get(context.Background(), img.ID)
	if err != nil || got.Size != 12345 {
		t.Errorf("uploaded size %d (%v), want 12345", got.Size, err)
	}
	// A reader shorter than the declared size fails.
	img2, _ := c.Create(context.Background(), CreateOpts{Name: "y", DiskFormat: "raw", ContainerFormat: "bare"})
	if err := c.Upload(context.Background(), img2.ID, bytes.NewReader(make([]byte, 10)), 20); err == nil {
		t.Error("an upload shorter than its size succeeded")
	}
}
