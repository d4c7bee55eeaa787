package transfer

import (
	"bytes"
	"context"
	"crypto/md5"
	"crypto/sha256"
	"crypto/sha512"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/glancegw/glancegw/cache"
	"github.com/glancegw/glancegw/cache/cachetest"
	"github.com/glancegw/glancegw/glance"
	"github.com/glancegw/glancegw/glance/inspect"
)

const (
	spU  = "11111111-2222-4333-8444-555555555555"
	sdU  = "aaaaaaaa-bbbb-4ccc-8ddd-eeeeeeeeeeee"
	imgU = "01234567-89ab-4cde-8f01-23456789abcd"
	volU = "fedcba98-7654-4321-8fed-cba987654321"
)

func sha512hex(b []byte) string { s := sha512.Sum512(b); return hex.EncodeToString(s[:]) }
func md5hex(b []byte) string    { s := md5.Sum(b); return hex.EncodeToString(s[:]) }

func testEngine(t *testing.T) *Engine {
	return New(Config{ChunkSize: 1 << 20, Backoff: 10 * time.Millisecond, MaxBackoff: 40 * time.Millisecond,
		RetryFor: 300 * time.Millisecond, FreeMargin: 1}, nil)
}

func testVolume(t *testing.T) Volume {
	t.Helper()
	v, err := ParseVolume(t.TempDir(), spU, sdU, imgU, volU)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

// serve serves data over HTTP with Range support, as a plain web server.
func serve(t *testing.T, data []byte) *httptest.Server {
	t.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.ServeContent(w, r, "img", time.Unix(1700000000, 0), bytes.NewReader(data))
	}))
	t.Cleanup(srv.Close)
	return srv
}

func httpSource(t *testing.T, url string) *glance.HTTPSource {
	t.Helper()
	src, err := glance.NewHTTPSource(context.Background(), glance.HTTPSourceConfig{URL: url}, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { src.Close() })
	return src
}

// assertNoVolume checks that neither the volume, its meta nor a temp file
// exist.
func assertNoVolume(t *testing.T, v Volume) {
	t.Helper()
	for _, p := range []string{v.Path(), v.MetaPath()} {
		if _, err := os.Lstat(p); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("%s exists after a failed import (%v)", p, err)
		}
	}
	temps, _ := filepath.Glob(filepath.Join(v.Dir(), ".*"+tempMarker+"*"))
	if len(temps) > 0 {
		t.Errorf("temporary files left: %v", temps)
	}
}

// assertNoDirs checks that a failed import into a fresh repository left no
// directory either.
func assertNoDirs(t *testing.T, v Volume) {
	t.Helper()
	if ents, err := os.ReadDir(v.Root); err != nil || len(ents) != 0 {
		t.Errorf("the repository holds %v after a failed import (%v)", ents, err)
	}
}

func TestImportHTTPSparseVerified(t *testing.T) {
	// 20 MiB + a tail; cachetest.Data zeroes the second quarter.
	data := cachetest.Data(20<<20+123, 7)
	srv := serve(t, data)
	v := testVolume(t)
	var progress atomic.Int64
	meta, err := testEngine(t).Import(context.Background(), ImportSpec{
		Volume: v, Source: httpSource(t, srv.URL+"/x.raw?token=s3cret"), SourceURL: RedactURL(srv.URL + "/x.raw?token=s3cret"),
		Expect: Checksum{Algo: "sha512", Value: sha512hex(data)}, Progress: func(n int64) { progress.Add(n) },
	})
	if err != nil {
		t.Fatal(err)
	}
	got, err := os.ReadFile(v.Path())
	if err != nil || !bytes.Equal(got, data) {
		t.Fatalf("volume differs from the source (err %v, len %d)", err, len(got))
	}
	if progress.Load() != int64(len(data)) {
		t.Errorf("progress reported %d bytes, want %d", progress.Load(), len(data))
	}
	if !meta.Verified || meta.Format != "raw" || meta.VirtualSize != int64(len(data)) || meta.Checksum.Algo != "sha512" {
		t.Errorf("meta = %+v", meta)
	}
	if strings.Contains(meta.Source, "s3cret") {
		t.Errorf("meta source carries the secret: %s", meta.Source)
	}
	var onDisk Meta
	b, err := os.ReadFile(v.MetaPath())
	if err != nil || json.Unmarshal(b, &onDisk) != nil || onDisk.Checksum != meta.Checksum || !onDisk.Verified {
		t.Errorf(".meta = %s (%v)", b, err)
	}
	var st syscall.Stat_t
	if err := syscall.Stat(v.Path(), &st); err != nil {
		t.Fatal(err)
	}
	if alloc := st.Blocks * 512; alloc >= int64(len(data))-4<<20 {
		t.Errorf("volume allocates %d bytes of %d: zeros were written, not skipped", alloc, len(data))
	}
	if meta.Written >= int64(len(data))-4<<20 {
		t.Errorf("written %d of %d", meta.Written, len(data))
	}
}

