package hostd

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

const (
	testToken    = "tok-3b1f-SECRET"
	testPassword = "pw-77c2-SECRET"
	uuidA        = "0a1b2c3d-0000-4000-8000-00000000000a"
	uuidB        = "0a1b2c3d-0000-4000-8000-00000000000b"
)

var ctx = context.Background()

func TestDomainLifecycle(t *testing.T) {
	e := newTestEnv(t)
	e.net.glance("http://glance-a:9292").add("img-1", "cirros", "active", []byte("hello"))
	r := e.start()

	add, err := r.c.AddDomain(ctx, DomainSpec{Name: "alpha", URL: "http://glance-a:9292", Auth: "token", Token: testToken, UUID: strings.ToUpper(uuidA)})
	if err != nil {
		t.Fatalf("add: %v", err)
	}
	if add.UUID != uuidA || add.Name != "alpha" || add.Auth != "token" || !add.HasToken || add.Mounted {
		t.Fatalf("add returned %+v", add)
	}
	gen, err := r.c.AddDomain(ctx, DomainSpec{Name: "beta", URL: "https://glance-b", Auth: "keystone",
		AuthURL: "https://keystone:5000/v3", Username: "admin", Project: "admin", Password: testPassword})
	if err != nil {
		t.Fatalf("add beta: %v", err)
	}
	if _, err := parseUUID(gen.UUID); err != nil || gen.UUID[14] != '4' {
		t.Fatalf("generated uuid %q is not a canonical v4 uuid", gen.UUID)
	}
	if gen.UserDomain != "Default" || gen.ProjectDomain != "Default" {
		t.Errorf("keystone domains not defaulted: %+v", gen)
	}

	list, err := r.c.Domains(ctx)
	if err != nil || len(list) != 2 || list[0].Name != "alpha" || list[1].Name != "beta" {
		t.Fatalf("list = %+v, %v", list, err)
	}
	for _, key := range []string{"alpha", uuidA, strings.ToUpper(uuidA)} {
		if got, err := r.c.Domain(ctx, key); err != nil || got.UUID != uuidA {
			t.Errorf("show %s = %+v, %v", key, got, err)
		}
	}

	imgs, err := r.c.Images(ctx, "alpha", false)
	if err != nil || len(imgs) != 1 || imgs[0].ID != "img-1" || imgs[0].Size != 5 {
		t.Fatalf("images = %+v, %v", imgs, err)
	}
	if cfgs := e.net.configs(); len(cfgs) != 1 || cfgs[0].Auth.Token != testToken || cfgs[0].Auth.Type != "token" {
		t.Errorf("glance client built with %+v", cfgs)
	}

	name, url := "alpha2", "http://glance-a2:9292"
	ed, err := r.c.EditDomain(ctx, "alpha", DomainPatch{Name: &name, URL: &url})
	if err != nil || ed.Name != "alpha2" || ed.URL != url || ed.UUID != uuidA || !ed.HasToken {
		t.Fatalf("edit = %+v, %v", ed, err)
	}
	if _, err := r.c.Domain(ctx, "alpha"); !errors.Is(err, ErrNotFound) {
		t.Errorf("old name still resolves: %v", err)
	}
	// The new URL does not answer: the domain stays, the error shows on use.
	if _, err := r.c.Images(ctx, "alpha2", true); !errors.Is(err, ErrUnavailable) {
		t.Errorf("images of unreachable glance: %v, want unavailable", err)
	}
	if d, _ := r.c.Domain(ctx, uuidA); !strings.Contains(d.Error, "connection refused") {
		t.Errorf("domain error not shown: %q", d.Error)
	}

	none := "none"
	ed, err = r.c.EditDomain(ctx, uuidA, DomainPatch{Auth: &none})
	if err != nil || ed.Auth != "none" || ed.HasToken {
		t.Fatalf("switch to auth none = %+v, %v", ed, err)
	}
	if _, err := os.Stat(filepath.Join(e.cfg.StateDir, "secrets", uuidA+".token")); !os.IsNotExist(err) {
		t.Errorf("token file kept after switching to auth none: %v", err)
	}

	if err := r.c.RemoveDomain(ctx, "alpha2"); err != nil {
		t.Fatalf("remove: %v", err)
	}
	if err := r.c.RemoveDomain(ctx, "alpha2"); !errors.Is(err, ErrNotFound) {
		t.Errorf("second remove: %v, want not found", err)
	}
	list, _ = r.c.Domains(ctx)
	if len(list) != 1 || list[0].Name != "beta" {
		t.Errorf("after remove: %+v", list)
	}
	if _, err := os.Stat(filepath.Join(e.cfg.StateDir, "secrets", gen.UUID+".password")); err != nil {
		t.Errorf("beta's password file: %v", err)
	}
}

