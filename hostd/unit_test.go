package hostd

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/glancegw/glancegw/fs"
	"github.com/glancegw/glancegw/glance"
)

func TestClassify(t *testing.T) {
	tests := []struct {
		err    error
		status int
		code   string
	}{
		{notFound("x"), 404, CodeNotFound},
		{fmt.Errorf("edit: %w", conflict("dup")), 409, CodeConflict},
		{badRequest("bad"), 400, CodeBadRequest},
		{unavailable(errors.New("refused"), "list"), 503, CodeUnavailable},
		{errors.New("disk full"), 500, CodeInternal},
	}
	for _, tt := range tests {
		s, c := classify(tt.err)
		if s != tt.status || c != tt.code {
			t.Errorf("classify(%v) = %d %s, want %d %s", tt.err, s, c, tt.status, tt.code)
		}
	}
	// The cause stays visible to errors.Is and in the message.
	cause := errors.New("dial refused")
	err := unavailable(cause, "domain %s: list", "a")
	if !errors.Is(err, cause) || !errors.Is(err, ErrUnavailable) || err.Error() != "domain a: list: dial refused" {
		t.Errorf("unavailable = %q", err)
	}
	ae := &APIError{Status: 409, Code: CodeConflict, Message: "m"}
	if !errors.Is(ae, ErrConflict) || errors.Is(ae, ErrNotFound) || ae.Error() != "m" {
		t.Errorf("APIError.Is wrong")
	}
}

func TestParseUUID(t *testing.T) {
	tests := []struct {
		in, want string
		ok       bool
	}{
		{"5e1b7f4a-1c1d-4a5e-9d0e-0a6c3f2b9e11", "5e1b7f4a-1c1d-4a5e-9d0e-0a6c3f2b9e11", true},
		{"5E1B7F4A-1C1D-4A5E-9D0E-0A6C3F2B9E11", "5e1b7f4a-1c1d-4a5e-9d0e-0a6c3f2b9e11", true},
		{"00000000-0000-0000-0000-000000000000", "00000000-0000-0000-0000-000000000000", true},
		{"5e1b7f4a1c1d4a5e9d0e0a6c3f2b9e11", "", false},
		{"{5e1b7f4a-1c1d-4a5e-9d0e-0a6c3f2b9e11}", "", false},
		{"5e1b7f4a-1c1d-4a5e-9d0e-0a6c3f2b9e1g", "", false},
		{"5e1b7f4a-1c1d-4a5e-9d0e_0a6c3f2b9e11", "", false},
		{" 5e1b7f4a-1c1d-4a5e-9d0e-0a6c3f2b9e1", "", false},
		{"", "", false},
	}
	for _, tt := range tests {
		got, err := parseUUID(tt.in)
		if (err == nil) != tt.ok || got != tt.want {
			t.Errorf("parseUUID(%q) = %q, %v", tt.in, got, err)
		}
		if err != nil && !errors.Is(err, ErrBadRequest) {
			t.Errorf("parseUUID(%q) error is not a bad request: %v", tt.in, err)
		}
	}
	seen := map[string]bool{}
	for range 100 {
		u := newUUID()
		if p, err := parseUUID(u); err != nil || p != u || u[14] != '4' || !strings.ContainsRune("89ab", rune(u[19])) || seen[u] {
			t.Fatalf("newUUID() = %q (%v)", u, err)
		}
		seen[u] = true
	}
}

func FuzzParseUUID(f *testing.F) {
	f.Add("5e1b7f4a-1c1d-4a5e-9d0e-0a6c3f2b9e11")
	f.Add("5E1B7F4A-1C1D-4A5E-9D0E-0A6C3F2B9E11")
	f.Add("not-a-uuid")
	f.Fuzz(func(t *testing.T, s string) {
		u, err := parseUUID(s)
		if err != nil {
			return
		}
		if len(u) != 36 || !strings.EqualFold(u, s) || strings.ToLower(u) != u {
			t.Fatalf("parseUUID(%q) = %q", s, u)
		}
		if again, err := parseUUID(u); err != nil || again != u {
			t.Fatalf("not idempotent: %q → %q, %v", u, again, err)
		}
	})
}