func TestImportChecksumMismatch(t *testing.T) {
	data := cachetest.Data(3<<20+5, 1)
	corrupt := bytes.Clone(data)
	corrupt[2<<20+17] ^= 0x40
	srv := serve(t, corrupt)
	for _, exp := range []Checksum{{"sha512", sha512hex(data)}, {"md5", md5hex(data)}} {
		t.Run(exp.Algo, func(t *testing.T) {
			v := testVolume(t)
			_, err := testEngine(t).Import(context.Background(), ImportSpec{Volume: v, Source: httpSource(t, srv.URL), Expect: exp})
			if !errors.Is(err, ErrChecksum) {
				t.Fatalf("err = %v, want checksum mismatch", err)
			}
			assertNoVolume(t, v)
			assertNoDirs(t, v)
		})
	}
	// Directories that were there before stay: another volume may use them.
	v := testVolume(t)
	if err := os.MkdirAll(filepath.Join(v.Root, v.SP, v.SD), 0o755); err != nil {
		t.Fatal(err)
	}
	_, err := testEngine(t).Import(context.Background(), ImportSpec{Volume: v, Source: httpSource(t, srv.URL), Expect: Checksum{"sha512", sha512hex(data)}})
	if !errors.Is(err, ErrChecksum) {
		t.Fatalf("err = %v, want checksum mismatch", err)
	}
	if _, err := os.Stat(filepath.Join(v.Root, v.SP, v.SD)); err != nil {
		t.Errorf("a directory the import did not make was removed: %v", err)
	}
	if _, err := os.Stat(filepath.Join(v.Root, v.SP, v.SD, "images")); !os.IsNotExist(err) {
		t.Errorf("a directory the import made is left: %v", err)
	}
}

func TestImportUnverified(t *testing.T) {
	data := cachetest.Data(100_000, 3)
	v := testVolume(t)
	meta, err := testEngine(t).Import(context.Background(), ImportSpec{Volume: v, Source: cachetest.NewMemSource(data)})
	if err != nil {
		t.Fatal(err)
	}
	if meta.Verified || meta.Note != NoChecksumNote || meta.Checksum.Value != sha512hex(data) {
		t.Errorf("meta = %+v", meta)
	}
}

func TestImportEmptyImage(t *testing.T) {
	v := testVolume(t)
	meta, err := testEngine(t).Import(context.Background(), ImportSpec{Volume: v, Source: cachetest.NewMemSource(nil),
		Expect: Checksum{"md5", md5hex(nil)}})
	if err != nil || !meta.Verified {
		t.Fatalf("meta %+v, err %v", meta, err)
	}
	if fi, err := os.Stat(v.Path()); err != nil || fi.Size() != 0 {
		t.Fatalf("stat: %v %v", fi, err)
	}
}

