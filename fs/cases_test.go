package fs

import (
	"bytes"
	"encoding/json"
	"errors"
	iofs "io/fs"
	"math/rand"
	"path"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"
)

// Image ids of the standard fixture.
const (
	idISO    = "aaaaaaaa-0000-4000-8000-000000000001"
	idQcow   = "bbbbbbbb-0000-4000-8000-000000000002"
	idDupA   = "cccccccc-0000-4000-8000-000000000003"
	idDupB   = "dddddddd-0000-4000-8000-000000000004"
	idSlash  = "eeeeeeee-0000-4000-8000-000000000005"
	idDots   = "ffffffff-0000-4000-8000-000000000006"
	idEmpty  = "11110000-0000-4000-8000-000000000007"
	idCtl    = "22220000-0000-4000-8000-000000000008"
	idLong   = "33330000-0000-4000-8000-000000000009"
	idQueued = "44440000-0000-4000-8000-00000000000a"
	idZero   = "55550000-0000-4000-8000-00000000000b"
)

// fixture fills d with the images every suite case starts from.
func fixture(d *fakeDomain) {
	d.add(Image{ID: idISO, Name: "ubuntu.iso", DiskFormat: "iso", VirtualSize: 3<<20 + 12345,
		OSHashAlgo: "sha512", OSHashValue: strings.Repeat("ab", 64),
		Meta: []byte(`{"id":"` + idISO + `","name":"ubuntu.iso","glancegw":{"format":"iso"}}`)}, 3<<20+12345, 1)
	d.add(Image{ID: idQcow, Name: "cirros", DiskFormat: "qcow2", VirtualSize: 1 << 30}, 1<<20, 2)
	d.add(Image{ID: idDupA, Name: "dup", DiskFormat: "raw"}, 1000, 3)
	d.add(Image{ID: idDupB, Name: "dup", DiskFormat: "raw"}, 2000, 4)
	d.add(Image{ID: idSlash, Name: "a/b", DiskFormat: "raw"}, 10, 5)
	d.add(Image{ID: idDots, Name: "..", DiskFormat: "raw"}, 11, 6)
	d.add(Image{ID: idEmpty, Name: "", DiskFormat: "raw"}, 12, 7)
	d.add(Image{ID: idCtl, Name: "ctl\x01\n", DiskFormat: "vmdk"}, 13, 8)
	d.add(Image{ID: idLong, Name: strings.Repeat("L", 300), DiskFormat: "raw"}, 14, 9)
	d.add(Image{ID: idQueued, Name: "queued", Status: "queued", DiskFormat: "raw"}, 15, 10)
	d.add(Image{ID: idZero, Name: "empty-image", DiskFormat: "raw"}, 0, 11)
}

// runSuite runs every case against filesystems made by mk.
func runSuite(t *testing.T, mk func(t *testing.T, d *fakeDomain) suiteFS) {
	cases := []struct {
		name string
		fn   func(t *testing.T, d *fakeDomain, f suiteFS)
	}{
		{"Layout", caseLayout},
		{"Names", caseNames},
		{"Content", caseContent},
		{"Attrs", caseAttrs},
		{"Xattrs", caseXattrs},
		{"Meta", caseMeta},
		{"ReadOnly", caseReadOnly},
		{"NewImageOnMiss", caseNewImageOnMiss},
		{"RemovedImageVanishes", caseRemoved},
		{"FailingReadEIO", caseFailingRead},
		{"NotFoundENOENT", caseNotFound},
		{"MetadataFollowsEdits", caseMetadataFollowsEdits},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			d := newFakeDomain()
			fixture(d)
			c.fn(t, d, mk(t, d))
		})
	}
}

func TestBare(t *testing.T) { runSuite(t, newBare) }

func sdDir(d *fakeDomain) string  { return d.info.UUID }
func isoDir(d *fakeDomain) string { return path.Join(d.info.UUID, "images", isoImagesUUID) }

func mustList(t *testing.T, f suiteFS, dir string) []string {
	t.Helper()
	names, err := f.readDir(dir)
	if err != nil {
		t.Fatalf("readdir %q: %v", dir, err)
	}
	return names
}

