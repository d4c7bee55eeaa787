package harness

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// ErrGlanceMissing means glance-api (or keystone-manage for keystone mode)
// is not installed: run `make deps`.
var ErrGlanceMissing = errors.New("harness: glance-api/keystone not installed (run make deps)")

// Keystone credentials start.sh sets up (test-only defaults).
const (
	KeystoneAdminUser            = "admin"
	KeystoneAdminProject         = "admin"
	DefaultKeystoneAdminPassword = "admin-secret"
	KeystoneDomain               = "Default"
)

// GlanceConfig says which Glance to start. Zero values take defaults.
type GlanceConfig struct {
	Mode            string        // "noauth" (default) or "keystone"
	Port            int           // glance-api port (default 9292)
	KeystonePort    int           // keystone port (default 5000)
	TokenExpiration time.Duration // keystone token lifetime (default: start.sh's 3600 s)
	AdminPassword   string        // keystone user admin's password (default DefaultKeystoneAdminPassword)
	StateDir        string        // required: absent or empty
	ScriptDir       string        // test/glance (default: found from the repository root)
	StartTimeout    time.Duration // wait for each service to answer (default 180 s); start.sh as a whole gets 3x
	Reaper          *Reaper       // optional safety net
}

// Glance is a running throwaway Glance started by test/glance/start.sh.
type Glance struct {
	cfg         GlanceConfig
	URL         string // e.g. http://127.0.0.1:9292
	KeystoneURL string // keystone mode only, e.g. http://127.0.0.1:5000
	http        *http.Client

	mu       sync.Mutex
	token    string
	tokenAt  time.Time
	stopOnce sync.Once
	stopErr  error
}

// StartGlance runs start.sh and returns the running Glance.
func StartGlance(ctx context.Context, cfg GlanceConfig) (*Glance, error) {
	if cfg.Mode == "" {
		cfg.Mode = "noauth"
	}
	if cfg.Port == 0 {
		cfg.Port = 9292
	}
	if cfg.KeystonePort == 0 {
		cfg.KeystonePort = 5000
	}
	if cfg.StartTimeout == 0 {
		cfg.StartTimeout = 180 * time.Second
	}
	if cfg.AdminPassword == "" {
		cfg.AdminPassword = DefaultKeystoneAdminPassword
	}
	if cfg.StateDir == "" {
		return nil, errors.New("harness: GlanceConfig.StateDir is required")
	}
	if cfg.ScriptDir == "" {
		root, err := RepoRoot()
		if err != nil {
			return nil, err
		}
		cfg.ScriptDir = filepath.Join(root, "test", "glance")
	}
	need := []string{"glance-api", "glance-manage", "curl"}
	if cfg.Mode == "keystone" {
		need = append(need, "keystone-manage", "uwsgi", "sqlite3")
	}
	if m := Missing(need...); len(m) > 0 {
		return nil, fmt.Errorf("%w: missing %s", ErrGlanceMissing, strings.Join(m, ", "))
	}

	g := &Glance{cfg: cfg, http: &http.Client{Timeout: 120 * time.Second}}
	env := append(os.Environ(),
		"GLANCE_PORT="+strconv.Itoa(cfg.Port),
		"KEYSTONE_PORT="+strconv.Itoa(cfg.KeystonePort),
		"GLANCE_START_TIMEOUT="+strconv.Itoa(int(cfg.StartTimeout/time.Second)),
		"KEYSTONE_ADMIN_PASSWORD="+cfg.AdminPassword,
	)
	if cfg.TokenExpiration > 0 {
		env = append(env, "KEYSTONE_TOKEN_EXPIRATION="+strconv.Itoa(int(cfg.TokenExpiration/time.Second)))
	}
	cfg.Reaper.Add(ReapGlance, cfg.StateDir)
	out, err := g.script(ctx, env, 3*cfg.StartTimeout, "start.sh", cfg.Mode, cfg.StateDir)
	if err != nil {
		_ = g.Stop()
		return nil, err
	}
	g.URL = strings.TrimSpace(out)
	if cfg.Mode == "keystone" {
		g.KeystoneURL = fmt.Sprintf("http://127.0.0.1:%d", cfg.KeystonePort)
	}
	return g, nil
}

// script runs one of test/glance/*.sh, bounded, and returns its stdout.
func (g *Glance) script(ctx context.Context, env []string, timeout time.Duration, name string, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, "bash", append([]string{filepath.Join(g.cfg.ScriptDir, name)}, args...)...)
	cmd.Env = env
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	// The scripts start daemons with setsid; WaitDelay keeps a stray
	// inherited pipe from blocking us forever.
	cmd.WaitDelay = 5 * time.Second
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("harness: %s %s: %w\n%s", name, strings.Join(args, " "), err, tail(stderr.String(), 3000))
	}
	return stdout.String(), nil
}