func TestValidateName(t *testing.T) {
	for name, ok := range map[string]bool{
		"iso": true, "a.b_c-D9": true, strings.Repeat("x", 64): true, ".hidden": true,
		"": false, ".": false, "..": false, "a/b": false, "a b": false, "é": false, strings.Repeat("x", 65): false,
	} {
		if err := validateName(name); (err == nil) != ok {
			t.Errorf("validateName(%q) = %v, want ok=%v", name, err, ok)
		}
	}
}

func TestApplyPatch(t *testing.T) {
	ks := DomainRecord{Name: "k", URL: "http://g", Auth: "keystone", AuthURL: "http://k", Username: "u",
		Project: "p", UserDomain: "Default", ProjectDomain: "Default"}
	tok, none := "token", "none"
	newTok := "t2"
	rec, sec := applyPatch(ks, secrets{Password: "pw"}, DomainPatch{Auth: &tok, Token: &newTok})
	if rec.AuthURL != "" || rec.Username != "" || rec.Project != "" || sec.Password != "" || sec.Token != "t2" {
		t.Errorf("keystone → token left %+v %+v", rec, sec)
	}
	if err := validateDomain(&rec, sec); err != nil {
		t.Errorf("patched record invalid: %v", err)
	}
	rec, sec = applyPatch(DomainRecord{Name: "t", URL: "http://g", Auth: "token"}, secrets{Token: "t"}, DomainPatch{Auth: &none})
	if sec.Token != "" || validateDomain(&rec, sec) != nil {
		t.Errorf("token → none left %+v %+v", rec, sec)
	}
	name := "n2"
	rec, sec = applyPatch(ks, secrets{Password: "pw"}, DomainPatch{Name: &name})
	if rec.Name != "n2" || rec.Auth != "keystone" || sec.Password != "pw" {
		t.Errorf("rename changed more: %+v %+v", rec, sec)
	}
}