func caseLayout(t *testing.T, d *fakeDomain, f suiteFS) {
	if got, want := mustList(t, f, ""), []string{sdDir(d), "by-id", "by-name", "meta"}; !sameSet(got, want) {
		t.Errorf("root = %q, want %q", got, want)
	}
	if got, want := mustList(t, f, sdDir(d)), []string{"dom_md", "images"}; !sameSet(got, want) {
		t.Errorf("sd dir = %q, want %q", got, want)
	}
	if got, want := mustList(t, f, path.Join(sdDir(d), "images")), []string{isoImagesUUID}; !sameSet(got, want) {
		t.Errorf("images = %q, want %q", got, want)
	}
	md, err := f.readFile(path.Join(sdDir(d), "dom_md", "metadata"))
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range []string{"SDUUID=" + d.info.UUID, "TYPE=GLANCE", "DESCRIPTION=fake domain",
		"URL=http://glance.example:9292", "CLASS=Iso", "VERSION=0"} {
		if !slices.Contains(strings.Split(string(md), "\n"), line) {
			t.Errorf("metadata lacks %q:\n%s", line, md)
		}
	}
	byID := mustList(t, f, "by-id")
	if len(byID) != 10 || slices.Contains(byID, idQueued) {
		t.Errorf("by-id = %q: want the 10 active images only", byID)
	}
	if _, err := f.stat("by-id/" + idQueued); !errors.Is(err, iofs.ErrNotExist) {
		t.Errorf("queued image by id: err = %v, want ENOENT", err)
	}
	for _, dir := range []string{"by-name", "meta", isoDir(d)} {
		if n := len(mustList(t, f, dir)); n != 10 {
			t.Errorf("%s has %d entries, want 10", dir, n)
		}
	}
}

func caseNames(t *testing.T, d *fakeDomain, f suiteFS) {
	wantISO := []string{"ubuntu.iso", "cirros.qcow2", "cccccccc-dup.raw", "dddddddd-dup.raw",
		"a%2Fb.raw", idDots + ".raw", idEmpty + ".raw", "ctl%01%0A.vmdk",
		strings.Repeat("L", 251) + ".raw", "empty-image.raw"}
	if got := mustList(t, f, isoDir(d)); !sameSet(got, wantISO) {
		t.Errorf("ISO view = %q\nwant %q", got, wantISO)
	}
	wantLinks := map[string]string{
		"ubuntu.iso": idISO, "cirros": idQcow, "cccccccc-dup": idDupA, "dddddddd-dup": idDupB,
		"a%2Fb": idSlash, idDots: idDots, idEmpty: idEmpty, "ctl%01%0A": idCtl,
		strings.Repeat("L", 255): idLong, "empty-image": idZero,
	}
	if got := mustList(t, f, "by-name"); !sameSet(got, keys(wantLinks)) {
		t.Errorf("by-name = %q\nwant %q", got, keys(wantLinks))
	}
	for name, id := range wantLinks {
		target, err := f.readlink("by-name/" + name)
		if err != nil || target != "../by-id/"+id {
			t.Errorf("readlink by-name/%s = %q, %v; want ../by-id/%s", name, target, err, id)
			continue
		}
		got, err := f.readFile("by-name/" + name)
		if err != nil || !bytes.Equal(got, d.bytes(id)) {
			t.Errorf("by-name/%s does not resolve to the image bytes (err %v)", name, err)
		}
	}
}

func caseContent(t *testing.T, d *fakeDomain, f suiteFS) {
	for _, p := range []string{"by-id/" + idISO, isoDir(d) + "/ubuntu.iso", "by-id/" + idZero, "by-id/" + idDupB} {
		id := path.Base(p)
		if strings.HasSuffix(p, ".iso") {
			id = idISO
		}
		got, err := f.readFile(p)
		if err != nil {
			t.Fatalf("read %s: %v", p, err)
		}
		if !bytes.Equal(got, d.bytes(id)) {
			t.Errorf("%s: %d bytes differ from the image's %d", p, len(got), len(d.bytes(id)))
		}
	}
	want := d.bytes(idISO)
	rng := rand.New(rand.NewSource(42))
	for i := 0; i < 50; i++ {
		off := rng.Int63n(int64(len(want)))
		n := 1 + rng.Intn(300000)
		p := make([]byte, n)
		k, err := f.readAt("by-id/"+idISO, p, off)
		end := min(off+int64(n), int64(len(want)))
		if k != int(end-off) || !bytes.Equal(p[:k], want[off:end]) {
			t.Fatalf("readAt(%d, %d) = %d, %v: wrong bytes", off, n, k, err)
		}
		if end < off+int64(n) && err == nil {
			t.Fatalf("readAt(%d, %d) past the end: no error", off, n)
		}
	}
	if k, err := f.readAt("by-id/"+idISO, make([]byte, 10), int64(len(want))+5); k != 0 || err == nil {
		t.Errorf("read past EOF = %d, %v; want 0 and EOF", k, err)
	}
}

