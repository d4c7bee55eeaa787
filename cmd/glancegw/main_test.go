package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/glancegw/glancegw/hostd"
)

// fakeAPI answers the daemon's API from canned bodies and records requests.
type fakeAPI struct {
	mu     sync.Mutex
	reqs   []recorded
	answer func(method, path string) (int, any)
}

type recorded struct {
	Method, Path string
	Body         map[string]any
}

func (f *fakeAPI) RoundTrip(r *http.Request) (*http.Response, error) {
	rec := recorded{Method: r.Method, Path: r.URL.RequestURI()}
	if r.Body != nil {
		b, _ := io.ReadAll(r.Body)
		if len(b) > 0 {
			if err := json.Unmarshal(b, &rec.Body); err != nil {
				return nil, err
			}
		}
	}
	f.mu.Lock()
	f.reqs = append(f.reqs, rec)
	f.mu.Unlock()
	status, v := 200, any(map[string]any{})
	if f.answer != nil {
		status, v = f.answer(r.Method, r.URL.Path)
	}
	w := httptest.NewRecorder()
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(v)
	return w.Result(), nil
}

func (f *fakeAPI) last(t *testing.T) recorded {
	t.Helper()
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(f.reqs) == 0 {
		t.Fatal("no request sent")
	}
	return f.reqs[len(f.reqs)-1]
}

// testCLI runs command lines against a fake API and a fake serve.
type testCLI struct {
	api      *fakeAPI
	env      map[string]string
	served   *hostd.Config
	sockets  []string
	out, err bytes.Buffer
}

func newTestCLI() *testCLI { return &testCLI{api: &fakeAPI{}, env: map[string]string{}} }

func (tc *testCLI) run(args ...string) int {
	tc.out.Reset()
	tc.err.Reset()
	e := &env{
		stdout: &tc.out,
		stderr: &tc.err,
		getenv: func(k string) string { return tc.env[k] },
		serve: func(ctx context.Context, cfg hostd.Config, log *slog.Logger) error {
			tc.served = &cfg
			return nil
		},
		client: func(socket string) *hostd.Client {
			tc.sockets = append(tc.sockets, socket)
			c := hostd.NewClient(socket)
			c.Transport = tc.api
			return c
		},
	}
	return run(append([]string{"glancegw"}, args...), e)
}

func TestParseSize(t *testing.T) {
	tests := []struct {
		in   string
		want int64
		ok   bool
	}{
		{"0", 0, true},
		{"1048576", 1 << 20, true},
		{"512M", 512 << 20, true},
		{"512m", 512 << 20, true},
		{"1G", 1 << 30, true},
		{"256MiB", 256 << 20, true},
		{"256mib", 256 << 20, true},
		{"2GB", 2 << 30, true},
		{"1.5G", 3 << 29, true},
		{"64K", 64 << 10, true},
		{"1T", 1 << 40, true},
		{"100B", 100, true},
		{" 8M ", 8 << 20, true},
		{"", 0, false},
		{"M", 0, false},
		{"-1", 0, false},
		{"-1G", 0, false},
		{"+5", 0, false},
		{"1.5", 0, false},
		{"1e3M", 0, false},
		{"0x10M", 0, false},
		{"1X", 0, false},
		{"1MiBs", 0, false},
		{"1 G", 0, false},
		{"9999999999T", 0, false},
		{"NaNM", 0, false},
		{"1.2.3M", 0, false},
	}
	for _, tt := range tests {
		got, err := parseSize(tt.in)
		if (err == nil) != tt.ok || got != tt.want {
			t.Errorf("parseSize(%q) = %d, %v; want %d, ok=%v", tt.in, got, err, tt.want, tt.ok)
		}
	}
}

func FuzzParseSize(f *testing.F) {
	for _, s := range []string{"512M", "1G", "256MiB", "12345", "1.5g", "-1", "", "1e9G"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		n, err := parseSize(s)
		if err != nil {
			if n != 0 {
				t.Fatalf("parseSize(%q) = %d with error %v", s, n, err)
			}
			return
		}
		if n < 0 {
			t.Fatalf("parseSize(%q) = %d < 0", s, n)
		}
	})
}

