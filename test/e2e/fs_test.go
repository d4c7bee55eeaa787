package e2e

import (
	"bytes"
	"context"
	"crypto/sha512"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/glancegw/glancegw/test/harness"
)

// TestMountReads: every fixture reads byte-identical through by-id, the ISO
// view and by-name, whole and at random offsets; metadata, xattrs and
// dom_md/metadata say what Glance says; the tree is read-only.
func TestMountReads(t *testing.T) {
	t.Parallel()
	e := sharedEnv(t)
	for _, f := range e.Fixtures {
		t.Run(f.Name, func(t *testing.T) {
			t.Parallel()
			byID := filepath.Join(e.MP, "by-id", f.Img.ID)
			st, err := os.Stat(byID)
			if err != nil {
				t.Fatalf("stat: %v", err)
			}
			if st.Size() != int64(len(f.Data)) || st.Mode().Perm() != 0o444 || !st.Mode().IsRegular() {
				t.Fatalf("by-id stat: size %d mode %v, want %d -r--r--r--", st.Size(), st.Mode(), len(f.Data))
			}
			got, err := os.ReadFile(byID)
			if err != nil || !bytes.Equal(got, f.Data) {
				t.Fatalf("whole read of by-id: %d bytes, err %v, identical=%v", len(got), err, bytes.Equal(got, f.Data))
			}
			checkRandomPreads(t, byID, f.Data, 200, 42)

			iso := filepath.Join(e.MP, e.SD, isoDir, f.Name)
			got, err = os.ReadFile(iso)
			if err != nil || !bytes.Equal(got, f.Data) {
				t.Fatalf("whole read of ISO view %s: %d bytes, err %v, identical=%v", iso, len(got), err, bytes.Equal(got, f.Data))
			}
			sum := sha512.Sum512(got)
			if hex.EncodeToString(sum[:]) != f.Img.OSHashValue || f.Img.OSHashAlgo != "sha512" {
				t.Fatalf("sha512 of the ISO view file != Glance os_hash_value %s (%s)", f.Img.OSHashValue, f.Img.OSHashAlgo)
			}

			link := filepath.Join(e.MP, "by-name", f.Name)
			if dst, err := os.Readlink(link); err != nil || dst != "../by-id/"+f.Img.ID {
				t.Fatalf("readlink %s = %q, %v; want ../by-id/%s", link, dst, err, f.Img.ID)
			}
			if got, err := os.ReadFile(link); err != nil || !bytes.Equal(got, f.Data) {
				t.Fatalf("read through by-name: err %v identical=%v", err, bytes.Equal(got, f.Data))
			}

			var meta map[string]any
			b, err := os.ReadFile(filepath.Join(e.MP, "meta", f.Img.ID+".json"))
			if err != nil {
				t.Fatalf("meta json: %v", err)
			}
			if err := json.Unmarshal(b, &meta); err != nil {
				t.Fatalf("meta json does not parse: %v: %.200q", err, b)
			}
			if !strings.Contains(string(b), f.Img.ID) || !strings.Contains(string(b), f.Img.Checksum) {
				t.Fatalf("meta json lacks the image id or checksum: %.500s", b)
			}

			for attr, want := range map[string]string{
				"user.glance.id":            f.Img.ID,
				"user.glance.disk_format":   f.Format,
				"user.glance.checksum":      f.Img.Checksum,
				"user.glance.os_hash_algo":  f.Img.OSHashAlgo,
				"user.glance.os_hash_value": f.Img.OSHashValue,
			} {
				for _, p := range []string{byID, iso} {
					if got := getxattr(t, p, attr); got != want {
						t.Errorf("xattr %s of %s = %q, want %q", attr, p, got, want)
					}
				}
			}
			if f.Img.VirtualSize != nil {
				if got := getxattr(t, byID, "user.glance.virtual_size"); got != fmt.Sprint(*f.Img.VirtualSize) {
					t.Errorf("xattr user.glance.virtual_size = %q, want %d", got, *f.Img.VirtualSize)
				}
			}

			if w, err := os.OpenFile(byID, os.O_WRONLY, 0); err == nil {
				w.Close()
				t.Fatalf("opening %s for writing succeeded on a read-only mount", byID)
			} else if !errors.Is(err, syscall.EROFS) && !errors.Is(err, syscall.EACCES) && !errors.Is(err, syscall.EPERM) {
				t.Fatalf("open for write: %v, want EROFS/EACCES/EPERM", err)
			}
		})
	}
	t.Run("dom_md", func(t *testing.T) {
		b, err := os.ReadFile(filepath.Join(e.MP, e.SD, "dom_md", "metadata"))
		if err != nil {
			t.Fatal(err)
		}
		kv := map[string]string{}
		for _, line := range strings.Split(string(b), "\n") {
			if k, v, ok := strings.Cut(line, "="); ok {
				kv[k] = v
			}
		}
		if kv["SDUUID"] != e.SD || kv["TYPE"] != "GLANCE" || kv["URL"] != e.G.URL {
			t.Fatalf("dom_md/metadata = %q; want SDUUID=%s TYPE=GLANCE URL=%s", b, e.SD, e.G.URL)
		}
	})
	t.Run("top", func(t *testing.T) {
		ents, err := os.ReadDir(e.MP)
		if err != nil {
			t.Fatal(err)
		}
		var names []string
		for _, d := range ents {
			names = append(names, d.Name())
		}
		for _, want := range []string{e.SD, "by-id", "by-name", "meta"} {
			if !contains(names, want) {
				t.Errorf("mount root lists %v; %q missing", names, want)
			}
		}
	})
}