func TestAddRejects(t *testing.T) {
	e := newTestEnv(t)
	r := e.start()
	if _, err := r.c.AddDomain(ctx, DomainSpec{Name: "a", URL: "http://g", UUID: uuidA}); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		spec DomainSpec
		code string
	}{
		{"duplicate name", DomainSpec{Name: "a", URL: "http://g"}, CodeConflict},
		{"duplicate uuid", DomainSpec{Name: "b", URL: "http://g", UUID: uuidA}, CodeConflict},
		{"name is a uuid", DomainSpec{Name: uuidB, URL: "http://g"}, CodeBadRequest},
		{"bad uuid", DomainSpec{Name: "b", URL: "http://g", UUID: "1234"}, CodeBadRequest},
		{"uuid without dashes", DomainSpec{Name: "b", URL: "http://g", UUID: "0a1b2c3d00004000800000000000000a"}, CodeBadRequest},
		{"bad name", DomainSpec{Name: "a b", URL: "http://g"}, CodeBadRequest},
		{"dotdot name", DomainSpec{Name: "..", URL: "http://g"}, CodeBadRequest},
		{"long name", DomainSpec{Name: strings.Repeat("x", 65), URL: "http://g"}, CodeBadRequest},
		{"bad url", DomainSpec{Name: "b", URL: "ftp://g"}, CodeBadRequest},
		{"url with password", DomainSpec{Name: "b", URL: "http://u:p@g"}, CodeBadRequest},
		{"bad auth", DomainSpec{Name: "b", URL: "http://g", Auth: "kerberos"}, CodeBadRequest},
		{"token without token", DomainSpec{Name: "b", URL: "http://g", Auth: "token"}, CodeBadRequest},
		{"keystone without password", DomainSpec{Name: "b", URL: "http://g", Auth: "keystone", AuthURL: "http://k", Username: "u", Project: "p"}, CodeBadRequest},
		{"ca and insecure", DomainSpec{Name: "b", URL: "https://g", CAFile: "/etc/ca.pem", Insecure: true}, CodeBadRequest},
		{"relative ca", DomainSpec{Name: "b", URL: "https://g", CAFile: "ca.pem"}, CodeBadRequest},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := r.c.AddDomain(ctx, tt.spec)
			var ae *APIError
			if !errors.As(err, &ae) || ae.Code != tt.code {
				t.Fatalf("err = %v, want APIError code %s", err, tt.code)
			}
			if want := map[string]int{CodeConflict: 409, CodeBadRequest: 400}[tt.code]; ae.Status != want {
				t.Errorf("status %d, want %d", ae.Status, want)
			}
		})
	}
	list, _ := r.c.Domains(ctx)
	if len(list) != 1 {
		t.Errorf("rejected adds left domains: %+v", list)
	}
}

func TestPersistenceAcrossRestart(t *testing.T) {
	e := newTestEnv(t)
	r := e.start()
	if _, err := r.c.AddDomain(ctx, DomainSpec{Name: "a", URL: "http://g", Auth: "token", Token: testToken, UUID: uuidA}); err != nil {
		t.Fatal(err)
	}
	if _, err := r.c.AddDomain(ctx, DomainSpec{Name: "b", URL: "http://h", UUID: uuidB}); err != nil {
		t.Fatal(err)
	}
	r.stop(t)

	r2 := e.start()
	list, err := r2.c.Domains(ctx)
	if err != nil || len(list) != 2 {
		t.Fatalf("after restart: %+v, %v", list, err)
	}
	if list[0].UUID != uuidA || list[0].Name != "a" || !list[0].HasToken || list[1].UUID != uuidB {
		t.Errorf("after restart: %+v", list)
	}
	// The restored secret reaches the Glance client.
	e.net.glance("http://g")
	if _, err := r2.c.Images(ctx, "a", false); err != nil {
		t.Fatal(err)
	}
	cfgs := e.net.configs()
	if len(cfgs) == 0 || cfgs[len(cfgs)-1].Auth.Token != testToken {
		t.Errorf("restored token not used: %+v", cfgs)
	}
}

