package hostd

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// dom_md/metadata of a mounted domain follows domain edit, without a
// remount.
func TestMountedMetadataFollowsEdit(t *testing.T) {
	needFUSE(t)
	e := newTestEnv(t)
	e.net.glance("http://g1").add("img-1", "a.iso", "active", []byte("bytes"))
	r := e.start()
	if _, err := r.c.AddDomain(ctx, DomainSpec{Name: "iso", URL: "http://g1", UUID: uuidA}); err != nil {
		t.Fatal(err)
	}
	m, err := r.c.Mount(ctx, "iso", "")
	if err != nil {
		t.Fatal(err)
	}
	md := filepath.Join(m.Mountpoint, uuidA, "dom_md", "metadata")
	if b, err := os.ReadFile(md); err != nil || !strings.Contains(string(b), "NAME=iso\n") {
		t.Fatalf("metadata before the edit: %q, %v", b, err)
	}
	name, url := "iso-new", "http://g2:9292"
	if _, err := r.c.EditDomain(ctx, "iso", DomainPatch{Name: &name, URL: &url}); err != nil {
		t.Fatal(err)
	}
	var got string
	for i := 0; i < 100; i++ { // the kernel keeps the old entry up to 1 s
		b, err := os.ReadFile(md)
		if got = string(b); err == nil && strings.Contains(got, "NAME=iso-new\n") && strings.Contains(got, "URL=http://g2:9292\n") {
			return
		}
		sleep(50)
	}
	t.Fatalf("metadata after the edit:\n%s", got)
}