func TestParseRefresh(t *testing.T) {
	tests := []struct {
		in   string
		want time.Duration
		ok   bool
	}{
		{"30", 30 * time.Second, true},
		{"0", 0, true},
		{"1m30s", 90 * time.Second, true},
		{"500ms", 500 * time.Millisecond, true},
		{"-5s", 0, false},
		{"soon", 0, false},
		{"", 0, false},
	}
	for _, tt := range tests {
		got, err := parseRefresh(tt.in)
		if (err == nil) != tt.ok || got != tt.want {
			t.Errorf("parseRefresh(%q) = %v, %v; want %v, ok=%v", tt.in, got, err, tt.want, tt.ok)
		}
	}
}

func TestHumanSize(t *testing.T) {
	for in, want := range map[int64]string{0: "0 B", 1023: "1023 B", 1024: "1.0 KiB", 1536: "1.5 KiB",
		512 << 20: "512.0 MiB", 3 << 30: "3.0 GiB", 1 << 62: "4.0 EiB"} {
		if got := humanSize(in); got != want {
			t.Errorf("humanSize(%d) = %q, want %q", in, got, want)
		}
	}
}

func TestServeFlagsToConfig(t *testing.T) {
	tc := newTestCLI()
	if code := tc.run("--socket", "/tmp/a.sock", "serve", "--state-dir", "/s", "--mount-root", "/m",
		"--repo-root", "/r", "--cache-size", "1G", "--nbd-socket", "/n.sock", "--nbd-listen", "127.0.0.1:10809",
		"--refresh", "45", "--socket-group", "kvm", "--fuse-debug", "--transfer-rate-limit", "100M"); code != 0 {
		t.Fatalf("exit %d: %s", code, tc.err.String())
	}
	want := hostd.Config{StateDir: "/s", MountRoot: "/m", RepoRoot: "/r", Socket: "/tmp/a.sock", SocketGroup: "kvm",
		CacheSize: 1 << 30, NBDSocket: "/n.sock", NBDListen: "127.0.0.1:10809", RefreshTTL: 45 * time.Second, FUSEDebug: true,
		TransferRateLimit: 100 << 20}
	if tc.served == nil || !reflect.DeepEqual(*tc.served, want) {
		t.Fatalf("config = %+v\nwant     %+v", tc.served, want)
	}

	// Defaults, and --socket after the command name.
	tc.served = nil
	if code := tc.run("serve", "--socket", "/tmp/b.sock", "--refresh", "1m"); code != 0 {
		t.Fatalf("exit %d: %s", code, tc.err.String())
	}
	want = hostd.Config{StateDir: hostd.DefaultStateDir, MountRoot: hostd.DefaultMountRoot, RepoRoot: hostd.DefaultRepoRoot,
		Socket: "/tmp/b.sock", CacheSize: 512 << 20, NBDSocket: hostd.DefaultNBDSocket, RefreshTTL: time.Minute}
	if tc.served == nil || !reflect.DeepEqual(*tc.served, want) {
		t.Fatalf("config = %+v\nwant     %+v", tc.served, want)
	}

	// GLANCEGW_SOCKET is the default socket.
	t.Setenv("GLANCEGW_SOCKET", "/tmp/env.sock")
	if code := tc.run("serve"); code != 0 || tc.served.Socket != "/tmp/env.sock" {
		t.Fatalf("exit %d, socket %q", code, tc.served.Socket)
	}

	for _, bad := range [][]string{
		{"serve", "--cache-size", "lots"},
		{"serve", "--cache-size", "0"},
		{"serve", "--refresh", "-1s"},
		{"serve", "--log-format", "xml"},
		{"serve", "--log-level", "loud"},
		{"serve", "--nbd-listen", "notanaddr"},
		{"serve", "--transfer-rate-limit", "fast"},
		{"serve", "extra"},
	} {
		tc.served = nil
		if code := tc.run(bad...); code != exitUsage || tc.served != nil {
			t.Errorf("%v: exit %d (served %v), want %d", bad, code, tc.served != nil, exitUsage)
		}
	}
}

