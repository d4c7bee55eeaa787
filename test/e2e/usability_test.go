package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/glancegw/glancegw/test/harness"
)

// Ports of the keystone Glance of this file (clear of the other tests').
const (
	usabilityGlancePort   = 9398
	usabilityKeystonePort = 5398
)

// cliIn runs glancegw against d from working directory dir with extra
// environment, bounded at 2 minutes.
func cliIn(t *testing.T, d *harness.Daemon, dir string, extra []string, args ...string) harness.Result {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, env.bin, args...)
	cmd.Dir = dir
	cmd.Env = append(append(os.Environ(), "GLANCEGW_SOCKET="+d.Socket), extra...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	cmd.WaitDelay = 2 * time.Second
	err := cmd.Run()
	r := harness.Result{Args: args, Stdout: stdout.String(), Stderr: stderr.String(), Code: -1}
	var ee *exec.ExitError
	switch {
	case err == nil:
		r.Code = 0
	case errors.As(err, &ee) && ee.Exited():
		r.Code = ee.ExitCode()
	default:
		t.Fatalf("glancegw %s: %v", strings.Join(args, " "), err)
	}
	return r
}

// A domain whose Glance does not answer: mount succeeds with a warning, at
// a relative --mountpoint resolved in the caller's directory; the mount's
// dom_md/metadata follows domain edit; unmount removes the directories the
// daemon made.
func TestUsabilityMountUnreachable(t *testing.T) {
	t.Parallel()
	requireTools(t, "/dev/fuse", "fusermount3")
	requireBinary(t)
	dir := newDir(t, "us")
	d := startDaemon(t, dir)
	work := filepath.Join(dir, "work")
	if err := os.Mkdir(work, 0o755); err != nil {
		t.Fatal(err)
	}
	sd := uuidString()
	// Port 9 (discard) on loopback: nothing listens, the connection is refused.
	mustCLI(t, d, "domain", "add", "far", "--url", "http://127.0.0.1:9", "--uuid", sd)

	r := cliIn(t, d, work, nil, "mount", "far", "--mountpoint", "rel/far")
	mp := filepath.Join(work, "rel", "far")
	if r.Code != 0 {
		t.Fatalf("mount of an unreachable domain: want exit 0\n%s", r)
	}
	if !strings.Contains(r.Stdout, "far mounted at "+mp) {
		t.Errorf("stdout %q: want it mounted at %s (relative to the caller's directory)", r.Stdout, mp)
	}
	if !strings.HasPrefix(r.Stderr, "glancegw: warning: ") || !strings.Contains(r.Stderr, "connection refused") ||
		strings.Count(r.Stderr, "\n") != 1 {
		t.Errorf("stderr %q: want one warning line saying the connection was refused", r.Stderr)
	}
	if _, ok, err := harness.MountedAt(mp); err != nil || !ok {
		t.Fatalf("%s is not mounted (err %v)", mp, err)
	}
	r = cliIn(t, d, work, nil, "mount", "far", "--json")
	var ans struct{ Warning string }
	if r.Code != 0 || json.Unmarshal([]byte(r.Stdout), &ans) != nil || !strings.Contains(ans.Warning, "connection refused") {
		t.Errorf("mount --json again: want exit 0 and a warning field\n%s", r)
	}

	md := filepath.Join(mp, sd, "dom_md", "metadata")
	if b, err := os.ReadFile(md); err != nil || !strings.Contains(string(b), "URL=http://127.0.0.1:9\n") {
		t.Fatalf("metadata: %q, %v", b, err)
	}
	mustCLI(t, d, "domain", "edit", "far", "--name", "far2", "--url", "http://127.0.0.1:10")
	var got []byte
	if _, err := eventually(5*time.Second, 100*time.Millisecond, func() error {
		var err error
		got, err = os.ReadFile(md)
		if err == nil && (!bytes.Contains(got, []byte("NAME=far2\n")) || !bytes.Contains(got, []byte("URL=http://127.0.0.1:10\n"))) {
			err = errors.New("old values")
		}
		return err
	}); err != nil {
		t.Errorf("metadata after domain edit (%v):\n%s", err, got)
	}

	mustCLI(t, d, "unmount", "far2")
	if _, ok, err := harness.MountedAt(mp); err != nil || ok {
		t.Fatalf("%s still mounted after unmount (err %v)", mp, err)
	}
	for _, p := range []string{mp, filepath.Dir(mp)} {
		if _, err := os.Lstat(p); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("%s left after unmount (%v); the daemon made it", p, err)
		}
	}
	if _, err := os.Stat(work); err != nil {
		t.Errorf("the caller's own directory: %v", err)
	}
}