func TestParseVolume(t *testing.T) {
	for _, tc := range []struct {
		name string
		ids  [4]string
		ok   bool
	}{
		{"canonical", [4]string{spU, sdU, imgU, volU}, true},
		{"upper case is lowered", [4]string{strings.ToUpper(spU), sdU, imgU, volU}, true},
		{"dotdot", [4]string{"..", sdU, imgU, volU}, false},
		{"traversal", [4]string{spU, sdU, "../../../../etc/passwd", volU}, false},
		{"slash inside", [4]string{spU, sdU, imgU, "fedcba98-7654-4321-8fed/cba98765432"}, false},
		{"no dashes", [4]string{spU, sdU, imgU, "fedcba9876544321-8fedcba987654321xxx"}, false},
		{"braces", [4]string{spU, "{aaaaaaaa-bbbb-4ccc-8ddd-eeeeeeeeeee}", imgU, volU}, false},
		{"empty", [4]string{spU, sdU, "", volU}, false},
		{"non-hex", [4]string{spU, sdU, imgU, "gedcba98-7654-4321-8fed-cba987654321"}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			v, err := ParseVolume("/repo", tc.ids[0], tc.ids[1], tc.ids[2], tc.ids[3])
			if tc.ok != (err == nil) {
				t.Fatalf("err = %v, want ok=%v", err, tc.ok)
			}
			if err != nil && !errors.Is(err, ErrInvalid) {
				t.Errorf("err %v is not ErrInvalid", err)
			}
			if tc.ok && v.Path() != "/repo/"+spU+"/"+sdU+"/images/"+imgU+"/"+volU {
				t.Errorf("path = %s", v.Path())
			}
		})
	}
	if _, err := ParseVolume("relative", spU, sdU, imgU, volU); !errors.Is(err, ErrInvalid) {
		t.Errorf("relative root accepted: %v", err)
	}
}

func TestSymlinkEscapeRefused(t *testing.T) {
	for _, at := range []string{"sp", "sd", "images", "img"} {
		t.Run(at, func(t *testing.T) {
			root, outside := t.TempDir(), t.TempDir()
			v, _ := ParseVolume(root, spU, sdU, imgU, volU)
			dirs := v.dirs()
			i := map[string]int{"sp": 0, "sd": 1, "images": 2, "img": 3}[at]
			parent := filepath.Join(append([]string{root}, dirs[:i]...)...)
			if err := os.MkdirAll(parent, 0o755); err != nil {
				t.Fatal(err)
			}
			if err := os.Symlink(outside, filepath.Join(parent, dirs[i])); err != nil {
				t.Fatal(err)
			}
			if err := v.Check(false, false); !errors.Is(err, ErrInvalid) {
				t.Errorf("Check: %v, want ErrInvalid", err)
			}
			_, err := testEngine(t).Import(context.Background(), ImportSpec{Volume: v, Source: cachetest.NewMemSource([]byte("data"))})
			if !errors.Is(err, ErrInvalid) {
				t.Errorf("Import: %v, want ErrInvalid", err)
			}
			if ents, _ := os.ReadDir(outside); len(ents) != 0 {
				t.Errorf("import wrote outside the root: %v", ents)
			}
		})
	}
}

func TestVolumeSymlinkRefused(t *testing.T) {
	v := testVolume(t)
	target := filepath.Join(t.TempDir(), "secret")
	os.WriteFile(target, []byte("host file"), 0o600)
	os.MkdirAll(v.Dir(), 0o755)
	os.Symlink(target, v.Path())
	if _, err := v.Open(); !errors.Is(err, ErrInvalid) {
		t.Errorf("export open through a symlink: %v", err)
	}
	// Import refuses it as existing; overwrite replaces the link, not the target.
	if err := v.Check(false, false); !errors.Is(err, ErrExists) {
		t.Errorf("Check: %v", err)
	}
	if _, err := testEngine(t).Import(context.Background(), ImportSpec{Volume: v, Source: cachetest.NewMemSource([]byte("new")), Overwrite: true}); err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(target); string(b) != "host file" {
		t.Errorf("symlink target changed: %q", b)
	}
	if fi, _ := os.Lstat(v.Path()); !fi.Mode().IsRegular() {
		t.Errorf("volume is %v", fi.Mode())
	}
}

func TestExistingVolume(t *testing.T) {
	v := testVolume(t)
	os.MkdirAll(v.Dir(), 0o755)
	os.WriteFile(v.Path(), []byte("old"), 0o640)
	os.WriteFile(v.MetaPath(), []byte("{}"), 0o640)
	if err := v.Check(false, false); !errors.Is(err, ErrExists) {
		t.Fatalf("Check: %v, want ErrExists", err)
	}
	src := cachetest.NewMemSource([]byte("new bytes"))
	if _, err := testEngine(t).Import(context.Background(), ImportSpec{Volume: v, Source: src}); !errors.Is(err, ErrExists) {
		t.Fatalf("Import: %v, want ErrExists", err)
	}
	if b, _ := os.ReadFile(v.Path()); string(b) != "old" {
		t.Fatalf("volume changed: %q", b)
	}
	if _, err := testEngine(t).Import(context.Background(), ImportSpec{Volume: v, Source: src, Overwrite: true}); err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(v.Path()); string(b) != "new bytes" {
		t.Fatalf("volume not replaced: %q", b)
	}
	if b, _ := os.ReadFile(v.MetaPath()); !bytes.Contains(b, []byte(`"size": 9`)) {
		t.Fatalf("meta not replaced: %s", b)
	}
}