func caseAttrs(t *testing.T, d *fakeDomain, f suiteFS) {
	a, err := f.stat("by-id/" + idISO)
	if err != nil {
		t.Fatal(err)
	}
	iso, err := f.stat(isoDir(d) + "/ubuntu.iso")
	if err != nil {
		t.Fatal(err)
	}
	wantTime := time.Date(2024, 5, 6, 7, 8, 9, 0, time.UTC)
	if a.mode != 0o444 || a.size != 3<<20+12345 || !a.mtime.Equal(wantTime) {
		t.Errorf("by-id attrs = %+v, want mode 0444, size %d, mtime %v", a, 3<<20+12345, wantTime)
	}
	if a.ino != iso.ino || a.ino != inoOf("image", imageKey(&Image{ID: idISO, Size: 3<<20 + 12345,
		Checksum: "00000000000000000000000000000001", OSHashValue: strings.Repeat("ab", 64)})) {
		t.Errorf("inode numbers: by-id %d, ISO %d: want both derived from the image", a.ino, iso.ino)
	}
	if a.nlink != 2 {
		t.Errorf("nlink = %d, want 2", a.nlink)
	}
	for _, dir := range []string{"", "by-id", isoDir(d)} {
		da, err := f.stat(dir)
		if err != nil || da.mode != iofs.ModeDir|0o555 {
			t.Errorf("stat %q = %+v, %v; want a 0555 directory", dir, da, err)
		}
	}
	la, err := f.lstat("by-name/cirros")
	if err != nil || la.mode&iofs.ModeSymlink == 0 {
		t.Errorf("lstat by-name/cirros = %+v, %v; want a symlink", la, err)
	}
	md, err := f.stat(path.Join(sdDir(d), "dom_md", "metadata"))
	if err != nil || md.mode != 0o444 || md.size == 0 {
		t.Errorf("stat metadata = %+v, %v", md, err)
	}
}

func caseXattrs(t *testing.T, d *fakeDomain, f suiteFS) {
	for _, p := range []string{"by-id/" + idISO, isoDir(d) + "/ubuntu.iso"} {
		want := map[string]string{
			"user.glance.id":            idISO,
			"user.glance.disk_format":   "iso",
			"user.glance.checksum":      "00000000000000000000000000000001",
			"user.glance.os_hash_algo":  "sha512",
			"user.glance.os_hash_value": strings.Repeat("ab", 64),
			"user.glance.virtual_size":  "3158073",
		}
		names, err := f.listxattr(p)
		if err != nil || !sameSet(names, keys(want)) {
			t.Errorf("listxattr %s = %q, %v; want %q", p, names, err, keys(want))
		}
		for k, v := range want {
			got, err := f.getxattr(p, k)
			if err != nil || string(got) != v {
				t.Errorf("getxattr %s %s = %q, %v; want %q", p, k, got, err, v)
			}
		}
		if _, err := f.getxattr(p, "user.glance.nope"); !errors.Is(err, syscall.ENODATA) {
			t.Errorf("unknown xattr: err = %v, want ENODATA", err)
		}
	}
	// An image without a known virtual size and hash lists fewer attributes.
	names, err := f.listxattr("by-id/" + idDupA)
	if err != nil || slices.Contains(names, "user.glance.virtual_size") || slices.Contains(names, "user.glance.os_hash_algo") {
		t.Errorf("listxattr of sparse image = %q, %v", names, err)
	}
}

func caseMeta(t *testing.T, d *fakeDomain, f suiteFS) {
	got, err := f.readFile("meta/" + idISO + ".json")
	if err != nil {
		t.Fatal(err)
	}
	if !json.Valid(got) || !bytes.Contains(got, []byte(`"glancegw":{"format":"iso"}`)) {
		t.Errorf("meta of %s = %s: want Image.Meta", idISO, got)
	}
	// Without Meta the tree writes the fields it knows.
	got, err = f.readFile("meta/" + idQcow + ".json")
	var doc struct {
		ID          string `json:"id"`
		VirtualSize int64  `json:"virtual_size"`
	}
	if err != nil || json.Unmarshal(got, &doc) != nil || doc.ID != idQcow || doc.VirtualSize != 1<<30 {
		t.Errorf("generated meta = %s, %v", got, err)
	}
}

func caseReadOnly(t *testing.T, d *fakeDomain, f suiteFS) {
	for _, p := range []string{"by-id/" + idISO, path.Join(sdDir(d), "dom_md", "metadata")} {
		if err := f.openWrite(p); !errors.Is(err, syscall.EROFS) && !errors.Is(err, syscall.EACCES) {
			t.Errorf("open %s for writing: err = %v, want EROFS", p, err)
		}
	}
}

