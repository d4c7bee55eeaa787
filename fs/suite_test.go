package fs

import (
	"context"
	"errors"
	"io"
	iofs "io/fs"
	"log/slog"
	"os"
	"path"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/hanwen/go-fuse/v2/fuse"
)

// The suite below runs against the bare tree (no FUSE) and against a real
// mount, in the manner of rclone's vfstest: the same expectations hold for
// both, so a failure on the mount alone points at the FUSE glue.

// attrs is what the suite checks of a stat.
type attrs struct {
	mode  iofs.FileMode
	size  int64
	mtime time.Time
	ino   uint64
	nlink uint64
}

// suiteFS is the filesystem under test. Paths are relative to the root;
// errors carry a syscall.Errno.
type suiteFS interface {
	stat(name string) (attrs, error) // follows symlinks
	lstat(name string) (attrs, error)
	readDir(name string) ([]string, error)
	readFile(name string) ([]byte, error)
	readAt(name string, p []byte, off int64) (int, error)
	readlink(name string) (string, error)
	getxattr(name, attr string) ([]byte, error)
	listxattr(name string) ([]string, error)
	openWrite(name string) error
}

// bareFS drives the tree directly, through the same calls the FUSE nodes make.
type bareFS struct{ t *tree }

func (b bareFS) errno(op, name string, err error) error {
	return &os.PathError{Op: op, Path: name, Err: translateError(b.t.log, op, err)}
}

// walk resolves name to an entry, following symlinks (all but the last
// one unless follow).
func (b bareFS) walk(name string, follow bool) (entry, error) {
	ctx := context.Background()
	e := entry{kind: kindDir, path: ""}
	parts := strings.Split(path.Clean(name), "/")
	if name == "" || name == "." {
		parts = nil
	}
	for hops := 0; len(parts) > 0; {
		if e.kind != kindDir {
			return entry{}, b.errno("walk", name, syscall.ENOTDIR)
		}
		next, err := b.t.lookup(ctx, e.path, parts[0])
		if err != nil {
			return entry{}, b.errno("walk", name, err)
		}
		parts = parts[1:]
		if next.kind == kindLink && (len(parts) > 0 || follow) {
			if hops++; hops > 8 {
				return entry{}, b.errno("walk", name, syscall.ELOOP)
			}
			target := path.Join(path.Dir(next.path), next.target)
			parts = append(strings.Split(target, "/"), parts...)
			e = entry{kind: kindDir, path: ""}
			continue
		}
		e = next
	}
	return e, nil
}

func (b bareFS) attrsOf(e entry) attrs {
	var a fuse.Attr
	img := e.img
	if img != nil {
		img = b.t.current(img)
	}
	b.t.fillAttr(e, img, &a)
	mode := iofs.FileMode(a.Mode & 0o777)
	switch a.Mode & syscall.S_IFMT {
	case syscall.S_IFDIR:
		mode |= iofs.ModeDir
	case syscall.S_IFLNK:
		mode |= iofs.ModeSymlink
	}
	return attrs{mode: mode, size: int64(a.Size), mtime: time.Unix(int64(a.Mtime), int64(a.Mtimensec)),
		ino: a.Ino, nlink: uint64(a.Nlink)}
}

func (b bareFS) stat(name string) (attrs, error) {
	e, err := b.walk(name, true)
	if err != nil {
		return attrs{}, err
	}
	if e.path == "" {
		e.ino = 1
	}
	return b.attrsOf(e), nil
}

func (b bareFS) lstat(name string) (attrs, error) {
	e, err := b.walk(name, false)
	if err != nil {
		return attrs{}, err
	}
	return b.attrsOf(e), nil
}

func (b bareFS) readDir(name string) ([]string, error) {
	e, err := b.walk(name, true)
	if err != nil {
		return nil, err
	}
	es, err := b.t.list(context.Background(), e.path)
	if err != nil {
		return nil, b.errno("readdir", name, err)
	}
	var names []string
	for _, e := range es {
		names = append(names, e.name)
	}
	return names, nil
}

func (b bareFS) readAt(name string, p []byte, off int64) (int, error) {
	e, err := b.walk(name, true)
	if err != nil {
		return 0, err
	}
	switch e.kind {
	case kindData:
		n := len(sliceAt(e.data, p, off))
		if n < len(p) {
			return n, io.EOF
		}
		return n, nil
	case kindImage:
		ctx := context.Background()
		src, err := b.t.source(ctx, e.img)
		if err != nil {
			return 0, b.errno("open", name, err)
		}
		n, err := b.t.readImage(ctx, src, e.img, p, off)
		if err != nil {
			return n, b.errno("read", name, err)
		}
		if n < len(p) {
			return n, io.EOF
		}
		return n, nil
	}
	return 0, b.errno("read", name, syscall.EISDIR)
}

func (b bareFS) readFile(name string) ([]byte, error) {
	a, err := b.stat(name)
	if err != nil {
		return nil, err
	}
	p := make([]byte, a.size)
	n, err := b.readAt(name, p, 0)
	if err != nil && !errors.Is(err, io.EOF) {
		return nil, err
	}
	return p[:n], nil
}

func (b bareFS) readlink(name string) (string, error) {
	e, err := b.walk(name, false)
	if err != nil {
		return "", err
	}
	if e.kind != kindLink {
		return "", b.errno("readlink", name, syscall.EINVAL)
	}
	return e.target, nil
}