func TestSecretsStayPrivate(t *testing.T) {
	e := newTestEnv(t)
	r := e.start()
	if _, err := r.c.AddDomain(ctx, DomainSpec{Name: "a", URL: "http://g", Auth: "token", Token: testToken, UUID: uuidA}); err != nil {
		t.Fatal(err)
	}
	if _, err := r.c.AddDomain(ctx, DomainSpec{Name: "k", URL: "http://g", Auth: "keystone", UUID: uuidB,
		AuthURL: "http://k/v3", Username: "u", Project: "p", Password: testPassword}); err != nil {
		t.Fatal(err)
	}
	pw2 := testPassword + "-new"
	if _, err := r.c.EditDomain(ctx, "k", DomainPatch{Password: &pw2}); err != nil {
		t.Fatal(err)
	}

	for _, p := range []string{uuidA + ".token", uuidB + ".password"} {
		fi, err := os.Stat(filepath.Join(e.cfg.StateDir, "secrets", p))
		if err != nil || fi.Mode().Perm() != 0o600 {
			t.Errorf("%s: %v, mode %v; want 0600", p, err, fi.Mode().Perm())
		}
	}
	b, err := os.ReadFile(filepath.Join(e.cfg.StateDir, "secrets", uuidB+".password"))
	if err != nil || string(b) != pw2 {
		t.Errorf("password file holds %q, %v", b, err)
	}
	fi, err := os.Stat(filepath.Join(e.cfg.StateDir, "secrets"))
	if err != nil || fi.Mode().Perm() != 0o700 {
		t.Errorf("secrets dir mode %v, %v; want 0700", fi.Mode().Perm(), err)
	}
	fi, err = os.Stat(filepath.Join(e.cfg.StateDir, "domains.json"))
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("domains.json mode %v, %v; want 0600", fi.Mode().Perm(), err)
	}
	fi, err = os.Stat(e.cfg.Socket)
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("api socket mode %v, %v; want 0600", fi.Mode().Perm(), err)
	}
	state, err := os.ReadFile(filepath.Join(e.cfg.StateDir, "domains.json"))
	if err != nil {
		t.Fatal(err)
	}

	// Everything the API says, raw.
	var api strings.Builder
	for _, path := range []string{"/v1/domains", "/v1/domains/a", "/v1/domains/k", "/v1/status"} {
		var raw json.RawMessage
		if err := r.c.do(ctx, "GET", path, nil, &raw); err != nil {
			t.Fatal(err)
		}
		api.Write(raw)
	}
	r.stop(t)
	for _, secret := range []string{testToken, testPassword, "SECRET"} {
		for where, text := range map[string]string{"domains.json": string(state), "API": api.String(), "log": e.logs.String()} {
			if strings.Contains(text, secret) {
				t.Errorf("secret %q found in %s", secret, where)
			}
		}
	}
	if !strings.Contains(e.logs.String(), "api request") {
		t.Errorf("requests not logged at debug: %s", e.logs.String())
	}
}

func TestGlanceDownStillAddedAndListed(t *testing.T) {
	e := newTestEnv(t)
	r := e.start()
	if _, err := r.c.AddDomain(ctx, DomainSpec{Name: "down", URL: "http://nowhere:9292"}); err != nil {
		t.Fatalf("add with glance down: %v", err)
	}
	if l, err := r.c.Domains(ctx); err != nil || len(l) != 1 {
		t.Fatalf("list: %+v, %v", l, err)
	}
	_, err := r.c.Images(ctx, "down", false)
	var ae *APIError
	if !errors.As(err, &ae) || ae.Status != 503 || ae.Code != CodeUnavailable || !strings.Contains(ae.Message, "nowhere") {
		t.Fatalf("images: %v, want 503 unavailable naming the URL", err)
	}
	// Glance comes up: after the retry interval the domain works.
	e.net.glance("http://nowhere:9292").add("i", "n", "active", []byte("x"))
	deadline := 50
	for ; deadline > 0; deadline-- {
		if imgs, err := r.c.Images(ctx, "down", true); err == nil && len(imgs) == 1 {
			break
		}
		sleep(20)
	}
	if deadline == 0 {
		t.Fatal("domain did not recover when Glance came up")
	}
}