func TestWriteFileAtomic(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "f.json")
	if err := writeFileAtomic(p, []byte("one"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := writeFileAtomic(p, []byte("two"), 0o600); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(p)
	fi, _ := os.Stat(p)
	if err != nil || string(b) != "two" || fi.Mode().Perm() != 0o600 {
		t.Errorf("content %q mode %v err %v", b, fi.Mode().Perm(), err)
	}
	ents, _ := os.ReadDir(dir)
	if len(ents) != 1 {
		t.Errorf("temp files left: %v", ents)
	}
	// A failed write leaves the old content and no temp file.
	if err := writeFileAtomic(filepath.Join(dir, "missing", "f"), []byte("x"), 0o600); err == nil {
		t.Error("write into a missing dir succeeded")
	}
	ro := filepath.Join(dir, "ro")
	os.Mkdir(ro, 0o755)
	os.WriteFile(filepath.Join(ro, "f"), []byte("old"), 0o600)
	os.Chmod(ro, 0o555)
	defer os.Chmod(ro, 0o755)
	if os.Geteuid() != 0 { // root ignores directory modes
		if err := writeFileAtomic(filepath.Join(ro, "f"), []byte("new"), 0o600); err == nil {
			t.Error("write into a read-only dir succeeded")
		}
		if b, _ := os.ReadFile(filepath.Join(ro, "f")); string(b) != "old" {
			t.Errorf("old content lost: %q", b)
		}
	}
}

func TestStoreRoundTrip(t *testing.T) {
	s := store{dir: t.TempDir()}
	if recs, err := s.load(); err != nil || recs != nil {
		t.Fatalf("empty state: %v %v", recs, err)
	}
	if err := s.init(); err != nil {
		t.Fatal(err)
	}
	in := []DomainRecord{{UUID: uuidA, Name: "a", URL: "http://g", Auth: "token", Mounted: true, Mountpoint: "/m"}}
	if err := s.save(in); err != nil {
		t.Fatal(err)
	}
	out, err := s.load()
	if err != nil || len(out) != 1 || out[0] != in[0] {
		t.Fatalf("load = %+v, %v", out, err)
	}
	if err := s.saveSecrets(uuidA, secrets{Token: "t"}); err != nil {
		t.Fatal(err)
	}
	if sec, err := s.loadSecrets(uuidA); err != nil || sec != (secrets{Token: "t"}) {
		t.Fatalf("secrets = %+v, %v", sec, err)
	}
	if err := s.removeSecrets(uuidA); err != nil {
		t.Fatal(err)
	}
	if sec, _ := s.loadSecrets(uuidA); sec != (secrets{}) {
		t.Errorf("secrets after remove: %+v", sec)
	}
	os.WriteFile(s.domainsPath(), []byte("{garbage"), 0o600)
	if _, err := s.load(); err == nil {
		t.Error("corrupt state loaded")
	}
	os.WriteFile(s.domainsPath(), []byte(`{"version":99,"domains":[]}`), 0o600)
	if _, err := s.load(); err == nil {
		t.Error("unknown version loaded")
	}
}

// fakeClock is a settable clock.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *fakeClock) now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *fakeClock) add(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

func TestCatalog(t *testing.T) {
	clk := &fakeClock{t: time.Unix(1000, 0)}
	g := newFakeGlance()
	g.add("a", "A", "active", []byte("a"))
	cat := newCatalog(30*time.Second, 2*time.Second, clk.now, g.List, func(im glance.Image) fs.Image { return toFSImage(uuidA, im, nil) })

	l, err := cat.get(ctx, false)
	if err != nil || len(l.images) != 1 || g.listCount() != 1 || l.fs[0].ID != "a" {
		t.Fatalf("first get: %+v %v (%d lists)", l, err, g.listCount())
	}
	cat.get(ctx, false)
	if g.listCount() != 1 {
		t.Errorf("fresh listing not reused: %d lists", g.listCount())
	}
	// A forced refresh within minInterval is answered from memory.
	clk.add(time.Second)
	cat.get(ctx, true)
	if g.listCount() != 1 {
		t.Errorf("refresh not rate-limited: %d lists", g.listCount())
	}
	clk.add(2 * time.Second)
	g.add("b", "B", "active", nil)
	if l, _ := cat.get(ctx, true); len(l.images) != 2 || g.listCount() != 2 {
		t.Errorf("refresh after minInterval: %d images, %d lists", len(l.images), g.listCount())
	}
	// TTL expiry lists again; a failure then keeps the old listing...
	clk.add(31 * time.Second)
	g.setListErr(errors.New("503"))
	if l, err := cat.get(ctx, false); err != nil || len(l.images) != 2 || g.listCount() != 3 {
		t.Errorf("TTL refresh failing: %v %v (%d lists)", l, err, g.listCount())
	}
	// ...but a forced refresh reports the error.
	clk.add(3 * time.Second)
	if _, err := cat.get(ctx, true); err == nil {
		t.Error("failed forced refresh reported no error")
	}
	if _, ok := cat.last().image("b"); !ok {
		t.Error("last listing lost after a failure")
	}
	// Invalidate forgets; without a listing an error shows, and is not
	// retried within minInterval.
	cat.invalidate()
	if l, err := cat.get(ctx, false); err == nil || l != nil {
		t.Errorf("after invalidate with Glance down: %v %v", l, err)
	}
	n := g.listCount()
	if _, err := cat.get(ctx, false); err == nil || g.listCount() != n {
		t.Errorf("failed Glance asked again at once: %v (%d lists, was %d)", err, g.listCount(), n)
	}
	g.setListErr(nil)
	clk.add(3 * time.Second)
	if l, err := cat.get(ctx, false); err != nil || len(l.images) != 2 {
		t.Errorf("recovery: %v %v", l, err)
	}
}

// slowList blocks listings until released, counting them.
type slowList struct {
	mu      sync.Mutex
	n       int
	release chan struct{}
}

func (s *slowList) list(ctx context.Context) ([]glance.Image, error) {
	s.mu.Lock()
	s.n++
	s.mu.Unlock()
	<-s.release
	return []glance.Image{{ID: "x", Status: "active"}}, nil
}

func TestCatalogCoalesces(t *testing.T) {
	s := &slowList{release: make(chan struct{})}
	cat := newCatalog(time.Minute, time.Second, time.Now, s.list, func(im glance.Image) fs.Image { return fs.Image{ID: im.ID} })
	var wg sync.WaitGroup
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if l, err := cat.get(ctx, false); err != nil || len(l.images) != 1 {
				t.Errorf("get: %v %v", l, err)
			}
		}()
	}
	time.Sleep(50 * time.Millisecond)
	close(s.release)
	wg.Wait()
	if s.n != 1 {
		t.Errorf("%d listings for 8 concurrent callers, want 1", s.n)
	}
}

