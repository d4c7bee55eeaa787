package hostd

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"
)

// fakeGlanceHTTP is a minimal Glance v2 API for the real glance client:
// paged listing, image records, ranged file reads, X-Auth-Token checks.
type fakeGlanceHTTP struct {
	token string // required X-Auth-Token; empty: no auth

	mu     sync.Mutex
	images []map[string]any
	data   map[string][]byte
	tokens []string // X-Auth-Token values seen
}

func (f *fakeGlanceHTTP) add(id, name string, data []byte) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.images = append(f.images, map[string]any{
		"id": id, "name": name, "status": "active", "size": len(data), "disk_format": "raw",
		"container_format": "bare", "checksum": fmt.Sprintf("%x", len(data)), "visibility": "public",
		"created_at": "2024-01-02T03:04:05Z", "updated_at": "2024-01-02T03:04:05Z", "hw_firmware_type": "uefi",
	})
	f.data[id] = data
}

func (f *fakeGlanceHTTP) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	f.mu.Lock()
	f.tokens = append(f.tokens, r.Header.Get("X-Auth-Token"))
	f.mu.Unlock()
	if f.token != "" && r.Header.Get("X-Auth-Token") != f.token {
		http.Error(w, "401 Unauthorized", http.StatusUnauthorized)
		return
	}
	path := strings.TrimPrefix(r.URL.Path, "/v2/images")
	f.mu.Lock()
	defer f.mu.Unlock()
	switch {
	case path == "" || path == "/":
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(map[string]any{"images": f.images, "first": "/v2/images", "schema": "/v2/schemas/images"})
	case strings.HasSuffix(path, "/file"):
		id := strings.TrimSuffix(strings.TrimPrefix(path, "/"), "/file")
		b, ok := f.data[id]
		if !ok {
			http.NotFound(w, r)
			return
		}
		w.Header().Set("Content-Type", "application/octet-stream")
		http.ServeContent(w, r, "", time.Time{}, bytes.NewReader(b))
	default:
		id := strings.TrimPrefix(path, "/")
		for _, im := range f.images {
			if im["id"] == id {
				w.Header().Set("Content-Type", "application/json")
				json.NewEncoder(w).Encode(im)
				return
			}
		}
		http.NotFound(w, r)
	}
}

// TestRealGlanceClient runs the daemon with the real glance client against
// an httptest Glance that wants a token.
func TestRealGlanceClient(t *testing.T) {
	g := &fakeGlanceHTTP{token: testToken, data: map[string][]byte{}}
	data := bytes.Repeat([]byte("0123456789abcdef"), 1<<16) // 1 MiB
	g.add("11111111-2222-4333-8444-555555555555", "disk.raw", data)
	srv := httptest.NewServer(g)
	defer srv.Close()

	e := newTestEnv(t)
	e.cfg.connect = nil // the real glance client
	r := e.start()
	if _, err := r.c.AddDomain(ctx, DomainSpec{Name: "real", URL: srv.URL, Auth: "token", Token: testToken, UUID: uuidA}); err != nil {
		t.Fatal(err)
	}
	imgs, err := r.c.Images(ctx, "real", true)
	if err != nil || len(imgs) != 1 || imgs[0].Size != int64(len(data)) || imgs[0].Name != "disk.raw" {
		t.Fatalf("images = %+v, %v", imgs, err)
	}
	ex := &exports{d: r.d}
	exp, err := ex.Lookup("11111111-2222-4333-8444-555555555555")
	if err != nil {
		t.Fatalf("export not found: %v", err)
	}
	buf := make([]byte, 4096)
	if n, err := exp.Source.ReadAt(ctx, buf, 1<<19); err != nil || !bytes.Equal(buf[:n], data[1<<19:1<<19+4096]) {
		t.Fatalf("read through the cache from Glance: %d, %v", n, err)
	}
	// Meta carries Glance's own fields and ours.
	dom, _ := r.d.find("real")
	fimgs, err := dom.Images(ctx, false)
	if err != nil || len(fimgs) != 1 {
		t.Fatal(err)
	}
	var meta map[string]any
	json.Unmarshal(fimgs[0].Meta, &meta)
	if meta["hw_firmware_type"] != "uefi" || meta["glancegw"].(map[string]any)["sd_uuid"] != uuidA {
		t.Errorf("meta = %v", meta)
	}

	// A wrong token: the domain stays, the error says so and how to fix
	// it (auth_failed, exit code 7), and it is not an outage.
	bad := "wrong"
	if _, err := r.c.EditDomain(ctx, "real", DomainPatch{Token: &bad}); err != nil {
		t.Fatal(err)
	}
	_, err = r.c.Images(ctx, "real", true)
	if !errors.Is(err, ErrAuthFailed) || errors.Is(err, ErrUnavailable) ||
		!strings.Contains(err.Error(), "glancegw domain edit real --token-file") {
		t.Errorf("wrong token: %v, want auth_failed with a hint", err)
	}
	r.stop(t)
	g.mu.Lock()
	sawToken := false
	for _, tok := range g.tokens {
		sawToken = sawToken || tok == testToken
	}
	g.mu.Unlock()
	if !sawToken {
		t.Error("the token never reached Glance")
	}
	if strings.Contains(e.logs.String(), testToken) {
		t.Error("token logged")
	}
}
