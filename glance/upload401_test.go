package glance

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net/http"
	"sync/atomic"
	"testing"
	"time"
)

// A 401 that arrives while the body is half sent (the token expired
// mid-upload) fails the upload with ErrBodyConsumed: the body is not sent
// again (not even empty), and the image is not left active with a short or
// empty body. TestUploadKeystone covers the 401 after the whole body.
func TestUpload401MidBody(t *testing.T) {
	g := newFakeGlance(t)
	k := newFakeKeystone(t, g, "pw", time.Hour)
	cfg := fastConfig(g.srv.URL)
	cfg.Auth = Auth{Type: AuthKeystone, AuthURL: k.srv.URL, Username: "admin", Password: "pw", Project: "admin"}
	ctx := context.Background()
	c, err := New(ctx, cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	img, err := c.Create(ctx, CreateOpts{Name: "mid", DiskFormat: "raw", ContainerFormat: "bare"})
	if err != nil {
		t.Fatal(err)
	}
	const size = 4 << 20
	var puts, took atomic.Int64
	g.setFault(func(w http.ResponseWriter, r *http.Request) bool {
		if r.Method != http.MethodPut {
			return false
		}
		puts.Add(1)
		n, _ := io.CopyN(io.Discard, r.Body, size/2)
		took.Store(n)
		w.Header().Set("Connection", "close")
		http.Error(w, "The request you have made requires authentication.", http.StatusUnauthorized)
		return true
	})
	body := bytes.NewReader(randomBytes(size, 41))
	err = c.Upload(ctx, img.ID, body, size)
	if !errors.Is(err, ErrBodyConsumed) {
		t.Fatalf("err = %v, want ErrBodyConsumed", err)
	}
	if n := puts.Load(); n != 1 {
		t.Errorf("%d PUTs, want exactly 1 (a consumed body is never re-sent)", n)
	}
	if took.Load() != size/2 {
		t.Errorf("Glance read %d bytes before its 401, want %d: the test did not exercise a mid-body 401", took.Load(), size/2)
	}
	g.setFault(nil)
	got, err := c.Get(ctx, img.ID)
	if err != nil {
		t.Fatal(err)
	}
	if got.Status == "active" || got.Size != 0 {
		t.Errorf("after a 401 mid-upload the image is %s with size %d, want not active and empty", got.Status, got.Size)
	}
}

// lateReader counts Reads that happen after the upload returned.
type lateReader struct {
	r        io.Reader
	returned atomic.Bool
	late     atomic.Int64
}

func (l *lateReader) Read(p []byte) (int, error) {
	if l.returned.Load() {
		l.late.Add(1)
	}
	time.Sleep(200 * time.Microsecond) // a producer slower than the socket
	return l.r.Read(p[:min(len(p), 32<<10)])
}

// Glance may answer an upload before it read the body. Upload must not
// return while net/http still reads the caller's reader: the caller
// (export) hashes and recycles what it hands out.
func TestUploadReturnsAfterTransportLetGo(t *testing.T) {
	g := newFakeGlance(t)
	ctx := context.Background()
	c, err := New(ctx, fastConfig(g.srv.URL), nil)
	if err != nil {
		t.Fatal(err)
	}
	img, err := c.Create(ctx, CreateOpts{Name: "early", DiskFormat: "raw", ContainerFormat: "bare"})
	if err != nil {
		t.Fatal(err)
	}
	const size = 64 << 20
	g.setFault(func(w http.ResponseWriter, r *http.Request) bool {
		if r.Method != http.MethodPut {
			return false
		}
		io.CopyN(io.Discard, r.Body, 1<<20)
		http.Error(w, "store full", http.StatusRequestEntityTooLarge)
		return true
	})
	for i := range 5 {
		body := &lateReader{r: bytes.NewReader(randomBytes(size, uint64(50+i)))}
		err := c.Upload(ctx, img.ID, body, size)
		body.returned.Store(true)
		var he *HTTPError
		if !errors.As(err, &he) || he.Status != http.StatusRequestEntityTooLarge {
			t.Fatalf("err = %v, want the 413", err)
		}
		time.Sleep(50 * time.Millisecond)
		if n := body.late.Load(); n != 0 {
			t.Fatalf("try %d: %d reads of the body after Upload returned", i, n)
		}
	}
}