func TestClientErrors(t *testing.T) {
	e := newTestEnv(t)
	r := e.start()
	_, err := r.c.Domain(ctx, "missing")
	var ae *APIError
	if !errors.As(err, &ae) || ae.Status != 404 || ae.Code != CodeNotFound || !errors.Is(err, ErrNotFound) || errors.Is(err, ErrConflict) {
		t.Errorf("missing domain: %#v", err)
	}
	if err := r.c.do(ctx, "GET", "/v2/nothing", nil, nil); !errors.Is(err, ErrNotFound) {
		t.Errorf("unknown route: %v", err)
	}
	if err := r.c.do(ctx, "POST", "/v1/domains", map[string]any{"name": "x", "url": "http://g", "passwd": "oops"}, nil); !errors.Is(err, ErrBadRequest) {
		t.Errorf("unknown field: %v", err)
	}
	if err := r.c.do(ctx, "GET", "/v1/domains/x/images?refresh=maybe", nil, nil); !errors.Is(err, ErrBadRequest) {
		t.Errorf("bad refresh value: %v", err)
	}
	r.stop(t)

	c := NewClient(e.cfg.Socket)
	_, err = c.Status(ctx)
	if !errors.Is(err, ErrDaemonUnreachable) || errors.As(err, &ae) {
		t.Errorf("stopped daemon: %v, want ErrDaemonUnreachable", err)
	}
	if _, err := os.Stat(e.cfg.Socket); !os.IsNotExist(err) {
		t.Errorf("socket left after shutdown: %v", err)
	}
}