func TestExitCodes(t *testing.T) {
	tests := []struct {
		err  error
		want int
	}{
		{nil, 0},
		{errors.New("boom"), 1},
		{usageError{errors.New("bad flag")}, 2},
		{&hostd.APIError{Status: 400, Code: hostd.CodeBadRequest, Message: "bad uuid"}, 2},
		{fmt.Errorf("%w at /x: dial: refused", hostd.ErrDaemonUnreachable), 3},
		{&hostd.APIError{Status: 404, Code: hostd.CodeNotFound}, 4},
		{&hostd.APIError{Status: 409, Code: hostd.CodeConflict}, 5},
		{fmt.Errorf("serve: %w", hostd.ErrAlreadyRunning), 5},
		{&hostd.APIError{Status: 503, Code: hostd.CodeUnavailable}, 6},
		{&hostd.APIError{Status: 502, Code: hostd.CodeAuthFailed}, 7},
		{&hostd.APIError{Status: 500, Code: hostd.CodeInternal}, 1},
	}
	for _, tt := range tests {
		if got := exitCode(tt.err); got != tt.want {
			t.Errorf("exitCode(%v) = %d, want %d", tt.err, got, tt.want)
		}
	}
}

func TestExitCodesEndToEnd(t *testing.T) {
	tc := newTestCLI()
	for code, status := range map[int][2]any{
		4: {404, hostd.CodeNotFound}, 5: {409, hostd.CodeConflict}, 6: {503, hostd.CodeUnavailable},
		2: {400, hostd.CodeBadRequest}, 1: {500, hostd.CodeInternal}, 7: {502, hostd.CodeAuthFailed},
	} {
		tc.api.answer = func(string, string) (int, any) {
			return status[0].(int), map[string]string{"error": "the message", "code": status[1].(string)}
		}
		if got := tc.run("domain", "show", "x"); got != code {
			t.Errorf("%v: exit %d, want %d", status, got, code)
		}
		if tc.err.String() != "glancegw: the message\n" {
			t.Errorf("stderr = %q, want one line", tc.err.String())
		}
	}
	// Nothing listens: exit 3.
	dir := t.TempDir()
	e := defaultEnv()
	var stderr bytes.Buffer
	e.stdout, e.stderr = io.Discard, &stderr
	if got := run([]string{"glancegw", "--socket", filepath.Join(dir, "none.sock"), "status"}, e); got != exitUnreachable {
		t.Errorf("no daemon: exit %d, want 3 (%s)", got, stderr.String())
	}
	if !strings.HasPrefix(stderr.String(), "glancegw: ") || strings.Count(stderr.String(), "\n") != 1 {
		t.Errorf("stderr = %q, want one line", stderr.String())
	}
	for _, bad := range [][]string{{"frob"}, {"domain", "frob"}, {"domain", "show"}, {"domain", "show", "a", "b"},
		{"mount"}, {"image", "list"}, {"--nope"}, {"domain", "add", "x"}} {
		if got := tc.run(bad...); got != exitUsage {
			t.Errorf("%v: exit %d, want 2 (%s)", bad, got, tc.err.String())
		}
	}
}

func TestHelpHasExamples(t *testing.T) {
	tc := newTestCLI()
	if code := tc.run("--help"); code != 0 {
		t.Fatalf("--help: exit %d", code)
	}
	for _, want := range []string{"Exit codes", "3  the daemon is not reachable", "6  backend (Glance) unavailable",
		"7  Glance or Keystone rejected the credentials", "GLANCEGW_SOCKET"} {
		if !strings.Contains(tc.out.String(), want) {
			t.Errorf("--help lacks %q:\n%s", want, tc.out.String())
		}
	}
	for _, cmd := range [][]string{{"serve"}, {"domain"}, {"domain", "add"}, {"domain", "list"}, {"domain", "show"},
		{"domain", "edit"}, {"domain", "remove"}, {"image"}, {"image", "list"}, {"mount"}, {"unmount"},
		{"nbd"}, {"nbd", "list"}, {"status"}, {"version"}} {
		if code := tc.run(append(cmd, "--help")...); code != 0 {
			t.Errorf("%v --help: exit %d", cmd, code)
		}
		out := tc.out.String()
		if !strings.Contains(out, "Examples:") || !strings.Contains(out, "glancegw "+strings.Join(cmd, " ")) {
			t.Errorf("%v --help has no examples:\n%s", cmd, out)
		}
	}
	if len(tc.api.reqs) != 0 {
		t.Errorf("help talked to the daemon: %+v", tc.api.reqs)
	}
}