func TestImageMeta(t *testing.T) {
	im := glance.Image{ID: "i", Name: "n", Raw: []byte(`{"id":"i","name":"n","os_distro":"cirros","tags":["a"]}`)}
	var got map[string]any
	if err := jsonUnmarshal(imageMeta(uuidA, im, nil), &got); err != nil {
		t.Fatal(err)
	}
	gg, _ := got["glancegw"].(map[string]any)
	if got["os_distro"] != "cirros" || got["id"] != "i" || gg["sd_uuid"] != uuidA {
		t.Errorf("meta = %v", got)
	}
	// Without Raw the typed record is used.
	if err := jsonUnmarshal(imageMeta(uuidA, glance.Image{ID: "j", Status: "active"}, nil), &got); err != nil || got["id"] != "j" || got["status"] != "active" {
		t.Errorf("meta without raw = %v, %v", got, err)
	}
}

func TestExportNames(t *testing.T) {
	img := func(id, status string) glance.Image { return glance.Image{ID: id, Name: "name-" + id, Status: status} }
	got := exportNames([]string{uuidA, uuidB, "sd-c"}, [][]glance.Image{
		{img("x", "active"), img("y", "active"), img("q", "queued"), img("y", "active")},
		{img("x", "active"), img("z", "active"), img("y", "deactivated")},
		nil, // a domain whose Glance is down
	})
	var names []string
	for _, n := range got {
		names = append(names, n.Name)
	}
	want := []string{uuidA + "/x", uuidA + "/y", "y", uuidB + "/x", uuidB + "/z", "z"}
	if strings.Join(names, " ") != strings.Join(want, " ") {
		t.Errorf("names = %v\nwant    %v", names, want)
	}
	if got[2].Domain != 0 || got[5].Domain != 1 {
		t.Errorf("domains = %+v", got)
	}
}

func TestExportURIs(t *testing.T) {
	tests := []struct {
		name, sock, tcp, unixURI, tcpURI string
	}{
		{"img", "/run/glancegw/nbd.sock", "", "nbd+unix:///img?socket=/run/glancegw/nbd.sock", ""},
		{uuidA + "/img", "/run/nbd.sock", "127.0.0.1:10809",
			"nbd+unix:///" + uuidA + "/img?socket=/run/nbd.sock", "nbd://127.0.0.1:10809/" + uuidA + "/img"},
		{"img", "/tmp/a b.sock", "[::]:10809", "nbd+unix:///img?socket=/tmp/a+b.sock", "nbd://localhost:10809/img"},
		{"img", "/s", "[::1]:10809", "nbd+unix:///img?socket=/s", "nbd://[::1]:10809/img"},
	}
	for _, tt := range tests {
		u, tc := exportURIs(tt.name, tt.sock, tt.tcp)
		if u != tt.unixURI || tc != tt.tcpURI {
			t.Errorf("exportURIs(%q, %q, %q) = %q, %q; want %q, %q", tt.name, tt.sock, tt.tcp, u, tc, tt.unixURI, tt.tcpURI)
		}
	}
}