// Credentials Keystone refuses are exit 7 with a message that names the
// domain and the fix, not exit 6; a password from the environment alone
// fixes them.
func TestUsabilityCredentials(t *testing.T) {
	t.Parallel()
	requireBinary(t)
	ctx := context.Background()
	password := "pw-" + uuidString()
	g := startGlance(t, harness.GlanceConfig{Mode: "keystone", Port: usabilityGlancePort,
		KeystonePort: usabilityKeystonePort, AdminPassword: password})
	dir := newDir(t, "usk")
	wrong := filepath.Join(dir, "wrong")
	if err := os.WriteFile(wrong, []byte("not-the-password\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	d := startDaemon(t, dir)
	mustCLI(t, d, "domain", "add", "ks", "--url", g.URL, "--auth-url", g.KeystoneURL+"/v3",
		"--username", harness.KeystoneAdminUser, "--password-file", wrong, "--project", harness.KeystoneAdminProject,
		"--user-domain", harness.KeystoneDomain, "--project-domain", harness.KeystoneDomain)
	mustCLI(t, d, "domain", "add", "down", "--url", "http://127.0.0.1:9")

	r := cli(t, d, "image", "list", "ks")
	t.Logf("image list with a wrong password: %s", r.Stderr)
	if r.Code != 7 {
		t.Fatalf("image list with a wrong password: want exit 7\n%s", r)
	}
	for _, w := range []string{"domain ks", "glancegw domain edit ks --password-file"} {
		if !strings.Contains(r.Stderr, w) {
			t.Errorf("stderr lacks %q: %s", w, r.Stderr)
		}
	}
	if strings.Count(r.Stderr, "\n") != 1 {
		t.Errorf("stderr is not one line: %q", r.Stderr)
	}
	if r := cli(t, d, "image", "list", "down"); r.Code != 6 {
		t.Errorf("image list of an unreachable Glance: want exit 6\n%s", r)
	}

	// The right password from the environment, no flag.
	if r := cliIn(t, d, dir, []string{"GLANCEGW_PASSWORD=" + password}, "domain", "edit", "ks"); r.Code != 0 {
		t.Fatalf("domain edit with GLANCEGW_PASSWORD alone: want exit 0\n%s", r)
	}
	img, err := g.CreateImage(ctx, "us.raw", "raw", harness.RandomBytes(31, 4096))
	if err != nil {
		t.Fatal(err)
	}
	list, err := jsonList(mustCLI(t, d, "image", "list", "ks", "--json", "--refresh"))
	if err != nil || ids(list, "id")[img.ID] == nil {
		t.Fatalf("image list after the fix: %v, %v", list, err)
	}
	checkSecrets(t, d, "ks", password)
}

// An admin's `umount -l` of a mounted domain is noticed: the daemon log
// warns with the domain and the mountpoint, `status` lists the mount as
// lost, not mounted, and `glancegw mount` mounts it again for real (a file
// reads through it), also after an `umount -l` with a file open in the
// tree. `unmount` of a lost domain succeeds; a domain lost while recorded
// mounted is mounted again by the next start.
func TestUsabilityMountLost(t *testing.T) {
	t.Parallel()
	requireTools(t, "/dev/fuse", "fusermount3", "umount")
	requireBinary(t)
	ctx := context.Background()
	g := noauthGlance(t)
	data := harness.RandomBytes(43, 1<<20+17)
	img, err := g.CreateImage(ctx, "lost.raw", "raw", data)
	if err != nil {
		t.Fatal(err)
	}
	dir := newDir(t, "ul")
	d := startDaemon(t, dir)
	_, mp := addAndMount(t, d, "lab", g.URL)
	file := filepath.Join(mp, "by-id", img.ID)
	read := func(t *testing.T) {
		t.Helper()
		got, err := os.ReadFile(file)
		if err != nil || !bytes.Equal(got, data) {
			t.Fatalf("read through the mount: %d bytes, err %v, identical=%v", len(got), err, bytes.Equal(got, data))
		}
	}
	umountL := func(t *testing.T) {
		t.Helper()
		mustTool(t, "umount", "-l", mp)
		if _, ok, err := harness.MountedAt(mp); err != nil || ok {
			t.Fatalf("%s still in mountinfo after umount -l (err %v)", mp, err)
		}
	}
	// statusLines returns the lines of `glancegw status` that start with key.
	statusLines := func(t *testing.T, key string) []string {
		t.Helper()
		var out []string
		for _, l := range strings.Split(mustCLI(t, d, "status"), "\n") {
			if strings.HasPrefix(l, key+":") {
				out = append(out, l)
			}
		}
		return out
	}
	waitLost := func(t *testing.T) {
		t.Helper()
		if _, err := eventually(10*time.Second, 100*time.Millisecond, func() error {
			if m := statusLines(t, "mount"); len(m) != 0 {
				return fmt.Errorf("status still shows %q", m)
			}
			if l := statusLines(t, "lost mount"); len(l) != 1 || !strings.Contains(l[0], "lab at "+mp) ||
				!strings.Contains(l[0], "glancegw mount lab") {
				return fmt.Errorf("status shows lost mounts %q, want lab at %s and how to mount it again", l, mp)
			}
			return nil
		}); err != nil {
			t.Fatalf("after umount -l: %v", err)
		}
		var st struct {
			Mounts     []map[string]any `json:"mounts"`
			LostMounts []map[string]any `json:"lost_mounts"`
		}
		if err := json.Unmarshal([]byte(mustCLI(t, d, "status", "--json")), &st); err != nil ||
			len(st.Mounts) != 0 || len(st.LostMounts) != 1 || st.LostMounts[0]["mountpoint"] != mp {
			t.Errorf("status --json: mounts %v, lost_mounts %v, %v", st.Mounts, st.LostMounts, err)
		}
		var dom struct {
			Mounted bool   `json:"mounted"`
			Active  bool   `json:"active"`
			Lost    string `json:"lost"`
		}
		if err := json.Unmarshal([]byte(mustCLI(t, d, "domain", "show", "lab", "--json")), &dom); err != nil ||
			!dom.Mounted || dom.Active || dom.Lost == "" {
			t.Errorf("domain show --json: %+v, %v; want mounted (the wish), not active, lost", dom, err)
		}
	}
	mountAgain := func(t *testing.T) {
		t.Helper()
		r := cli(t, d, "mount", "lab")
		if r.Code != 0 || !strings.Contains(r.Stdout, "lab mounted at "+mp) {
			t.Fatalf("mount of a lost domain: want exit 0\n%s", r)
		}
		if _, ok, err := harness.MountedAt(mp); err != nil || !ok {
			t.Fatalf("`glancegw mount` said %q but %s is not mounted (err %v)", strings.TrimSpace(r.Stdout), mp, err)
		}
		read(t)
		if m := statusLines(t, "mount"); len(m) != 1 || !strings.Contains(m[0], "lab at "+mp) {
			t.Errorf("status after mounting again: %q", m)
		}
		if l := statusLines(t, "lost mount"); len(l) != 0 {
			t.Errorf("status still shows lost mounts %q", l)
		}
	}
	read(t)
	top := t

	t.Run("umount-l", func(t *testing.T) {
		umountL(t)
		waitLost(t)
		var warned bool
		for _, l := range strings.Split(d.Log(), "\n") {
			warned = warned || strings.Contains(l, "WARN") && strings.Contains(l, "mount lost") &&
				strings.Contains(l, "domain=lab") && strings.Contains(l, "mountpoint="+mp)
		}
		if !warned {
			t.Errorf("no warning naming domain lab and %s in the daemon log:\n%s", mp, tailString(d.Log(), 3000))
		}
		mountAgain(t)
	})

	t.Run("umount-l-with-a-file-open", func(t *testing.T) {
		f, err := os.Open(file)
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		umountL(t)
		waitLost(t)
		mountAgain(t)
		buf := make([]byte, 4096)
		if _, err := f.ReadAt(buf, 0); err != nil || !bytes.Equal(buf, data[:4096]) {
			t.Errorf("the file open in the detached tree: %v", err)
		}
	})

	t.Run("restart-mounts-a-lost-domain", func(t *testing.T) {
		umountL(t)
		waitLost(t)
		if _, err := d.Stop(30 * time.Second); err != nil {
			t.Fatal(err)
		}
		d = startDaemon(top, dir) // stopped when the whole test ends
		waitMounted(t, mp)
		read(t)
	})

	t.Run("unmount-a-lost-domain", func(t *testing.T) {
		umountL(t)
		waitLost(t)
		if r := cli(t, d, "unmount", "lab"); r.Code != 0 {
			t.Fatalf("unmount of a lost domain: want exit 0\n%s", r)
		}
		if m := statusLines(t, "lost mount"); len(m) != 0 {
			t.Errorf("status after unmount: %q", m)
		}
		if _, err := os.Lstat(mp); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("%s left after unmount (%v); the daemon made it", mp, err)
		}
	})
}