func TestSecretsNeverFromArgv(t *testing.T) {
	tc := newTestCLI()
	// There is no flag that takes a secret's value.
	for _, bad := range [][]string{
		{"domain", "add", "x", "--url", "http://g", "--password", "hunter2"},
		{"domain", "add", "x", "--url", "http://g", "--token", "hunter2"},
		{"domain", "edit", "x", "--password", "hunter2"},
		{"domain", "edit", "x", "--token=hunter2"},
	} {
		if code := tc.run(bad...); code != exitUsage {
			t.Errorf("%v: exit %d, want 2", bad, code)
		}
		if strings.Contains(tc.err.String(), "hunter2") {
			t.Errorf("secret echoed: %s", tc.err.String())
		}
	}
	if len(tc.api.reqs) != 0 {
		t.Fatalf("a secret on argv was sent: %+v", tc.api.reqs)
	}

	dir := t.TempDir()
	pw := filepath.Join(dir, "pw")
	os.WriteFile(pw, []byte("from-file\n"), 0o600)
	tok := filepath.Join(dir, "tok")
	os.WriteFile(tok, []byte("tok-from-file\r\n"), 0o600)
	empty := filepath.Join(dir, "empty")
	os.WriteFile(empty, nil, 0o600)

	tests := []struct {
		name string
		args []string
		env  map[string]string
		want map[string]any // fields of the body sent; absent keys must be absent
	}{
		{"password file → keystone", []string{"--auth-url", "http://k/v3", "--username", "u", "--project", "p", "--password-file", pw},
			nil, map[string]any{"auth": "keystone", "password": "from-file", "auth_url": "http://k/v3"}},
		{"password env", []string{"--auth-url", "http://k/v3", "--username", "u", "--project", "p"},
			map[string]string{"GLANCEGW_PASSWORD": "from-env"}, map[string]any{"auth": "keystone", "password": "from-env"}},
		{"file beats env", []string{"--auth-url", "http://k/v3", "--username", "u", "--project", "p", "--password-file", pw},
			map[string]string{"GLANCEGW_PASSWORD": "from-env"}, map[string]any{"auth": "keystone", "password": "from-file"}},
		{"token file → token", []string{"--token-file", tok}, nil, map[string]any{"auth": "token", "token": "tok-from-file"}},
		{"token env → token", nil, map[string]string{"GLANCEGW_TOKEN": "tok-env"}, map[string]any{"auth": "token", "token": "tok-env"}},
		{"nothing → none", nil, nil, map[string]any{"auth": "none"}},
		{"env secret of another kind is not sent", []string{"--auth", "none"},
			map[string]string{"GLANCEGW_TOKEN": "t", "GLANCEGW_PASSWORD": "p"}, map[string]any{"auth": "none"}},
		{"uuid and tls", []string{"--uuid", "5e1b7f4a-1c1d-4a5e-9d0e-0a6c3f2b9e11", "--insecure"}, nil,
			map[string]any{"auth": "none", "uuid": "5e1b7f4a-1c1d-4a5e-9d0e-0a6c3f2b9e11", "insecure": true}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tc.env = tt.env
			tc.api.answer = func(string, string) (int, any) { return 201, map[string]any{"name": "x"} }
			args := append([]string{"domain", "add", "x", "--url", "http://g"}, tt.args...)
			if code := tc.run(args...); code != 0 {
				t.Fatalf("exit %d: %s", code, tc.err.String())
			}
			r := tc.api.last(t)
			if r.Method != "POST" || r.Path != "/v1/domains" || r.Body["name"] != "x" || r.Body["url"] != "http://g" {
				t.Fatalf("sent %+v", r)
			}
			for k, v := range tt.want {
				if r.Body[k] != v {
					t.Errorf("%s = %v, want %v", k, r.Body[k], v)
				}
			}
			for _, k := range []string{"token", "password"} {
				if _, ok := tt.want[k]; !ok && r.Body[k] != nil {
					t.Errorf("%s sent: %v", k, r.Body[k])
				}
			}
		})
	}
	tc.env = nil
	if code := tc.run("domain", "add", "x", "--url", "http://g", "--token-file", empty); code != exitUsage {
		t.Errorf("empty token file: exit %d, want 2", code)
	}
	if code := tc.run("domain", "add", "x", "--url", "http://g", "--token-file", filepath.Join(dir, "missing")); code != exitUsage {
		t.Errorf("missing token file: exit %d, want 2", code)
	}
}

