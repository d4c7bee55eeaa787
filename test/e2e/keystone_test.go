package e2e

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/glancegw/glancegw/test/harness"
)

// TestKeystoneTokenExpiry: a keystone domain keeps reading after its token
// expired (60 s lifetime): the read at t > 65 s fetches an image never read
// before, so it must reach Glance with a fresh token.
func TestKeystoneTokenExpiry(t *testing.T) {
	t.Parallel()
	requireTools(t, "/dev/fuse", "fusermount3")
	requireBinary(t)
	ctx := context.Background()
	// A password of this run only, so finding it in any process's argv
	// means glancegw leaked it (other tests' keystones use the default).
	password := "pw-" + uuidString()
	g := startGlance(t, harness.GlanceConfig{Mode: "keystone", Port: keystoneGlancePort,
		KeystonePort: keystonePort, TokenExpiration: tokenLifetime, AdminPassword: password})
	a, b := harness.RandomBytes(21, 8<<20+5), harness.RandomBytes(22, 8<<20+7)
	imgA, err := g.CreateImage(ctx, "ks-a.raw", "raw", a)
	if err != nil {
		t.Fatal(err)
	}
	imgB, err := g.CreateImage(ctx, "ks-b.raw", "raw", b)
	if err != nil {
		t.Fatal(err)
	}

	dir := newDir(t, "ks")
	pw := filepath.Join(dir, "password")
	if err := os.WriteFile(pw, []byte(password+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	d := startDaemon(t, dir)
	_, mp := addAndMount(t, d, "ks", g.URL, "--auth", "keystone", "--auth-url", g.KeystoneURL+"/v3",
		"--username", harness.KeystoneAdminUser, "--password-file", pw, "--project", harness.KeystoneAdminProject,
		"--user-domain", harness.KeystoneDomain, "--project-domain", harness.KeystoneDomain)
	// The daemon's first token is at least as old as this.
	t0 := time.Now()
	if got, err := os.ReadFile(filepath.Join(mp, "by-id", imgA.ID)); err != nil || !bytes.Equal(got, a) {
		t.Fatalf("read A at t=0: err %v identical=%v", err, bytes.Equal(got, a))
	}

	// While the token ages: the password must not leak.
	checkSecrets(t, d, "ks", password)

	wait := time.Until(t0.Add(tokenLifetime + 6*time.Second))
	t.Logf("waiting %v for the daemon's token to expire", wait.Round(time.Second))
	time.Sleep(wait)

	start := time.Now()
	got, err := os.ReadFile(filepath.Join(mp, "by-id", imgB.ID))
	if err != nil || !bytes.Equal(got, b) {
		t.Fatalf("read B at t=%v (token expired): err %v identical=%v", time.Since(t0).Round(time.Second), err, bytes.Equal(got, b))
	}
	t.Logf("read of B after token expiry: %v", time.Since(start).Round(time.Millisecond))
	list, err := jsonList(mustCLI(t, d, "image", "list", "ks", "--json", "--refresh"))
	if err != nil {
		t.Fatal(err)
	}
	if m := ids(list, "id"); m[imgA.ID] == nil || m[imgB.ID] == nil {
		t.Fatalf("image list after token expiry lacks A or B: %v", list)
	}
	checkSecrets(t, d, "ks", password)
}
