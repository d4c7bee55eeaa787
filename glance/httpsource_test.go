package glance

import (
	"bytes"
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

func TestHTTPSourceRejectsSchemes(t *testing.T) {
	for _, u := range []string{"ftp://h/x", "file:///etc/passwd", "/relative", "http://", "gopher://h/"} {
		if _, err := NewHTTPSource(context.Background(), HTTPSourceConfig{URL: u, Size: 10}, nil); err == nil {
			t.Errorf("NewHTTPSource(%q) accepted", u)
		}
	}
}

func TestHTTPSourceSizeDiscovery(t *testing.T) {
	data := randomBytes(12345, 50)
	for _, tc := range []struct {
		name      string
		data      []byte
		handler   func(w http.ResponseWriter, r *http.Request)
		wantSize  int64
		wantRange bool
		wantErr   error
	}{
		{"206", data, nil, 12345, true, nil},
		{"200-ignores-range", data, func(w http.ResponseWriter, r *http.Request) {
			r.Header.Del("Range")
			serveBytes(w, r, data)
		}, 12345, false, nil},
		{"400-then-HEAD", data, func(w http.ResponseWriter, r *http.Request) {
			if r.Header.Get("Range") != "" {
				http.Error(w, "no ranges", http.StatusBadRequest)
				return
			}
			serveBytes(w, r, data)
		}, 12345, false, nil},
		{"empty-416", []byte{}, nil, 0, true, nil},
		{"no-length", data, func(w http.ResponseWriter, r *http.Request) {
			if r.Method == http.MethodHead {
				w.WriteHeader(http.StatusOK) // no Content-Length either
				return
			}
			w.Header().Set("Content-Range", "bytes 0-0/*")
			w.WriteHeader(http.StatusPartialContent)
			w.Write(data[:1])
		}, 0, false, ErrUnknownSize},
		{"404", data, func(w http.ResponseWriter, r *http.Request) { http.NotFound(w, r) }, 0, false, ErrNotFound},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := tc.handler
			if h == nil {
				h = func(w http.ResponseWriter, r *http.Request) { serveBytes(w, r, tc.data) }
			}
			srv := httptest.NewServer(http.HandlerFunc(h))
			defer srv.Close()
			src, err := NewHTTPSource(context.Background(), HTTPSourceConfig{URL: srv.URL + "/img", Backoff: time.Millisecond}, nil)
			if tc.wantErr != nil {
				if !errors.Is(err, tc.wantErr) {
					t.Fatalf("err = %v, want %v", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			defer src.Close()
			if src.Size() != tc.wantSize || src.RangesSupported() != tc.wantRange {
				t.Errorf("size %d ranges %v, want %d %v", src.Size(), src.RangesSupported(), tc.wantSize, tc.wantRange)
			}
			if got := readAll(context.Background(), t, src, 4000); !bytes.Equal(got, tc.data) {
				t.Error("bytes differ")
			}
		})
	}
}

// A given size skips discovery; headers go with every request and never
// into logs or errors, and neither does a signed query.
func TestHTTPSourceHeadersAndSecrets(t *testing.T) {
	data := randomBytes(100000, 51)
	var requests, withToken atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		requests.Add(1)
		if r.Header.Get("X-Auth-Token") == "tok-secret" {
			withToken.Add(1)
		}
		if r.URL.Query().Get("sig") != "sig-secret" {
			http.Error(w, "bad signature", http.StatusForbidden)
			return
		}
		serveBytes(w, r, data)
	}))
	defer srv.Close()
	var logs logBuffer
	hdr := http.Header{}
	hdr["x-auth-token"] = []string{"tok-secret"} // not canonical on purpose
	src, err := NewHTTPSource(context.Background(), HTTPSourceConfig{
		URL: srv.URL + "/img?sig=sig-secret", Header: hdr, Size: int64(len(data)),
		Backoff: time.Millisecond,
	}, newTestLogger(&logs))
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	if requests.Load() != 0 {
		t.Errorf("%d requests before the first read, want 0 (size given)", requests.Load())
	}
	if got := readAll(context.Background(), t, src, 30000); !bytes.Equal(got, data) {
		t.Fatal("bytes differ")
	}
	if requests.Load() == 0 || withToken.Load() != requests.Load() {
		t.Errorf("%d of %d requests carried the header", withToken.Load(), requests.Load())
	}
	if strings.Contains(src.Identity(), "sig-secret") {
		t.Errorf("identity %q shows the signed query", src.Identity())
	}

	// The server goes away: the error and the retry log name the URL
	// without its query.
	srv.Close()
	src2, _ := NewHTTPSource(context.Background(), HTTPSourceConfig{
		URL: srv.URL + "/img?sig=sig-secret", Header: hdr, Size: int64(len(data)),
		Retries: 1, Backoff: time.Millisecond,
	}, newTestLogger(&logs))
	_, err = src2.ReadAt(context.Background(), make([]byte, 10), 0)
	if err == nil {
		t.Fatal("read from a closed server succeeded")
	}
	for _, secret := range []string{"sig-secret", "tok-secret"} {
		if strings.Contains(err.Error(), secret) || strings.Contains(logs.String(), secret) {
			t.Errorf("%q leaks: err %v\nlog:\n%s", secret, err, logs.String())
		}
	}
	if !strings.Contains(logs.String(), "retrying") {
		t.Errorf("no retry logged:\n%s", logs.String())
	}
}

// X-Auth-Token stays with its origin across redirects.
func TestRedirectDropsTokenCrossOrigin(t *testing.T) {
	data := randomBytes(5000, 52)
	var leaked atomic.Bool
	other := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("X-Auth-Token") != "" {
			leaked.Store(true)
		}
		serveBytes(w, r, data)
	}))
	defer other.Close()
	home := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, other.URL+"/elsewhere", http.StatusFound)
	}))
	defer home.Close()
	src, err := NewHTTPSource(context.Background(), HTTPSourceConfig{
		URL: home.URL + "/img", Header: http.Header{"X-Auth-Token": {"tok"}},
	}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	if got := readAll(context.Background(), t, src, 1000); !bytes.Equal(got, data) {
		t.Fatal("bytes differ")
	}
	if leaked.Load() {
		t.Error("the token was sent to another origin")
	}
}