func TestImportRefusesQcow2WithBackingFile(t *testing.T) {
	if _, err := exec.LookPath("qemu-img"); err != nil {
		t.Skip("qemu-img not installed")
	}
	dir := t.TempDir()
	run := func(args ...string) {
		t.Helper()
		cmd := exec.Command("qemu-img", args...)
		cmd.Dir = dir
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("qemu-img %v: %v\n%s", args, err, out)
		}
	}
	run("create", "-f", "qcow2", "base.qcow2", "64M")
	run("create", "-f", "qcow2", "-b", "base.qcow2", "-F", "qcow2", "top.qcow2")
	data, err := os.ReadFile(filepath.Join(dir, "top.qcow2"))
	if err != nil {
		t.Fatal(err)
	}
	v := testVolume(t)
	_, err = testEngine(t).Import(context.Background(), ImportSpec{Volume: v, Source: httpSource(t, serve(t, data).URL)})
	if !errors.Is(err, ErrUnsafe) || !errors.Is(err, inspect.ErrUnsafe) || !strings.Contains(err.Error(), "backing") {
		t.Fatalf("err = %v, want a refusal naming the backing file", err)
	}
	assertNoVolume(t, v)
	// The base alone is fine, and its format and virtual size land in .meta.
	base, _ := os.ReadFile(filepath.Join(dir, "base.qcow2"))
	v2 := testVolume(t)
	meta, err := testEngine(t).Import(context.Background(), ImportSpec{Volume: v2, Source: cachetest.NewMemSource(base)})
	if err != nil || meta.Format != "qcow2" || meta.VirtualSize != 64<<20 {
		t.Fatalf("meta %+v, err %v", meta, err)
	}
}

