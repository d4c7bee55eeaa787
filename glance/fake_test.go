package glance

import (
	"bytes"
	"crypto/md5"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// fakeGlance is a Glance v2 API in memory, honest by default, with a hook
// to inject the faults a real server cannot be made to show.
type fakeGlance struct {
	srv *httptest.Server

	mu       sync.Mutex
	images   map[string]*fakeImage
	order    []string
	pageSize int             // 25 like Glance unless the client asks for less
	tokens   map[string]bool // nil: no auth checked
	ranges   []string        // Range header of every GET file, "" when none
	puts     []fakePut
	nextID   int

	// fault sees every request first; it returns true if it answered.
	fault     func(w http.ResponseWriter, r *http.Request) bool
	listCalls atomic.Int64
	fileGETs  atomic.Int64 // every GET of a file, faulty or not
}

type fakeImage struct {
	rec  map[string]any
	data []byte
	md5  string
}

type fakePut struct {
	token   string
	length  int64
	chunked bool
	got     int
}

func newFakeGlance(t *testing.T) *fakeGlance {
	t.Helper()
	g := &fakeGlance{images: map[string]*fakeImage{}, pageSize: 25}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /v2/images", g.list)
	mux.HandleFunc("POST /v2/images", g.create)
	mux.HandleFunc("GET /v2/images/{id}", g.get)
	mux.HandleFunc("DELETE /v2/images/{id}", g.delete)
	mux.HandleFunc("GET /v2/images/{id}/file", g.file)
	mux.HandleFunc("PUT /v2/images/{id}/file", g.upload)
	g.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		g.mu.Lock()
		fault := g.fault
		tokens := g.tokens
		g.mu.Unlock()
		if r.Method == http.MethodGet && strings.HasSuffix(r.URL.Path, "/file") {
			g.fileGETs.Add(1)
			g.mu.Lock()
			g.ranges = append(g.ranges, r.Header.Get("Range"))
			g.mu.Unlock()
		}
		if fault != nil && fault(w, r) {
			return
		}
		if tokens != nil {
			g.mu.Lock()
			ok := g.tokens[r.Header.Get("X-Auth-Token")]
			g.mu.Unlock()
			if !ok {
				http.Error(w, "This server could not verify that you are authorized", http.StatusUnauthorized)
				return
			}
		}
		mux.ServeHTTP(w, r)
	}))
	t.Cleanup(g.srv.Close)
	return g
}

func (g *fakeGlance) setFault(f func(w http.ResponseWriter, r *http.Request) bool) {
	g.mu.Lock()
	g.fault = f
	g.mu.Unlock()
}

func (g *fakeGlance) allowToken(tok string, ok bool) {
	g.mu.Lock()
	if g.tokens == nil {
		g.tokens = map[string]bool{}
	}
	g.tokens[tok] = ok
	g.mu.Unlock()
}

func (g *fakeGlance) seenRanges() []string {
	g.mu.Lock()
	defer g.mu.Unlock()
	return append([]string(nil), g.ranges...)
}

// add stores an active image with data and returns its record.
func (g *fakeGlance) add(name string, data []byte) Image {
	g.mu.Lock()
	g.nextID++
	id := fmt.Sprintf("00000000-0000-4000-8000-%012d", g.nextID)
	sum := md5.Sum(data)
	rec := map[string]any{
		"id": id, "name": name, "status": "active", "size": len(data), "virtual_size": len(data),
		"disk_format": "raw", "container_format": "bare", "checksum": hex.EncodeToString(sum[:]),
		"os_hash_algo": "sha512", "os_hash_value": "ab",
		"created_at": "2024-05-01T10:00:00Z", "updated_at": "2024-05-01T10:00:01Z", "visibility": "shared",
	}
	g.images[id] = &fakeImage{rec: rec, data: data, md5: hex.EncodeToString(sum[:])}
	g.order = append(g.order, id)
	g.mu.Unlock()
	raw, _ := json.Marshal(rec)
	img, err := parseImage(raw)
	if err != nil {
		panic(err)
	}
	return img
}