func caseNewImageOnMiss(t *testing.T, d *fakeDomain, f suiteFS) {
	mustList(t, f, "by-id") // the listing is fresh now
	img := d.add(Image{ID: "99990000-0000-4000-8000-0000000000ff", Name: "fresh", DiskFormat: "raw"}, 4096, 99)
	// No waiting for the TTL: the miss itself lists again.
	got, err := f.readFile("by-id/" + img.ID)
	if err != nil || !bytes.Equal(got, d.bytes(img.ID)) {
		t.Fatalf("new image on first lookup: %v", err)
	}
	if _, err := f.stat(isoDir(d) + "/fresh.raw"); err != nil {
		t.Errorf("new image in the ISO view: %v", err)
	}
	if _, err := f.stat("by-id/no-such-image"); !errors.Is(err, iofs.ErrNotExist) {
		t.Errorf("unknown image: err = %v, want ENOENT", err)
	}
}

func caseRemoved(t *testing.T, d *fakeDomain, f suiteFS) {
	if _, err := f.stat("by-id/" + idQcow); err != nil {
		t.Fatal(err)
	}
	d.remove(idQcow)
	cfg := suiteConfig()
	within := cfg.RefreshTTL + cfg.EntryTimeout + time.Second
	eventually(t, within, "removed image leaves by-id listing", func() bool {
		return !slices.Contains(mustList(t, f, "by-id"), idQcow)
	})
	eventually(t, within, "removed image gives ENOENT", func() bool {
		_, err := f.stat("by-id/" + idQcow)
		_, err2 := f.lstat("by-name/cirros")
		return errors.Is(err, iofs.ErrNotExist) && errors.Is(err2, iofs.ErrNotExist)
	})
	if slices.Contains(mustList(t, f, isoDir(d)), "cirros.qcow2") {
		t.Errorf("removed image still in the ISO view")
	}
}

func caseFailingRead(t *testing.T, d *fakeDomain, f suiteFS) {
	img := Image{ID: "77770000-0000-4000-8000-0000000000ee", Name: "broken", DiskFormat: "raw"}
	d.mu.Lock()
	d.readErr[img.ID] = errors.New("glance: read: 503 after 3 tries")
	d.mu.Unlock()
	d.add(img, 1<<20, 77)
	start := time.Now()
	_, err := f.readFile("by-id/" + img.ID)
	if !errors.Is(err, syscall.EIO) {
		t.Errorf("read of failing source: err = %v, want EIO", err)
	}
	if el := time.Since(start); el > 3*time.Second {
		t.Errorf("failing read took %v", el)
	}
}

func caseNotFound(t *testing.T, d *fakeDomain, f suiteFS) {
	// Listed, but Glance says it is gone when we open it.
	d.mu.Lock()
	d.openErr[idDupA] = goneError{"image " + idDupA}
	d.readErr[idDupB] = goneError{"image " + idDupB}
	d.mu.Unlock()
	if _, err := f.readFile("by-id/" + idDupA); !errors.Is(err, syscall.ENOENT) {
		t.Errorf("open of a gone image: err = %v, want ENOENT", err)
	}
	if _, err := f.readFile("by-id/" + idDupB); !errors.Is(err, syscall.ENOENT) {
		t.Errorf("read of a gone image: err = %v, want ENOENT", err)
	}
}

func sameSet(a, b []string) bool {
	a, b = slices.Clone(a), slices.Clone(b)
	slices.Sort(a)
	slices.Sort(b)
	return slices.Equal(a, b)
}

func keys(m map[string]string) []string {
	var ks []string
	for k := range m {
		ks = append(ks, k)
	}
	return ks
}

// dom_md/metadata shows the domain as it is now: a rename or a new URL
// shows without a remount and without waiting for a listing.
func caseMetadataFollowsEdits(t *testing.T, d *fakeDomain, f suiteFS) {
	md := path.Join(sdDir(d), "dom_md", "metadata")
	old, err := f.readFile(md)
	if err != nil || !strings.Contains(string(old), "URL=http://glance.example:9292\n") {
		t.Fatalf("metadata before the edit: %q, %v", old, err)
	}
	info := d.Info()
	info.Name, info.Description, info.URL = "renamed", "renamed", "http://glance2.example:9292"
	d.setInfo(info)
	want := []string{"NAME=renamed", "DESCRIPTION=renamed", "URL=http://glance2.example:9292", "SDUUID=" + info.UUID}
	var got []byte
	eventually(t, 5*time.Second, "metadata shows the edit", func() bool {
		got, err = f.readFile(md)
		if err != nil {
			return false
		}
		lines := strings.Split(string(got), "\n")
		for _, w := range want {
			if !slices.Contains(lines, w) {
				return false
			}
		}
		return true
	})
	if a, err := f.stat(md); err != nil || a.size != int64(len(got)) {
		t.Errorf("stat after the edit: %+v, %v; want size %d", a, err, len(got))
	}
	if names := mustList(t, f, path.Join(sdDir(d), "dom_md")); !sameSet(names, []string{"metadata"}) {
		t.Errorf("dom_md = %q", names)
	}
}