// Mode returns "noauth" or "keystone".
func (g *Glance) Mode() string { return g.cfg.Mode }

// StateDir is start.sh's state dir (logs: glance-api.log, keystone.log).
func (g *Glance) StateDir() string { return g.cfg.StateDir }

// Stop stops Glance (and keystone) and removes the state dir. Safe to call
// more than once.
func (g *Glance) Stop() error {
	g.stopOnce.Do(func() {
		_ = g.signal(syscall.SIGCONT) // a paused group would ignore TERM
		_, g.stopErr = g.script(context.Background(), os.Environ(), 60*time.Second, "stop.sh", g.cfg.StateDir)
		if g.stopErr == nil {
			g.cfg.Reaper.Forget(ReapGlance, g.cfg.StateDir)
		}
	})
	return g.stopErr
}

// APIGroup returns the process group id of glance-api (start.sh runs it in
// its own session).
func (g *Glance) APIGroup() (int, error) {
	b, err := os.ReadFile(filepath.Join(g.cfg.StateDir, "glance-api.pid"))
	if err != nil {
		return 0, fmt.Errorf("harness: glance-api pid: %w", err)
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil || pid <= 1 {
		return 0, fmt.Errorf("harness: glance-api pid file holds %q", b)
	}
	return pid, nil
}

func (g *Glance) signal(sig syscall.Signal) error {
	pg, err := g.APIGroup()
	if err != nil {
		return err
	}
	if err := syscall.Kill(-pg, sig); err != nil {
		return fmt.Errorf("harness: signal %v to glance-api group %d: %w", sig, pg, err)
	}
	return nil
}

// Pause SIGSTOPs every glance-api process: connections are accepted by the
// kernel but never answered, like a hung server.
func (g *Glance) Pause() error { return g.signal(syscall.SIGSTOP) }

// Resume undoes Pause.
func (g *Glance) Resume() error { return g.signal(syscall.SIGCONT) }

// Kill SIGKILLs every glance-api process: connections are refused until
// Restart.
func (g *Glance) Kill() error {
	pg, err := g.APIGroup()
	if err != nil {
		return err
	}
	if err := syscall.Kill(-pg, syscall.SIGKILL); err != nil {
		return fmt.Errorf("harness: kill glance-api group %d: %w", pg, err)
	}
	for range 100 {
		if syscall.Kill(-pg, 0) != nil {
			return nil
		}
		time.Sleep(50 * time.Millisecond)
	}
	return fmt.Errorf("harness: glance-api group %d still alive after SIGKILL", pg)
}

// Restart starts glance-api again keeping its db and images (restart.sh).
func (g *Glance) Restart(ctx context.Context) error {
	env := append(os.Environ(), "GLANCE_START_TIMEOUT="+strconv.Itoa(int(g.cfg.StartTimeout/time.Second)))
	_, err := g.script(ctx, env, 2*g.cfg.StartTimeout, "restart.sh", g.cfg.StateDir)
	return err
}

// Token returns a Keystone token for the admin user (keystone mode). Tokens
// are reused for at most 20 s: tests run with 60 s token lifetimes.
func (g *Glance) Token(ctx context.Context) (string, error) {
	if g.KeystoneURL == "" {
		return "", nil
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.token != "" && time.Since(g.tokenAt) < 20*time.Second {
		return g.token, nil
	}
	body := fmt.Sprintf(`{"auth":{"identity":{"methods":["password"],"password":{"user":{"name":%q,"domain":{"name":%q},"password":%q}}},"scope":{"project":{"name":%q,"domain":{"name":%q}}}}}`,
		KeystoneAdminUser, KeystoneDomain, g.cfg.AdminPassword, KeystoneAdminProject, KeystoneDomain)
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, g.KeystoneURL+"/v3/auth/tokens", strings.NewReader(body))
	if err != nil {
		return "", err
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := g.http.Do(req)
	if err != nil {
		return "", fmt.Errorf("harness: keystone token: %w", err)
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, resp.Body)
	if resp.StatusCode != http.StatusCreated {
		return "", fmt.Errorf("harness: keystone token: HTTP %d", resp.StatusCode)
	}
	g.token, g.tokenAt = resp.Header.Get("X-Subject-Token"), time.Now()
	return g.token, nil
}

// do sends one request to Glance (with a token in keystone mode) and
// returns the body of a 2xx answer.
func (g *Glance) do(ctx context.Context, method, path, ctype string, body io.Reader, size int64) ([]byte, error) {
	req, err := http.NewRequestWithContext(ctx, method, g.URL+path, body)
	if err != nil {
		return nil, err
	}
	if size >= 0 && body != nil {
		req.ContentLength = size
	}
	if ctype != "" {
		req.Header.Set("Content-Type", ctype)
	}
	tok, err := g.Token(ctx)
	if err != nil {
		return nil, err
	}
	if tok != "" {
		req.Header.Set("X-Auth-Token", tok)
	}
	resp, err := g.http.Do(req)
	if err != nil {
		return nil, fmt.Errorf("harness: glance %s %s: %w", method, path, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, fmt.Errorf("harness: glance %s %s: read body: %w", method, path, err)
	}
	if resp.StatusCode/100 != 2 {
		return nil, &HTTPError{Method: method, Path: path, Status: resp.StatusCode, Body: tail(string(b), 500)}
	}
	return b, nil
}

// HTTPError is a non-2xx answer from Glance.
type HTTPError struct {
	Method, Path string
	Status       int
	Body         string
}

func (e *HTTPError) Error() string {
	return fmt.Sprintf("harness: glance %s %s: HTTP %d: %s", e.Method, e.Path, e.Status, e.Body)
}

// Image is the part of a Glance image record the tests look at; Raw has all
// of it.
type Image struct {
	ID              string         `json:"id"`
	Name            *string        `json:"name"`
	Status          string         `json:"status"`
	Size            *int64         `json:"size"`
	DiskFormat      string         `json:"disk_format"`
	Checksum        string         `json:"checksum"`
	OSHashAlgo      string         `json:"os_hash_algo"`
	OSHashValue     string         `json:"os_hash_value"`
	VirtualSize     *int64         `json:"virtual_size"`
	Raw             map[string]any `json:"-"`
	ContainerFormat string         `json:"container_format"`
}

// CreateImage creates an image record (name may be empty: Glance allows a
// null-ish name) and uploads data; it returns the active image.
func (g *Glance) CreateImage(ctx context.Context, name, diskFormat string, data []byte) (Image, error) {
	id, err := g.CreateRecord(ctx, map[string]any{"name": name, "disk_format": diskFormat, "container_format": "bare"})
	if err != nil {
		return Image{}, err
	}
	if err := g.Upload(ctx, id, bytes.NewReader(data), int64(len(data))); err != nil {
		return Image{}, err
	}
	img, err := g.Image(ctx, id)
	if err != nil {
		return Image{}, err
	}
	if img.Status != "active" || img.Size == nil || *img.Size != int64(len(data)) {
		return img, fmt.Errorf("harness: image %s after upload: status %s size %v, want active %d", id, img.Status, img.Size, len(data))
	}
	return img, nil
}

// CreateRecord POSTs /v2/images and returns the new id.
func (g *Glance) CreateRecord(ctx context.Context, props map[string]any) (string, error) {
	js, err := json.Marshal(props)
	if err != nil {
		return "", err
	}
	b, err := g.do(ctx, http.MethodPost, "/v2/images", "application/json", bytes.NewReader(js), int64(len(js)))
	if err != nil {
		return "", err
	}
	var r struct {
		ID string `json:"id"`
	}
	if err := json.Unmarshal(b, &r); err != nil || r.ID == "" {
		return "", fmt.Errorf("harness: create image: bad answer %q: %v", tail(string(b), 300), err)
	}
	return r.ID, nil
}

// Upload PUTs the image data.
func (g *Glance) Upload(ctx context.Context, id string, r io.Reader, size int64) error {
	_, err := g.do(ctx, http.MethodPut, "/v2/images/"+id+"/file", "application/octet-stream", r, size)
	return err
}

// Image GETs one image record.
func (g *Glance) Image(ctx context.Context, id string) (Image, error) {
	b, err := g.do(ctx, http.MethodGet, "/v2/images/"+id, "", nil, -1)
	if err != nil {
		return Image{}, err
	}
	var img Image
	if err := json.Unmarshal(b, &img); err != nil {
		return Image{}, fmt.Errorf("harness: image %s: %w", id, err)
	}
	_ = json.Unmarshal(b, &img.Raw)
	return img, nil
}

// DeleteImage deletes an image.
func (g *Glance) DeleteImage(ctx context.Context, id string) error {
	_, err := g.do(ctx, http.MethodDelete, "/v2/images/"+id, "", nil, -1)
	return err
}

// Download GETs the whole image file.
func (g *Glance) Download(ctx context.Context, id string) ([]byte, error) {
	return g.do(ctx, http.MethodGet, "/v2/images/"+id+"/file", "", nil, -1)
}

func tail(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return "..." + s[len(s)-n:]
}