func TestDomainEditSendsOnlyWhatIsGiven(t *testing.T) {
	tc := newTestCLI()
	dir := t.TempDir()
	pw := filepath.Join(dir, "pw")
	os.WriteFile(pw, []byte("pw2"), 0o600)
	tests := []struct {
		args []string
		env  map[string]string
		want map[string]any
	}{
		{[]string{"--name", "new"}, map[string]string{"GLANCEGW_PASSWORD": "ignored"}, map[string]any{"name": "new"}},
		{[]string{"--url", "http://h", "--insecure=false"}, nil, map[string]any{"url": "http://h", "insecure": false}},
		{[]string{"--password-file", pw}, nil, map[string]any{"password": "pw2"}},
		{[]string{"--auth", "keystone", "--auth-url", "http://k"}, map[string]string{"GLANCEGW_PASSWORD": "envpw"},
			map[string]any{"auth": "keystone", "auth_url": "http://k", "password": "envpw"}},
		{[]string{"--auth-url", "http://k"}, nil, map[string]any{"auth": "keystone", "auth_url": "http://k"}},
		{[]string{"--auth", "none"}, map[string]string{"GLANCEGW_TOKEN": "t"}, map[string]any{"auth": "none"}},
	}
	for _, tt := range tests {
		tc.env = tt.env
		if code := tc.run(append([]string{"domain", "edit", "d1"}, tt.args...)...); code != 0 {
			t.Fatalf("%v: exit %d: %s", tt.args, code, tc.err.String())
		}
		r := tc.api.last(t)
		if r.Method != "PATCH" || r.Path != "/v1/domains/d1" || !reflect.DeepEqual(r.Body, tt.want) {
			t.Errorf("%v: sent %s %s %v, want %v", tt.args, r.Method, r.Path, r.Body, tt.want)
		}
	}
	if code := tc.run("domain", "edit", "d1"); code != exitUsage {
		t.Errorf("edit without changes: exit %d, want 2", code)
	}
}

func TestOutput(t *testing.T) {
	tc := newTestCLI()
	doms := []hostd.Domain{{DomainRecord: hostd.DomainRecord{UUID: "5e1b7f4a-1c1d-4a5e-9d0e-0a6c3f2b9e11", Name: "iso",
		URL: "http://g", Auth: "token", Mounted: true, Mountpoint: "/run/glancegw/mnt/iso"}, Active: true, HasToken: true}}
	tc.api.answer = func(m, p string) (int, any) {
		switch p {
		case "/v1/domains":
			return 200, doms
		case "/v1/domains/iso/images":
			return 200, []hostd.Image{{ID: "i1", Name: "cirros", Status: "active", Size: 3 << 20, DiskFormat: "qcow2"}}
		case "/v1/nbd/exports":
			return 200, []hostd.Export{{Name: "i1", Description: "cirros", Size: 1024, URI: "nbd+unix:///i1?socket=/n"}}
		}
		return 404, map[string]string{"error": "no", "code": "not_found"}
	}
	if code := tc.run("domain", "list"); code != 0 {
		t.Fatal(tc.err.String())
	}
	lines := strings.Split(strings.TrimSpace(tc.out.String()), "\n")
	if len(lines) != 2 || !strings.HasPrefix(lines[0], "NAME") || !strings.Contains(lines[1], "iso") || !strings.Contains(lines[1], "yes") {
		t.Errorf("table:\n%s", tc.out.String())
	}
	for _, args := range [][]string{{"domain", "list", "--json"}, {"--json", "domain", "list"}} {
		if code := tc.run(args...); code != 0 {
			t.Fatal(tc.err.String())
		}
		var got []map[string]any
		if err := json.Unmarshal(tc.out.Bytes(), &got); err != nil || len(got) != 1 {
			t.Fatalf("%v: not JSON: %v\n%s", args, err, tc.out.String())
		}
		for _, k := range []string{"uuid", "name", "url", "auth", "mounted"} {
			if _, ok := got[0][k]; !ok {
				t.Errorf("JSON domain lacks %q: %v", k, got[0])
			}
		}
	}
	if code := tc.run("image", "list", "iso", "--refresh"); code != 0 || !strings.Contains(tc.out.String(), "3.0 MiB") {
		t.Errorf("image list: %d\n%s", code, tc.out.String())
	}
	if r := tc.api.last(t); r.Path != "/v1/domains/iso/images?refresh=1" {
		t.Errorf("--refresh sent %s", r.Path)
	}
	if code := tc.run("nbd", "list"); code != 0 || !strings.Contains(tc.out.String(), "nbd+unix:///i1?socket=/n") {
		t.Errorf("nbd list: %d\n%s", code, tc.out.String())
	}
	if code := tc.run("--socket", "/x.sock", "mount", "iso", "--mountpoint", "rel/dir"); code != exitNotFound {
		// the fake has no mount route
		t.Errorf("mount: exit %d", code)
	}
	wd, _ := os.Getwd()
	if r := tc.api.last(t); r.Path != "/v1/domains/iso/mount" || r.Body["mountpoint"] != filepath.Join(wd, "rel/dir") {
		t.Errorf("mount sent %+v", r)
	}
	if tc.sockets[len(tc.sockets)-1] != "/x.sock" {
		t.Errorf("client socket %q", tc.sockets[len(tc.sockets)-1])
	}
}