func (g *fakeGlance) list(w http.ResponseWriter, r *http.Request) {
	g.listCalls.Add(1)
	limit := g.pageSize
	if l, err := strconv.Atoi(r.URL.Query().Get("limit")); err == nil && l > 0 && l < limit {
		limit = l
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	start := 0
	if m := r.URL.Query().Get("marker"); m != "" {
		start = -1
		for i, id := range g.order {
			if id == m {
				start = i + 1
			}
		}
		if start < 0 {
			http.Error(w, "marker not found", http.StatusBadRequest)
			return
		}
	}
	end := min(start+limit, len(g.order))
	recs := []map[string]any{}
	for _, id := range g.order[start:end] {
		recs = append(recs, g.images[id].rec)
	}
	body := map[string]any{"images": recs, "first": "/v2/images", "schema": "/v2/schemas/images"}
	if end < len(g.order) {
		body["next"] = fmt.Sprintf("/v2/images?limit=%d&marker=%s", limit, g.order[end-1])
	}
	writeJSON(w, http.StatusOK, body)
}

func (g *fakeGlance) create(w http.ResponseWriter, r *http.Request) {
	var req map[string]any
	if err := json.NewDecoder(r.Body).Decode(&req); err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	g.mu.Lock()
	g.nextID++
	id := fmt.Sprintf("00000000-0000-4000-8000-%012d", g.nextID)
	rec := map[string]any{"id": id, "status": "queued", "size": nil, "checksum": nil,
		"created_at": "2024-05-01T10:00:00Z", "updated_at": "2024-05-01T10:00:00Z"}
	for k, v := range req {
		rec[k] = v
	}
	g.images[id] = &fakeImage{rec: rec}
	g.order = append(g.order, id)
	g.mu.Unlock()
	writeJSON(w, http.StatusCreated, rec)
}

func (g *fakeGlance) get(w http.ResponseWriter, r *http.Request) {
	g.mu.Lock()
	img := g.images[r.PathValue("id")]
	g.mu.Unlock()
	if img == nil {
		http.Error(w, "No image found", http.StatusNotFound)
		return
	}
	writeJSON(w, http.StatusOK, img.rec)
}

func (g *fakeGlance) delete(w http.ResponseWriter, r *http.Request) {
	g.mu.Lock()
	defer g.mu.Unlock()
	id := r.PathValue("id")
	if g.images[id] == nil {
		http.Error(w, "No image found", http.StatusNotFound)
		return
	}
	delete(g.images, id)
	for i, o := range g.order {
		if o == id {
			g.order = append(g.order[:i], g.order[i+1:]...)
			break
		}
	}
	w.WriteHeader(http.StatusNoContent)
}

func (g *fakeGlance) upload(w http.ResponseWriter, r *http.Request) {
	if r.Header.Get("Content-Type") != "application/octet-stream" {
		http.Error(w, "bad content type", http.StatusUnsupportedMediaType)
		return
	}
	data, err := io.ReadAll(r.Body)
	g.mu.Lock()
	defer g.mu.Unlock()
	g.puts = append(g.puts, fakePut{token: r.Header.Get("X-Auth-Token"), length: r.ContentLength,
		chunked: len(r.TransferEncoding) > 0 && r.TransferEncoding[0] == "chunked", got: len(data)})
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	img := g.images[r.PathValue("id")]
	if img == nil {
		http.Error(w, "No image found", http.StatusNotFound)
		return
	}
	if img.rec["status"] != "queued" {
		http.Error(w, "Image status transition from active to saving is not allowed", http.StatusConflict)
		return
	}
	sum := md5.Sum(data)
	img.data, img.md5 = data, hex.EncodeToString(sum[:])
	img.rec["status"], img.rec["size"], img.rec["checksum"] = "active", len(data), hex.EncodeToString(sum[:])
	w.WriteHeader(http.StatusNoContent)
}

// file serves image bytes with single-range support, as Glance does.
func (g *fakeGlance) file(w http.ResponseWriter, r *http.Request) {
	g.mu.Lock()
	img := g.images[r.PathValue("id")]
	g.mu.Unlock()
	if img == nil {
		http.Error(w, "No image found", http.StatusNotFound)
		return
	}
	// Glance sends the md5 of the whole image with every part.
	w.Header().Set("Content-Md5", img.md5)
	serveBytes(w, r, img.data)
}

// serveBytes answers a GET for data, honouring one "bytes=A-B" or "A-" range.
func serveBytes(w http.ResponseWriter, r *http.Request, data []byte) {
	size := int64(len(data))
	w.Header().Set("Content-Type", "application/octet-stream")
	rg := r.Header.Get("Range")
	if rg == "" {
		w.Header().Set("Content-Length", strconv.FormatInt(size, 10))
		w.WriteHeader(http.StatusOK)
		if r.Method != http.MethodHead {
			w.Write(data)
		}
		return
	}
	start, end, ok := parseRangeHeader(rg, size)
	if !ok {
		w.Header().Set("Content-Range", fmt.Sprintf("bytes */%d", size))
		http.Error(w, "Invalid start position in Range header", http.StatusRequestedRangeNotSatisfiable)
		return
	}
	w.Header().Set("Content-Range", fmt.Sprintf("bytes %d-%d/%d", start, end, size))
	w.Header().Set("Content-Length", strconv.FormatInt(end-start+1, 10))
	w.WriteHeader(http.StatusPartialContent)
	w.Write(data[start : end+1])
}

func parseRangeHeader(rg string, size int64) (start, end int64, ok bool) {
	spec, found := strings.CutPrefix(rg, "bytes=")
	if !found || strings.Contains(spec, ",") {
		return 0, 0, false
	}
	a, b, _ := strings.Cut(spec, "-")
	start, err := strconv.ParseInt(a, 10, 64)
	if err != nil || start >= size {
		return 0, 0, false
	}
	end = size - 1
	if b != "" {
		e, err := strconv.ParseInt(b, 10, 64)
		if err != nil || e < start {
			return 0, 0, false
		}
		end = min(e, size-1)
	}
	return start, end, true
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(v)
}

// fakeKeystone issues tokens for one user and registers them with g.
type fakeKeystone struct {
	srv      *httptest.Server
	auths    atomic.Int64
	lifetime time.Duration
	mu       sync.Mutex
	last     string
}

func newFakeKeystone(t *testing.T, g *fakeGlance, password string, lifetime time.Duration) *fakeKeystone {
	t.Helper()
	k := &fakeKeystone{lifetime: lifetime}
	g.allowToken("", false) // switch auth checking on
	k.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodPost || r.URL.Path != "/v3/auth/tokens" {
			http.NotFound(w, r)
			return
		}
		var req struct {
			Auth struct {
				Identity struct {
					Password struct {
						User struct {
							Name     string `json:"name"`
							Password string `json:"password"`
						} `json:"user"`
					} `json:"password"`
				} `json:"identity"`
				Scope struct {
					Project struct {
						Name string `json:"name"`
					} `json:"project"`
				} `json:"scope"`
			} `json:"auth"`
		}
		if err := json.NewDecoder(r.Body).Decode(&req); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		u := req.Auth.Identity.Password.User
		if u.Name != "admin" || u.Password != password || req.Auth.Scope.Project.Name != "admin" {
			http.Error(w, `{"error":{"code":401}}`, http.StatusUnauthorized)
			return
		}
		n := k.auths.Add(1)
		tok := fmt.Sprintf("tok-%d", n)
		k.mu.Lock()
		k.last = tok
		k.mu.Unlock()
		g.allowToken(tok, true)
		w.Header().Set("X-Subject-Token", tok)
		now := time.Now().UTC()
		writeJSON(w, http.StatusCreated, map[string]any{"token": map[string]any{
			"issued_at": now.Format(time.RFC3339), "expires_at": now.Add(k.lifetime).Format(time.RFC3339),
			"methods": []string{"password"}, "user": map[string]any{"id": "u1", "name": "admin"},
			"project": map[string]any{"id": "p1", "name": "admin"},
			"catalog": []map[string]any{{"type": "image", "name": "glance", "id": "s1", "endpoints": []map[string]any{
				{"interface": "public", "region": "RegionOne", "region_id": "RegionOne", "url": g.srv.URL, "id": "e1"},
			}}},
		}})
	}))
	t.Cleanup(k.srv.Close)
	return k
}

func (k *fakeKeystone) lastToken() string {
	k.mu.Lock()
	defer k.mu.Unlock()
	return k.last
}

// logBuffer collects log output so tests can check no secret leaks.
type logBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *logBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *logBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

func newTestLogger(b *logBuffer) *slog.Logger {
	return slog.New(slog.NewTextHandler(b, &slog.HandlerOptions{Level: slog.LevelDebug}))
}
