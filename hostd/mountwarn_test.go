package hostd

import (
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// Mounting a domain whose Glance does not answer keeps the mount (Glance
// may come back) but the answer warns with what failed.
func TestMountWarnsWhenFirstListingFails(t *testing.T) {
	needFUSE(t)
	e := newTestEnv(t)
	e.net.glance("http://up").add("img-1", "a.iso", "active", []byte("bytes"))
	r := e.start()
	for _, s := range []DomainSpec{{Name: "up", URL: "http://up"}, {Name: "down", URL: "http://down:9292"}} {
		if _, err := r.c.AddDomain(ctx, s); err != nil {
			t.Fatal(err)
		}
	}

	m, err := r.c.Mount(ctx, "down", "")
	if err != nil {
		t.Fatalf("mount of an unreachable domain: %v, want it mounted", err)
	}
	mp := filepath.Join(e.cfg.MountRoot, "down")
	if !m.Active || !fuseMounted(t, mp) {
		t.Fatalf("mount = %+v: not mounted", m)
	}
	for _, w := range []string{"domain down", "listing failed", "connection refused"} {
		if !strings.Contains(m.Warning, w) {
			t.Errorf("warning %q lacks %q", m.Warning, w)
		}
	}
	// Mounting it again where it is still warns: the listing still fails.
	if again, err := r.c.Mount(ctx, "down", mp); err != nil || again.Warning == "" {
		t.Errorf("mount again: %+v, %v; want the warning again", again, err)
	}
	// The warning belongs to the mount answer, not to the domain.
	if d, err := r.c.Domain(ctx, "down"); err != nil {
		t.Fatal(err)
	} else if raw := mustJSON(t, d); strings.Contains(raw, `"warning"`) {
		t.Errorf("domain show carries a warning: %s", raw)
	}

	ok, err := r.c.Mount(ctx, "up", "")
	if err != nil || ok.Warning != "" {
		t.Fatalf("mount of a reachable domain: %+v, %v; want no warning", ok, err)
	}
	if _, err := os.Stat(filepath.Join(ok.Mountpoint, "by-id", "img-1")); err != nil {
		t.Errorf("reachable domain's image: %v", err)
	}

	// Glance comes up: the kept mount serves it.
	e.net.glance("http://down:9292").add("img-2", "b.iso", "active", []byte("later"))
	var got []byte
	for i := 0; i < 100; i++ {
		if got, err = os.ReadFile(filepath.Join(mp, "by-id", "img-2")); err == nil {
			break
		}
		sleep(50)
	}
	if string(got) != "later" {
		t.Errorf("after Glance came up: %q, %v", got, err)
	}
	for _, name := range []string{"down", "up"} {
		if _, err := r.c.Unmount(ctx, name); err != nil && !errors.Is(err, ErrNotFound) {
			t.Error(err)
		}
	}
}

func mustJSON(t *testing.T, v any) string {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}