func TestIntersperse(t *testing.T) {
	app := (&env{}).app()
	tests := []struct{ in, want string }{
		{"glancegw domain add x --url u", "glancegw domain add --url u -- x"},
		{"glancegw --socket s domain add x --url u --insecure", "glancegw --socket s domain add --url u --insecure -- x"},
		{"glancegw domain add --url u x", "glancegw domain add --url u -- x"},
		{"glancegw domain add x --url=u", "glancegw domain add --url=u -- x"},
		{"glancegw domain add -- -x --url u", "glancegw domain add -- -x --url u"},
		{"glancegw mount d --mountpoint /m --json", "glancegw mount --mountpoint /m --json -- d"},
		{"glancegw status", "glancegw status"},
		{"glancegw", "glancegw"},
		{"glancegw frob --x", "glancegw --x -- frob"},
	}
	for _, tt := range tests {
		if got := strings.Join(intersperse(app, strings.Fields(tt.in)), " "); got != tt.want {
			t.Errorf("intersperse(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
}

// The --socket flag wins over GLANCEGW_SOCKET wherever it is given; the
// environment only replaces the default.
func TestSocketFlagBeatsEnv(t *testing.T) {
	tc := newTestCLI()
	t.Setenv("GLANCEGW_SOCKET", "/tmp/env.sock")
	for _, tt := range []struct {
		args []string
		want string
	}{
		{[]string{"--socket", "/tmp/flag.sock", "serve"}, "/tmp/flag.sock"},
		{[]string{"serve", "--socket", "/tmp/flag.sock"}, "/tmp/flag.sock"},
		{[]string{"--socket", "/tmp/g.sock", "serve", "--socket", "/tmp/s.sock"}, "/tmp/s.sock"},
		{[]string{"serve"}, "/tmp/env.sock"},
	} {
		tc.served = nil
		if code := tc.run(tt.args...); code != 0 || tc.served == nil {
			t.Fatalf("%v: exit %d: %s", tt.args, code, tc.err.String())
		}
		if tc.served.Socket != tt.want {
			t.Errorf("%v: serve listens on %q, want %q", tt.args, tc.served.Socket, tt.want)
		}
	}
	for _, tt := range []struct {
		args []string
		want string
	}{
		{[]string{"--socket", "/tmp/flag.sock", "status"}, "/tmp/flag.sock"},
		{[]string{"status"}, "/tmp/env.sock"},
	} {
		tc.run(tt.args...)
		if got := tc.sockets[len(tc.sockets)-1]; got != tt.want {
			t.Errorf("%v: client uses %q, want %q", tt.args, got, tt.want)
		}
	}
}

// GLANCEGW_TOKEN / GLANCEGW_PASSWORD alone are an edit of the secret the
// domain's auth uses; a secret of another kind is a usage error.
func TestDomainEditSecretFromEnvAlone(t *testing.T) {
	tests := []struct {
		name     string
		auth     string // the domain's auth kind
		env      map[string]string
		code     int
		want     map[string]any // PATCH body; nil: no PATCH sent
		errWants string
	}{
		{"password for keystone", "keystone", map[string]string{"GLANCEGW_PASSWORD": "pw-env"}, 0,
			map[string]any{"password": "pw-env"}, ""},
		{"token for token", "token", map[string]string{"GLANCEGW_TOKEN": "tok-env"}, 0,
			map[string]any{"token": "tok-env"}, ""},
		{"both set, keystone takes the password", "keystone",
			map[string]string{"GLANCEGW_TOKEN": "tok-env", "GLANCEGW_PASSWORD": "pw-env"}, 0,
			map[string]any{"password": "pw-env"}, ""},
		{"token for keystone", "keystone", map[string]string{"GLANCEGW_TOKEN": "tok-env"}, exitUsage, nil,
			"GLANCEGW_TOKEN"},
		{"password for none", "none", map[string]string{"GLANCEGW_PASSWORD": "pw-env"}, exitUsage, nil,
			"--auth keystone"},
		{"nothing at all", "keystone", nil, exitUsage, nil, "nothing to change"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tc := newTestCLI()
			tc.env = tt.env
			tc.api.answer = func(m, p string) (int, any) {
				return 200, map[string]any{"name": "d1", "uuid": "5e1b7f4a-1c1d-4a5e-9d0e-0a6c3f2b9e11", "auth": tt.auth}
			}
			code := tc.run("domain", "edit", "d1")
			if code != tt.code {
				t.Fatalf("exit %d, want %d: %s", code, tt.code, tc.err.String())
			}
			if !strings.Contains(tc.err.String(), tt.errWants) {
				t.Errorf("stderr %q lacks %q", tc.err.String(), tt.errWants)
			}
			for _, s := range []string{"pw-env", "tok-env"} {
				if strings.Contains(tc.err.String()+tc.out.String(), s) {
					t.Errorf("secret %q printed", s)
				}
			}
			var patch *recorded
			for i, r := range tc.api.reqs {
				if r.Method == "PATCH" {
					patch = &tc.api.reqs[i]
				}
			}
			switch {
			case tt.want == nil && patch != nil:
				t.Errorf("sent %+v", *patch)
			case tt.want != nil && (patch == nil || patch.Path != "/v1/domains/d1" || !reflect.DeepEqual(patch.Body, tt.want)):
				t.Errorf("sent %+v, want PATCH /v1/domains/d1 %v", patch, tt.want)
			}
		})
	}
}

// A mount whose first listing failed succeeds, with the daemon's warning
// on stderr (and in the JSON answer).
func TestMountWarning(t *testing.T) {
	tc := newTestCLI()
	warning := ""
	tc.api.answer = func(m, p string) (int, any) {
		return 200, map[string]any{"name": "iso", "uuid": "5e1b7f4a-1c1d-4a5e-9d0e-0a6c3f2b9e11",
			"mountpoint": "/run/glancegw/mnt/iso", "mounted": true, "active": true, "warning": warning}
	}
	if code := tc.run("mount", "iso"); code != 0 || tc.err.Len() != 0 {
		t.Fatalf("mount without warning: exit %d, stderr %q", code, tc.err.String())
	}
	warning = "mounted, but the first listing failed: domain iso: list images:\nconnection refused"
	if code := tc.run("mount", "iso"); code != 0 {
		t.Fatalf("mount with a warning: exit %d: %s", code, tc.err.String())
	}
	if !strings.Contains(tc.out.String(), "iso mounted at /run/glancegw/mnt/iso") {
		t.Errorf("stdout = %q", tc.out.String())
	}
	if want := "glancegw: warning: mounted, but the first listing failed: domain iso: list images: connection refused\n"; tc.err.String() != want {
		t.Errorf("stderr = %q, want %q", tc.err.String(), want)
	}
	if code := tc.run("mount", "iso", "--json"); code != 0 {
		t.Fatalf("mount --json: exit %d", code)
	}
	var got map[string]any
	if err := json.Unmarshal(tc.out.Bytes(), &got); err != nil || got["warning"] != warning {
		t.Errorf("JSON answer %s (%v): want the warning", tc.out.String(), err)
	}
	if !strings.Contains(tc.err.String(), "warning:") {
		t.Errorf("--json: stderr %q lacks the warning", tc.err.String())
	}
}

// TestDomainAddNamesMissingFlags: a domain that cannot authenticate is a
// usage error naming the flags to add; nothing reaches the daemon.
func TestDomainAddNamesMissingFlags(t *testing.T) {
	for _, tt := range []struct {
		args []string
		want string
	}{
		{[]string{"--auth-url", "http://k/v3", "--username", "u", "--project", "p"}, "auth keystone needs --password-file FILE (or GLANCEGW_PASSWORD)"},
		{[]string{"--auth", "keystone"}, "needs --auth-url URL, --username U, --project P, --password-file FILE"},
		{[]string{"--auth", "token"}, "auth token needs --token-file FILE (or GLANCEGW_TOKEN)"},
	} {
		tc := newTestCLI()
		tc.api.answer = func(string, string) (int, any) { return 201, map[string]any{"name": "x"} }
		if code := tc.run(append([]string{"domain", "add", "x", "--url", "http://g"}, tt.args...)...); code != exitUsage || !strings.Contains(tc.err.String(), tt.want) {
			t.Errorf("%v: exit %d, %q; want exit 2 saying %q", tt.args, code, tc.err.String(), tt.want)
		}
		tc.api.mu.Lock()
		n := len(tc.api.reqs)
		tc.api.mu.Unlock()
		if n != 0 {
			t.Errorf("%v: %d requests reached the daemon", tt.args, n)
		}
	}
}

// A mount lost outside the daemon shows as lost, with the command that
// mounts it again, in status, domain list and domain show.
func TestLostMountOutput(t *testing.T) {
	tc := newTestCLI()
	lost := hostd.Domain{DomainRecord: hostd.DomainRecord{UUID: "5e1b7f4a-1c1d-4a5e-9d0e-0a6c3f2b9e11", Name: "lab",
		URL: "http://g", Auth: "none", Mounted: true, Mountpoint: "/X/mnt/lab"},
		Lost: "/X/mnt/lab was unmounted outside the daemon; glancegw mount lab mounts it again"}
	tc.api.answer = func(m, p string) (int, any) {
		switch p {
		case "/v1/status":
			return 200, hostd.Status{Domains: 1, Mounts: []hostd.MountInfo{},
				LostMounts: []hostd.MountInfo{{Domain: "lab", UUID: lost.UUID, Mountpoint: "/X/mnt/lab"}}}
		case "/v1/domains":
			return 200, []hostd.Domain{lost}
		case "/v1/domains/lab":
			return 200, lost
		}
		return 404, map[string]string{"error": "no", "code": "not_found"}
	}
	if code := tc.run("status"); code != 0 {
		t.Fatal(tc.err.String())
	}
	out := tc.out.String()
	if strings.Contains(out, "\nmount:") || !strings.Contains(out, "\nlost mount:") ||
		!strings.Contains(out, "lab at /X/mnt/lab (unmounted outside the daemon; glancegw mount lab mounts it again)") {
		t.Errorf("status:\n%s", out)
	}
	if code := tc.run("domain", "list"); code != 0 {
		t.Fatal(tc.err.String())
	}
	if lines := strings.Split(strings.TrimSpace(tc.out.String()), "\n"); len(lines) != 2 || !strings.Contains(lines[1], " lost ") {
		t.Errorf("domain list, want MOUNTED lost:\n%s", tc.out.String())
	}
	if code := tc.run("domain", "show", "lab"); code != 0 {
		t.Fatal(tc.err.String())
	}
	if out := tc.out.String(); !strings.Contains(out, "lost") || !strings.Contains(out, lost.Lost) {
		t.Errorf("domain show:\n%s", out)
	}
}