func getxattr(t *testing.T, path, attr string) string {
	t.Helper()
	buf := make([]byte, 4096)
	n, err := syscall.Getxattr(path, attr, buf)
	if err != nil {
		t.Errorf("getxattr(%s, %s): %v", path, attr, err)
		return ""
	}
	return string(buf[:n])
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// TestCatalogPaging: more than two Glance pages (default page: 25) of
// images are all visible in by-id and in `image list --json`.
func TestCatalogPaging(t *testing.T) {
	t.Parallel()
	e := sharedEnv(t)
	ctx := context.Background()
	const n = 60
	want := make([]harness.Image, n)
	var wg sync.WaitGroup
	errs := make(chan error, n)
	sem := make(chan struct{}, 6)
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			sem <- struct{}{}
			defer func() { <-sem }()
			img, err := e.G.CreateImage(ctx, fmt.Sprintf("page-%03d", i), "raw", []byte(fmt.Sprintf("page image %03d\n", i)))
			want[i] = img
			if err != nil {
				errs <- err
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}

	// A listing refresh (TTL 2 s) must bring all of them in.
	took, err := eventually(15*time.Second, 250*time.Millisecond, func() error {
		ents, err := os.ReadDir(filepath.Join(e.MP, "by-id"))
		if err != nil {
			return err
		}
		have := map[string]bool{}
		for _, d := range ents {
			have[d.Name()] = true
		}
		var missing int
		for _, img := range want {
			if !have[img.ID] {
				missing++
			}
		}
		if missing > 0 {
			return fmt.Errorf("%d of %d new images missing from by-id (it lists %d entries)", missing, n, len(ents))
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("all %d images listed in by-id after %v", n, took.Round(time.Millisecond))

	list, err := jsonList(mustCLI(t, e.D, "image", "list", e.Name, "--json", "--refresh"))
	if err != nil {
		t.Fatal(err)
	}
	got := ids(list, "id")
	for i, img := range want {
		if got[img.ID] == nil {
			t.Fatalf("image list --json lacks page-%03d (%s); it has %d images", i, img.ID, len(got))
		}
	}
	for i := 0; i < n; i += 7 { // content of a sample
		b, err := os.ReadFile(filepath.Join(e.MP, "by-id", want[i].ID))
		if err != nil || string(b) != fmt.Sprintf("page image %03d\n", i) {
			t.Fatalf("page-%03d reads %q, %v", i, b, err)
		}
	}
}

// TestWeirdNames: hostile and colliding names become safe, unique entries
// in the ISO view and by-name that read the right bytes.
func TestWeirdNames(t *testing.T) {
	t.Parallel()
	e := sharedEnv(t)
	ctx := context.Background()
	names := []string{
		"a/b", "a%2Fb", "..", ".", "", "ctl\x01\x1f\x7f\nname\ttab", "nul?\x00x", "dup", "dup",
		// Glance caps names at 255 characters: 300 bytes need multibyte ones.
		strings.Repeat("ж", 150), strings.Repeat("é", 150) + ".iso", strings.Repeat("é", 150) + "x", "../../etc/passwd", "sp ace .raw",
	}
	type item struct {
		img  harness.Image
		data []byte
	}
	byContent := map[string]*item{}
	var items []*item
	for i, name := range names {
		data := []byte(fmt.Sprintf("weird image %d %q\n", i, name))
		img, err := e.G.CreateImage(ctx, name, "raw", data)
		if err != nil {
			t.Fatalf("upload name %q: %v", name, err)
		}
		it := &item{img, data}
		items = append(items, it)
		byContent[string(data)] = it
	}

	check := func(dir string, isLink bool) error {
		ents, err := os.ReadDir(dir)
		if err != nil {
			return err
		}
		found := map[string][]string{} // image id -> entry names
		for _, d := range ents {
			n := d.Name()
			b, err := os.ReadFile(filepath.Join(dir, n))
			if err != nil {
				continue // not one of ours, or another test's image going away
			}
			it := byContent[string(b)]
			if it == nil {
				continue
			}
			found[it.img.ID] = append(found[it.img.ID], n)
			if n == "" || n == "." || n == ".." || strings.Contains(n, "/") || len(n) > 255 || !utf8.ValidString(n) {
				return fmt.Errorf("unsafe entry %q in %s", n, dir)
			}
			for _, r := range n {
				if r < 0x20 || r == 0x7f {
					return fmt.Errorf("entry %q in %s has a control character", n, dir)
				}
			}
			if isLink {
				dst, err := os.Readlink(filepath.Join(dir, n))
				if err != nil || dst != "../by-id/"+it.img.ID {
					return fmt.Errorf("by-name/%q -> %q (%v), want ../by-id/%s", n, dst, err, it.img.ID)
				}
			}
		}
		for i, it := range items {
			if len(found[it.img.ID]) != 1 {
				return fmt.Errorf("name %q (image %s): %d entries %q in %s, want exactly 1", names[i], it.img.ID, len(found[it.img.ID]), found[it.img.ID], dir)
			}
		}
		return nil
	}
	for _, dir := range []string{filepath.Join(e.MP, e.SD, isoDir), filepath.Join(e.MP, "by-name")} {
		if _, err := eventually(15*time.Second, 500*time.Millisecond, func() error {
			return check(dir, strings.HasSuffix(dir, "by-name"))
		}); err != nil {
			t.Fatal(err)
		}
	}
	for _, it := range items {
		got, err := os.ReadFile(filepath.Join(e.MP, "by-id", it.img.ID))
		if err != nil || !bytes.Equal(got, it.data) {
			t.Fatalf("by-id/%s: %q, %v", it.img.ID, got, err)
		}
	}
	// Nothing escaped the mount: no file appeared next to it.
	if _, err := os.Lstat(filepath.Join(e.MP, "..", "etc")); err == nil {
		t.Fatal("an entry escaped the mountpoint")
	}
}

// TestDeletedImageVanishes: with --refresh 2s an image deleted in Glance
// leaves by-id, the ISO view, `image list` and the NBD exports.
func TestDeletedImageVanishes(t *testing.T) {
	t.Parallel()
	e := sharedEnv(t)
	ctx := context.Background()
	data := harness.RandomBytes(77, 100000)
	img, err := e.G.CreateImage(ctx, "to-delete.raw", "raw", data)
	if err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(e.MP, "by-id", img.ID)
	if _, err := eventually(5*time.Second, 100*time.Millisecond, func() error { _, err := os.Stat(p); return err }); err != nil {
		t.Fatalf("new image never appeared: %v", err)
	}
	if got, err := os.ReadFile(p); err != nil || !bytes.Equal(got, data) {
		t.Fatalf("read before delete: %v", err)
	}
	if err := e.G.DeleteImage(ctx, img.ID); err != nil {
		t.Fatal(err)
	}
	deleted := time.Now()
	// Bound: refresh TTL 2 s + kernel entry/attr timeouts (~1 s) + slack.
	const bound = 6 * time.Second
	took, err := eventually(bound, 100*time.Millisecond, func() error {
		if _, err := os.Stat(p); !errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("stat by-id after delete: %v", err)
		}
		if _, err := os.Stat(filepath.Join(e.MP, e.SD, isoDir, "to-delete.raw")); !errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("stat ISO view after delete: %v", err)
		}
		ents, err := os.ReadDir(filepath.Join(e.MP, "by-id"))
		if err != nil {
			return err
		}
		for _, d := range ents {
			if d.Name() == img.ID {
				return errors.New("by-id still lists the deleted image")
			}
		}
		return nil
	})
	if err != nil {
		t.Fatalf("%v after %v (bound %v)", err, took, bound)
	}
	t.Logf("deleted image gone from the mount %v after the delete", time.Since(deleted).Round(time.Millisecond))
	list, err := jsonList(mustCLI(t, e.D, "image", "list", e.Name, "--json"))
	if err != nil {
		t.Fatal(err)
	}
	if m := ids(list, "id")[img.ID]; m != nil && m["status"] == "active" {
		t.Fatalf("image list still shows the deleted image as active: %v", m)
	}
	if exps, err := jsonList(mustCLI(t, e.D, "nbd", "list", "--json")); err != nil {
		t.Fatal(err)
	} else if ids(exps, "name")[e.SD+"/"+img.ID] != nil {
		t.Fatal("nbd list still exports the deleted image")
	}
}