func (b bareFS) xattrs(name string) ([]xattr, error) {
	e, err := b.walk(name, true)
	if err != nil || e.kind != kindImage {
		return nil, err
	}
	return imageXattrs(b.t.current(e.img)), nil
}

func (b bareFS) getxattr(name, attr string) ([]byte, error) {
	xs, err := b.xattrs(name)
	if err != nil {
		return nil, err
	}
	size, errno := getxattr(xs, attr, nil)
	if errno != 0 && errno != syscall.ERANGE {
		return nil, &os.PathError{Op: "getxattr", Path: name, Err: errno}
	}
	buf := make([]byte, size)
	n, errno := getxattr(xs, attr, buf)
	if errno != 0 {
		return nil, &os.PathError{Op: "getxattr", Path: name, Err: errno}
	}
	return buf[:n], nil
}

func (b bareFS) listxattr(name string) ([]string, error) {
	xs, err := b.xattrs(name)
	if err != nil {
		return nil, err
	}
	size, _ := listxattr(xs, nil)
	buf := make([]byte, size)
	n, errno := listxattr(xs, buf)
	if errno != 0 {
		return nil, &os.PathError{Op: "listxattr", Path: name, Err: errno}
	}
	return splitNul(buf[:n]), nil
}

func (b bareFS) openWrite(name string) error {
	if _, err := b.walk(name, true); err != nil {
		return err
	}
	return &os.PathError{Op: "open", Path: name, Err: checkOpen(syscall.O_WRONLY)}
}

func splitNul(b []byte) []string {
	var out []string
	for _, s := range strings.Split(string(b), "\x00") {
		if s != "" {
			out = append(out, s)
		}
	}
	sort.Strings(out)
	return out
}

// mountFS reads a real mount through the kernel.
type mountFS struct{ root string }

func (m mountFS) p(name string) string { return filepath.Join(m.root, name) }

func attrsOfInfo(fi os.FileInfo) attrs {
	st := fi.Sys().(*syscall.Stat_t)
	return attrs{mode: fi.Mode() & (iofs.ModeType | iofs.ModePerm), size: fi.Size(), mtime: fi.ModTime(),
		ino: st.Ino, nlink: uint64(st.Nlink)}
}

func (m mountFS) stat(name string) (attrs, error) {
	fi, err := os.Stat(m.p(name))
	if err != nil {
		return attrs{}, err
	}
	return attrsOfInfo(fi), nil
}

func (m mountFS) lstat(name string) (attrs, error) {
	fi, err := os.Lstat(m.p(name))
	if err != nil {
		return attrs{}, err
	}
	return attrsOfInfo(fi), nil
}

func (m mountFS) readDir(name string) ([]string, error) {
	des, err := os.ReadDir(m.p(name))
	var names []string
	for _, de := range des {
		names = append(names, de.Name())
	}
	return names, err
}

func (m mountFS) readFile(name string) ([]byte, error) { return os.ReadFile(m.p(name)) }

func (m mountFS) readAt(name string, p []byte, off int64) (int, error) {
	f, err := os.Open(m.p(name))
	if err != nil {
		return 0, err
	}
	defer f.Close()
	return f.ReadAt(p, off)
}

func (m mountFS) readlink(name string) (string, error) { return os.Readlink(m.p(name)) }

func (m mountFS) getxattr(name, attr string) ([]byte, error) {
	size, err := syscall.Getxattr(m.p(name), attr, nil)
	if err != nil {
		return nil, &os.PathError{Op: "getxattr", Path: name, Err: err}
	}
	buf := make([]byte, size)
	n, err := syscall.Getxattr(m.p(name), attr, buf)
	if err != nil {
		return nil, &os.PathError{Op: "getxattr", Path: name, Err: err}
	}
	return buf[:n], nil
}

func (m mountFS) listxattr(name string) ([]string, error) {
	size, err := syscall.Listxattr(m.p(name), nil)
	if err != nil {
		return nil, &os.PathError{Op: "listxattr", Path: name, Err: err}
	}
	buf := make([]byte, size)
	n, err := syscall.Listxattr(m.p(name), buf)
	if err != nil {
		return nil, &os.PathError{Op: "listxattr", Path: name, Err: err}
	}
	return splitNul(buf[:n]), nil
}

func (m mountFS) openWrite(name string) error {
	f, err := os.OpenFile(m.p(name), os.O_WRONLY, 0)
	if err == nil {
		f.Close()
	}
	return err
}

// suiteConfig makes listings and kernel caches short-lived for tests.
func suiteConfig() Config {
	return Config{RefreshTTL: 300 * time.Millisecond, MissInterval: 50 * time.Millisecond,
		EntryTimeout: 100 * time.Millisecond, ReadTimeout: 5 * time.Second, ListTimeout: 5 * time.Second}
}

func testLogger(t testing.TB) *slog.Logger {
	return slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

type testWriter struct{ t testing.TB }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimSpace(string(p)))
	return len(p), nil
}

func newBare(t *testing.T, d *fakeDomain) suiteFS {
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	return bareFS{newTree(ctx, d, suiteConfig().withDefaults(), testLogger(t), time.Now)}
}

// eventually polls cond until it holds or within passes.
func eventually(t *testing.T, within time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(within)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("not within %v: %s", within, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
