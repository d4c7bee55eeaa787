package e2e

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/glancegw/glancegw/test/harness"
)

// TestDaemonLifecycle: a new image appears on lookup; a token domain keeps
// its token secret; SIGTERM unmounts and exits 0; the next start restores
// the mount; after kill -9 the next start cleans the dead mount and
// restores it (no "transport endpoint is not connected").
func TestDaemonLifecycle(t *testing.T) {
	t.Parallel()
	requireTools(t, "/dev/fuse", "fusermount3")
	requireBinary(t)
	ctx := context.Background()
	g := noauthGlance(t)
	base := harness.RandomBytes(31, 5<<20+1)
	baseImg, err := g.CreateImage(ctx, "life-base.raw", "raw", base)
	if err != nil {
		t.Fatal(err)
	}
	dir := newDir(t, "life")
	d := startDaemon(t, dir) // default --refresh (30 s): only a lookup can show a new image
	_, mp := addAndMount(t, d, "life", g.URL)
	readBase := func(t *testing.T) {
		t.Helper()
		got, err := os.ReadFile(filepath.Join(mp, "by-id", baseImg.ID))
		if err != nil || !bytes.Equal(got, base) {
			t.Fatalf("read through the mount: err %v identical=%v", err, bytes.Equal(got, base))
		}
	}
	readBase(t)

	t.Run("second-daemon-same-state-dir", func(t *testing.T) {
		// Its own sockets, the first daemon's state directory: refused
		// before it mounts anything over the first daemon's mounts.
		_, _, stateDir, mountRoot, _, _ := harness.DaemonPaths(dir)
		other := t.TempDir()
		r := harness.RunCLI(ctx, 30*time.Second, env.bin, nil, "--socket", filepath.Join(other, "api.sock"), "serve",
			"--state-dir", stateDir, "--mount-root", mountRoot, "--repo-root", filepath.Join(other, "repo"),
			"--nbd-socket", filepath.Join(other, "nbd.sock"))
		if r.Code != 5 || !strings.Contains(r.Stderr, "in use by another daemon (pid ") {
			t.Fatalf("second serve on the same state dir: want exit 5 naming the holder\n%s", r)
		}
		readBase(t)
		mustCLI(t, d, "status")
	})

	t.Run("new-image-on-lookup", func(t *testing.T) {
		// Lookup-miss refreshes are rate-limited (2 s by default); the
		// mount's own listing must not count against this lookup.
		time.Sleep(2500 * time.Millisecond)
		data := []byte("fresh image\n")
		img, err := g.CreateImage(ctx, "life-new.raw", "raw", data)
		if err != nil {
			t.Fatal(err)
		}
		// The first lookup normally finds it; on a loaded machine a listing
		// may still be within the rate limit, so the bound is one interval.
		p := filepath.Join(mp, "by-id", img.ID)
		start := time.Now()
		st, err := os.Stat(p)
		for err != nil && time.Since(start) < 3*time.Second {
			time.Sleep(200 * time.Millisecond)
			st, err = os.Stat(p)
		}
		if err != nil || st.Size() != int64(len(data)) {
			t.Fatalf("stat by-id/<new id> after upload (for %v): %v, %v", time.Since(start), st, err)
		}
		t.Logf("new image found by lookup %v after upload", time.Since(start).Round(time.Millisecond))
		if got, err := os.ReadFile(p); err != nil || !bytes.Equal(got, data) {
			t.Fatalf("read new image: %q, %v", got, err)
		}
	})

	t.Run("token-secret", func(t *testing.T) {
		token := "tok-" + uuidString()
		tf := filepath.Join(dir, "token")
		if err := os.WriteFile(tf, []byte(token), 0o600); err != nil {
			t.Fatal(err)
		}
		// noauth Glance ignores the token, so the domain works.
		mustCLI(t, d, "domain", "add", "tokdom", "--url", g.URL, "--auth", "token", "--token-file", tf)
		list, err := jsonList(mustCLI(t, d, "image", "list", "tokdom", "--json"))
		if err != nil || ids(list, "id")[baseImg.ID] == nil {
			t.Fatalf("image list of the token domain: %v, %d images", err, len(list))
		}
		checkSecrets(t, d, "tokdom", token)
		if out := mustCLI(t, d, "domain", "remove", "tokdom"); strings.TrimSpace(out) != "tokdom removed" {
			t.Errorf("domain remove said %q", out)
		}
		if r := cli(t, d, "domain", "show", "tokdom"); r.Code != 4 {
			t.Fatalf("show of a removed domain: want exit 4\n%s", r)
		}
	})

	t.Run("sigterm-unmounts", func(t *testing.T) {
		if err := d.Signal(syscall.SIGTERM); err != nil {
			t.Fatal(err)
		}
		code, err := d.Wait(30 * time.Second)
		if err != nil || code != 0 {
			t.Fatalf("daemon after SIGTERM: exit %d, %v; want a clean exit 0", code, err)
		}
		if _, ok, err := harness.MountedAt(mp); err != nil || ok {
			t.Fatalf("after SIGTERM %s is still in mountinfo (err %v)", mp, err)
		}
	})

	var d2 *harness.Daemon
	t.Run("restart-restores-mount", func(t *testing.T) {
		d2 = startDaemon(t, dir)
		waitMounted(t, mp)
		readBase(t)
	})
	if d2 == nil {
		t.FailNow()
	}

	t.Run("kill-9-then-start", func(t *testing.T) {
		if err := d2.Kill(); err != nil {
			t.Fatal(err)
		}
		_, err := os.Stat(filepath.Join(mp, "by-id"))
		t.Logf("after kill -9, stat in the dead mount: %v", err)
		d3 := startDaemon(t, dir)
		waitMounted(t, mp)
		readBase(t)
		if n := countMounts(t, mp); n != 1 {
			t.Fatalf("%d mounts stacked at %s, want 1", n, mp)
		}
		if err := d3.Signal(syscall.SIGTERM); err != nil {
			t.Fatal(err)
		}
		if code, err := d3.Wait(30 * time.Second); err != nil || code != 0 {
			t.Fatalf("exit after SIGTERM: %d, %v", code, err)
		}
		if n := countMounts(t, mp); n != 0 {
			t.Fatalf("%d mounts left at %s after SIGTERM", n, mp)
		}
	})
}

// waitMounted waits (bounded) until mp is mounted and answers, not with
// ENOTCONN.
func waitMounted(t *testing.T, mp string) {
	t.Helper()
	took, err := eventually(20*time.Second, 200*time.Millisecond, func() error {
		if _, ok, err := harness.MountedAt(mp); err != nil || !ok {
			return fmt.Errorf("%s not in mountinfo (%v)", mp, err)
		}
		_, err := os.ReadDir(filepath.Join(mp, "by-id"))
		if errors.Is(err, syscall.ENOTCONN) {
			return fmt.Errorf("%s: transport endpoint is not connected", mp)
		}
		return err
	})
	if err != nil {
		t.Fatalf("mount not restored: %v", err)
	}
	t.Logf("mount restored %v after the daemon answered", took.Round(time.Millisecond))
}

func countMounts(t *testing.T, mp string) int {
	t.Helper()
	ms, err := harness.Mounts()
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, m := range ms {
		if m.Point == mp {
			n++
		}
	}
	return n
}