func TestSecondDaemonRefused(t *testing.T) {
	e := newTestEnv(t)
	e.start()
	d, err := New(e.cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := d.Run(ctx); !errors.Is(err, ErrAlreadyRunning) {
		t.Fatalf("second Run: %v, want ErrAlreadyRunning", err)
	}
}

// A second daemon on another socket is refused when it shares the state
// directory (it would mount over the first's mounts and rewrite its files)
// or the repository (it would remove the first's temporary files).
func TestSecondDaemonOnSharedDirsRefused(t *testing.T) {
	e := newTestEnv(t)
	e.start()
	for name, edit := range map[string]func(*Config){
		"state dir":  func(c *Config) { c.RepoRoot = e.dir + "/repo2" },
		"repository": func(c *Config) { c.StateDir = e.dir + "/state2" },
	} {
		t.Run(name, func(t *testing.T) {
			cfg := e.cfg
			cfg.Socket, cfg.NBDSocket = e.dir+"/api2.sock", e.dir+"/nbd2.sock"
			edit(&cfg)
			d, err := New(cfg, nil)
			if err != nil {
				t.Fatal(err)
			}
			rctx, cancel := context.WithTimeout(ctx, 5*time.Second) // a broken lock would run it
			defer cancel()
			err = d.Run(rctx)
			if !errors.Is(err, ErrAlreadyRunning) || !strings.Contains(err.Error(), "in use by another daemon") {
				t.Fatalf("second Run sharing the %s: %v, want ErrAlreadyRunning", name, err)
			}
			if !strings.Contains(err.Error(), fmt.Sprintf("in use by another daemon (pid %d)", os.Getpid())) {
				t.Errorf("the refusal does not name the holder: %v", err)
			}
			if _, err := os.Stat(cfg.Socket); !os.IsNotExist(err) {
				t.Errorf("the refused daemon made its socket: %v", err)
			}
		})
	}
	// The first daemon still answers.
	if _, err := NewClient(e.cfg.Socket).Status(ctx); err != nil {
		t.Fatalf("first daemon: %v", err)
	}
}

func TestStaleSocketRemoved(t *testing.T) {
	e := newTestEnv(t)
	// A socket file nobody listens on, as a killed daemon leaves it.
	l, err := net.Listen("unix", e.cfg.Socket)
	if err != nil {
		t.Fatal(err)
	}
	l.(*net.UnixListener).SetUnlinkOnClose(false)
	l.Close()
	if _, err := os.Stat(e.cfg.Socket); err != nil {
		t.Fatal(err)
	}
	r := e.start()
	if _, err := r.c.Status(ctx); err != nil {
		t.Fatal(err)
	}
}

func TestNotASocketRefused(t *testing.T) {
	e := newTestEnv(t)
	if err := os.WriteFile(e.cfg.Socket, []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	d, err := New(e.cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := d.Run(ctx); err == nil || !strings.Contains(err.Error(), "not a socket") {
		t.Fatalf("Run over a regular file: %v", err)
	}
}

func TestStatus(t *testing.T) {
	e := newTestEnv(t)
	r := e.start()
	if _, err := r.c.AddDomain(ctx, DomainSpec{Name: "a", URL: "http://g"}); err != nil {
		t.Fatal(err)
	}
	s, err := r.c.Status(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if s.Version != Version || s.PID != os.Getpid() || s.Domains != 1 || s.NBDSocket != e.cfg.NBDSocket ||
		s.Cache.MaxBytes != e.cfg.CacheSize || s.Uptime < 0 || s.StartedAt.IsZero() || s.Mounts == nil {
		t.Errorf("status = %+v", s)
	}
}

func TestExportsOverAPI(t *testing.T) {
	e := newTestEnv(t)
	ga := e.net.glance("http://a")
	gb := e.net.glance("http://b")
	ga.add("shared", "in both", "active", []byte("aa"))
	gb.add("shared", "in both", "active", []byte("bb"))
	ga.add("only-a", "cirros", "active", []byte("cirros"))
	ga.add("queued", "not yet", "queued", nil)
	r := e.start()
	for _, s := range []DomainSpec{{Name: "a", URL: "http://a", UUID: uuidA}, {Name: "b", URL: "http://b", UUID: uuidB}} {
		if _, err := r.c.AddDomain(ctx, s); err != nil {
			t.Fatal(err)
		}
	}
	exps, err := r.c.Exports(ctx)
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]Export{}
	for _, x := range exps {
		got[x.Name] = x
	}
	want := []string{uuidA + "/shared", uuidA + "/only-a", "only-a", uuidB + "/shared"}
	if len(exps) != len(want) {
		t.Errorf("exports = %+v", exps)
	}
	for _, n := range want {
		if _, ok := got[n]; !ok {
			t.Errorf("export %s missing from %+v", n, exps)
		}
	}
	x := got["only-a"]
	if x.Description != "cirros" || x.Size != 6 || x.URI != "nbd+unix:///only-a?socket="+e.cfg.NBDSocket || x.TCPURI != "" {
		t.Errorf("only-a = %+v", x)
	}

	// The nbd.Exports view: same names, sources that read the bytes.
	ex := &exports{d: r.d}
	if n := len(ex.List()); n != len(want) {
		t.Errorf("List has %d exports, want %d", n, len(want))
	}
	if _, err := ex.Lookup("shared"); err == nil {
		t.Error("ambiguous short name resolved")
	}
	for name, data := range map[string]string{uuidB + "/shared": "bb", "only-a": "cirros"} {
		exp, err := ex.Lookup(name)
		if err != nil {
			t.Fatalf("Lookup(%s): %v", name, err)
		}
		buf := make([]byte, exp.Source.Size())
		if n, err := exp.Source.ReadAt(ctx, buf, 0); err != nil || string(buf[:n]) != data {
			t.Errorf("%s reads %q, %v", name, buf[:n], err)
		}
	}
	// A new image is exportable at once: a miss refreshes the catalog.
	gb.add("fresh", "new", "active", []byte("new"))
	sleep(60) // past MissInterval
	if exp, err := ex.Lookup("fresh"); err != nil || exp.Description != "new" {
		t.Errorf("new image not exported on lookup: %+v %v", exp, err)
	}
	if _, err := ex.Lookup(uuidA + "/queued"); err == nil {
		t.Error("queued image exported")
	}
}

// TestExportLookupIgnoresHungDomain: a Glance that never answers must not
// hold up the lookup of another domain's export.
func TestExportLookupIgnoresHungDomain(t *testing.T) {
	e := newTestEnv(t)
	e.net.glance("http://a").add("img-a", "a.raw", "active", []byte("aaaa"))
	gb := e.net.glance("http://b")
	gb.add("img-b", "b.raw", "active", []byte("bb"))
	r := e.start()
	for _, s := range []DomainSpec{{Name: "a", URL: "http://a", UUID: uuidA}, {Name: "b", URL: "http://b", UUID: uuidB}} {
		if _, err := r.c.AddDomain(ctx, s); err != nil {
			t.Fatal(err)
		}
	}
	ex := &exports{d: r.d}
	if _, err := ex.Lookup(uuidA + "/img-a"); err != nil { // lists a
		t.Fatal("lookup with both domains up failed")
	}
	hang := make(chan struct{})
	defer close(hang)
	gb.mu.Lock()
	gb.hang = hang
	gb.mu.Unlock()
	for _, d := range r.d.domainList() {
		if d.record().UUID == uuidB {
			d.cat.invalidate() // b must be asked again, and hangs
		}
	}
	start := time.Now()
	if _, err := ex.Lookup(uuidA + "/img-a"); err != nil {
		t.Error("lookup of a healthy domain's export failed while another domain hangs")
	}
	if el := time.Since(start); el > time.Second {
		t.Errorf("lookup took %v while another domain hangs, want well under 1s", el)
	}
	if _, err := ex.Lookup("img-a"); err != nil { // a's listing is in memory; b has none and is asked, bounded
		t.Error("short name of a healthy domain's export not found")
	}
}