func TestImportCancel(t *testing.T) {
	data := cachetest.Data(64<<20, 5)
	src := cachetest.NewMemSource(data)
	src.SetLatency(20 * time.Millisecond)
	v := testVolume(t)
	ctx, cancel := context.WithCancel(context.Background())
	var done atomic.Int64
	errc := make(chan error, 1)
	go func() {
		_, err := testEngine(t).Import(ctx, ImportSpec{Volume: v, Source: src, Progress: func(n int64) {
			done.Add(n)
		}})
		errc <- err
	}()
	for done.Load() < 4<<20 {
		time.Sleep(time.Millisecond)
	}
	cancel()
	t0 := time.Now()
	select {
	case err := <-errc:
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("err = %v, want canceled", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("import did not stop within 5s of cancel")
	}
	if el := time.Since(t0); el > time.Second {
		t.Errorf("cancel took %v", el)
	}
	if done.Load() >= int64(len(data)) {
		t.Errorf("the whole image was copied before the cancel")
	}
	assertNoVolume(t, v)
	assertNoDirs(t, v)
}

func TestImportRetriesAndResumes(t *testing.T) {
	data := cachetest.Data(5<<20, 9)
	src := cachetest.NewMemSource(data)
	src.FailNext(2, nil)
	v := testVolume(t)
	if _, err := testEngine(t).Import(context.Background(), ImportSpec{Volume: v, Source: src,
		Expect: Checksum{"sha512", sha512hex(data)}}); err != nil {
		t.Fatal(err)
	}
	// Past the retries the job fails, and cleans up.
	src2 := cachetest.NewMemSource(data)
	src2.SetError(cachetest.ErrInjected)
	v2 := testVolume(t)
	_, err := testEngine(t).Import(context.Background(), ImportSpec{Volume: v2, Source: src2})
	if !errors.Is(err, cachetest.ErrInjected) {
		t.Fatalf("err = %v", err)
	}
	assertNoVolume(t, v2)
}

// flakySource fails once in the middle of a chunk after delivering part of
// it, to check the retry resumes at the last good byte.
type flakySource struct {
	*cachetest.MemSource
	once sync.Once
	offs []int64
	mu   sync.Mutex
}

func (f *flakySource) ReadAt(ctx context.Context, p []byte, off int64) (int, error) {
	f.mu.Lock()
	f.offs = append(f.offs, off)
	f.mu.Unlock()
	failed := false
	f.once.Do(func() { failed = true })
	if failed && len(p) > 1000 {
		n, _ := f.MemSource.ReadAt(ctx, p[:1000], off)
		return n, errors.New("connection reset")
	}
	return f.MemSource.ReadAt(ctx, p, off)
}

func TestImportResumesAtLastGoodByte(t *testing.T) {
	data := cachetest.Data(2<<20, 11)
	src := &flakySource{MemSource: cachetest.NewMemSource(data)}
	v := testVolume(t)
	e := New(Config{ChunkSize: 1 << 20, Backoff: time.Millisecond, FreeMargin: 1}, nil)
	// Skip inspection's reads: they are not chunk reads.
	if _, err := e.Import(context.Background(), ImportSpec{Volume: v, Source: src, Expect: Checksum{"sha512", sha512hex(data)}}); err != nil {
		t.Fatal(err)
	}
	src.mu.Lock()
	defer src.mu.Unlock()
	for i := 1; i < len(src.offs); i++ {
		if src.offs[i] == src.offs[0]+1000 {
			return
		}
	}
	t.Errorf("no read resumed at offset %d: %v", src.offs[0]+1000, src.offs)
}

func TestRemoveTemps(t *testing.T) {
	v := testVolume(t)
	os.MkdirAll(v.Dir(), 0o755)
	tmp := filepath.Join(v.Dir(), tempName(v.VolumeID))
	tmpMeta := filepath.Join(v.Dir(), tempName(v.VolumeID+".meta"))
	keep := []string{v.Path(), filepath.Join(v.Dir(), ".hidden"), filepath.Join(v.Dir(), "x.glancegw-tmp-notours")}
	for _, p := range append([]string{tmp, tmpMeta}, keep...) {
		if err := os.WriteFile(p, []byte("x"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	removed, err := RemoveTemps(v.Root)
	if err != nil || len(removed) != 2 {
		t.Fatalf("removed %v, err %v", removed, err)
	}
	for _, p := range []string{tmp, tmpMeta} {
		if _, err := os.Stat(p); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("%s not removed", p)
		}
	}
	for _, p := range keep {
		if _, err := os.Stat(p); err != nil {
			t.Errorf("%s removed", p)
		}
	}
}

func TestFileSourceConformance(t *testing.T) {
	cachetest.Run(t, func(t *testing.T, data []byte) cache.BlockSource {
		p := filepath.Join(t.TempDir(), "vol")
		if err := os.WriteFile(p, data, 0o600); err != nil {
			t.Fatal(err)
		}
		f, err := os.Open(p)
		if err != nil {
			t.Fatal(err)
		}
		s, err := NewFileSource(f)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { s.Close() })
		return s
	})
}

func TestWriteSparse(t *testing.T) {
	z := make([]byte, zeroRun)
	d := bytes.Repeat([]byte{1}, zeroRun)
	cat := func(parts ...[]byte) []byte { return bytes.Join(parts, nil) }
	for _, tc := range []struct {
		name    string
		p       []byte
		written int64
	}{
		{"all zero", cat(z, z, z), 0},
		{"all data", cat(d, d), 2 * zeroRun},
		{"data zero data", cat(d, z, d), 2 * zeroRun},
		{"short zero tail", cat(d, z[:100]), zeroRun},
		{"short data tail", cat(z, d[:100]), 100},
		{"empty", nil, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f, err := os.Create(filepath.Join(t.TempDir(), "f"))
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			n, err := writeSparse(f, tc.p, 4096)
			if err != nil || n != tc.written {
				t.Fatalf("written %d, %v; want %d", n, err, tc.written)
			}
			f.Truncate(int64(4096 + len(tc.p)))
			got, _ := os.ReadFile(f.Name())
			if !bytes.Equal(got[4096:], tc.p) || !bytes.Equal(got[:4096], make([]byte, 4096)) {
				t.Errorf("file content differs")
			}
		})
	}
}

func TestRedactURL(t *testing.T) {
	for in, want := range map[string]string{
		"http://user:pw@glance:9292/v2/images/x/file":            "http://glance:9292/v2/images/x/file",
		"https://s3/b/o?X-Amz-Signature=abc&X-Amz-Date=1&part=2": "https://s3/b/o?X-Amz-Date=REDACTED&X-Amz-Signature=REDACTED&part=2",
		"https://h/f?temp_url_sig=abc&temp_url_expires=9":        "https://h/f?temp_url_expires=REDACTED&temp_url_sig=REDACTED",
		"https://h/f?token=abc#frag":                             "https://h/f?token=REDACTED",
		"http://glance:9292/v2/images/1/file":                    "http://glance:9292/v2/images/1/file",
		"http://h/%zz":                                           "(invalid URL)",
	} {
		if got := RedactURL(in); got != want {
			t.Errorf("RedactURL(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestCheckHTTPURL(t *testing.T) {
	for _, bad := range []string{"file:///etc/passwd", "ftp://h/x", "nbd://h/x", "/local/path", "http:///nohost", "gopher://h",
		"http://h:9292/v2/images/1f0c", "http://h:9292/v2/images/1f0c/"} {
		if _, err := CheckHTTPURL(bad); !errors.Is(err, ErrInvalid) {
			t.Errorf("CheckHTTPURL(%q) = %v, want ErrInvalid", bad, err)
		}
	}
	for _, good := range []string{"http://h/x", "https://h:9292/v2/images/1/file"} {
		if _, err := CheckHTTPURL(good); err != nil {
			t.Errorf("CheckHTTPURL(%q) = %v", good, err)
		}
	}
}

func TestExpected(t *testing.T) {
	for _, tc := range []struct{ algo, val, md5, want string }{
		{"sha512", "AB", "cd", "sha512:ab"},
		{"blake9", "ab", "cd", "md5:cd"},
		{"", "", "cd", "md5:cd"},
		{"", "", "", "none"},
	} {
		if got := Expected(tc.algo, tc.val, tc.md5).String(); got != tc.want {
			t.Errorf("Expected(%q,%q,%q) = %s, want %s", tc.algo, tc.val, tc.md5, got, tc.want)
		}
	}
}

func sha256hex(b []byte) string { s := sha256.Sum256(b); return hex.EncodeToString(s[:]) }

func TestImportOtherAlgo(t *testing.T) {
	data := cachetest.Data(3<<20, 2)
	v := testVolume(t)
	if _, err := testEngine(t).Import(context.Background(), ImportSpec{Volume: v, Source: cachetest.NewMemSource(data),
		Expect: Checksum{"sha256", sha256hex(data)}}); err != nil {
		t.Fatal(err)
	}
	_ = fmt.Sprint
	_ = io.EOF
}

// hugeSource reads as zeros and is far larger than any disk here; it
// counts the bytes it was asked for.
type hugeSource struct{ asked atomic.Int64 }

func (s *hugeSource) Size() int64      { return 1 << 52 }
func (s *hugeSource) Identity() string { return "huge" }
func (s *hugeSource) ReadAt(_ context.Context, p []byte, off int64) (int, error) {
	s.asked.Add(int64(len(p)))
	clear(p)
	return len(p), nil
}

func TestImportNoSpaceBeforeAnyByteMoves(t *testing.T) {
	v := testVolume(t)
	src := &hugeSource{}
	_, err := testEngine(t).Import(context.Background(), ImportSpec{Volume: v, Source: src,
		Expect: Checksum{Algo: "sha512", Value: strings.Repeat("0", 128)}})
	if !errors.Is(err, ErrNoSpace) || !strings.Contains(err.Error(), "bytes free") {
		t.Fatalf("Import of a 4 PiB image: %v, want ErrNoSpace saying what is free", err)
	}
	// Inspection reads headers and footers, never the copy's chunks.
	if n := src.asked.Load(); n == 0 || n > 8<<20 {
		t.Errorf("%d bytes were read before the free space was checked (want inspection's few)", n)
	}
	assertNoVolume(t, v)
	assertNoDirs(t, v)
}
