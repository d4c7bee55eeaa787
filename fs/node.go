package fs

import (
	"context"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	gofs "github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"

	"github.com/glancegw/glancegw/cache"
)

// The FUSE nodes are thin: each asks the tree and translates errors once.

type dirNode struct {
	gofs.Inode
	t    *tree
	path string
}

type imageNode struct {
	gofs.Inode
	t   *tree
	img *Image

	mu  sync.Mutex
	src cache.BlockSource // opened on first open, kept for the node's life

	// failedAt (unix ns) is when a read last failed. Through the page cache
	// one read(2) can become several FUSE reads: the kernel retries a failed
	// read-ahead page by page, and each would wait out the source's whole
	// retry budget again. So for a while after a failure a read waits only
	// a short time: enough for a Glance that is back (or a fetch still in
	// flight that now completes), not a second full budget.
	failedAt atomic.Int64
}

const (
	recentFailure = 30 * time.Second // how long a failure shortens reads
	shortWait     = 5 * time.Second  // the wait of a read after a failure
)

type dataNode struct {
	gofs.Inode
	t *tree
	e entry
}

type linkNode struct {
	gofs.Inode
	t *tree
	e entry
}

var (
	_ = (gofs.NodeLookuper)((*dirNode)(nil))
	_ = (gofs.NodeReaddirer)((*dirNode)(nil))
	_ = (gofs.NodeGetattrer)((*dirNode)(nil))

	_ = (gofs.NodeGetattrer)((*imageNode)(nil))
	_ = (gofs.NodeOpener)((*imageNode)(nil))
	_ = (gofs.NodeReader)((*imageNode)(nil))
	_ = (gofs.NodeGetxattrer)((*imageNode)(nil))
	_ = (gofs.NodeListxattrer)((*imageNode)(nil))

	_ = (gofs.NodeGetattrer)((*dataNode)(nil))
	_ = (gofs.NodeOpener)((*dataNode)(nil))
	_ = (gofs.NodeReader)((*dataNode)(nil))

	_ = (gofs.NodeGetattrer)((*linkNode)(nil))
	_ = (gofs.NodeReadlinker)((*linkNode)(nil))
)

// blockSize is the preferred I/O size reported to readers (st_blksize), so
// tools like cp read in large chunks.
const blockSize = 1 << 20

// fillAttr sets out from e. img, when given, overrides e.img (a newer
// version of the same content).
func (t *tree) fillAttr(e entry, img *Image, out *fuse.Attr) {
	mtime := e.mtime
	switch e.kind {
	case kindDir:
		out.Mode = syscall.S_IFDIR | 0o555
		out.Nlink = 2
		mtime = t.started
	case kindImage:
		if img == nil {
			img = e.img
		}
		out.Mode = syscall.S_IFREG | 0o444
		out.Size = uint64(img.Size)
		out.Nlink = 2 // by-id and the ISO view
		mtime = img.UpdatedAt
	case kindData:
		out.Mode = syscall.S_IFREG | 0o444
		out.Size = uint64(len(e.data))
		out.Nlink = 1
	case kindLink:
		out.Mode = syscall.S_IFLNK | 0o777
		out.Size = uint64(len(e.target))
		out.Nlink = 1
	}
	if mtime.IsZero() {
		mtime = t.started
	}
	out.Ino = e.ino
	out.Blocks = (out.Size + 511) / 512
	out.Blksize = blockSize
	out.SetTimes(&mtime, &mtime, &mtime)
}

// newNode makes the FUSE node for e.
func (t *tree) newNode(e entry) gofs.InodeEmbedder {
	switch e.kind {
	case kindDir:
		return &dirNode{t: t, path: e.path}
	case kindImage:
		return &imageNode{t: t, img: e.img}
	case kindLink:
		return &linkNode{t: t, e: e}
	default:
		return &dataNode{t: t, e: e}
	}
}

func stableMode(k kind) uint32 {
	switch k {
	case kindDir:
		return syscall.S_IFDIR
	case kindLink:
		return syscall.S_IFLNK
	default:
		return syscall.S_IFREG
	}
}

func (n *dirNode) Lookup(ctx context.Context, name string, out *fuse.EntryOut) (*gofs.Inode, syscall.Errno) {
	e, err := n.t.lookup(ctx, n.path, name)
	if err != nil {
		return nil, translateError(n.t.log, "lookup", err)
	}
	n.t.fillAttr(e, nil, &out.Attr)
	return n.NewInode(ctx, n.t.newNode(e), gofs.StableAttr{Mode: stableMode(e.kind), Ino: e.ino}), 0
}

func (n *dirNode) Readdir(ctx context.Context) (gofs.DirStream, syscall.Errno) {
	es, err := n.t.list(ctx, n.path)
	if err != nil {
		return nil, translateError(n.t.log, "readdir", err)
	}
	list := make([]fuse.DirEntry, len(es))
	for i, e := range es {
		list[i] = fuse.DirEntry{Name: e.name, Mode: stableMode(e.kind), Ino: e.ino}
	}
	return gofs.NewListDirStream(list), 0
}

func (n *dirNode) Getattr(ctx context.Context, f gofs.FileHandle, out *fuse.AttrOut) syscall.Errno {
	n.t.fillAttr(entry{kind: kindDir, ino: n.StableAttr().Ino, path: n.path}, nil, &out.Attr)
	return 0
}

// checkOpen refuses anything but a plain read-only open.
func checkOpen(flags uint32) syscall.Errno {
	if flags&syscall.O_ACCMODE != syscall.O_RDONLY || flags&syscall.O_TRUNC != 0 {
		return syscall.EROFS
	}
	return 0
}

func (n *imageNode) Getattr(ctx context.Context, f gofs.FileHandle, out *fuse.AttrOut) syscall.Errno {
	img := n.t.current(n.img)
	n.t.fillAttr(entry{kind: kindImage, ino: n.StableAttr().Ino, img: img}, img, &out.Attr)
	return 0
}

// source returns the node's byte source, opening it on first use.
func (n *imageNode) source(ctx context.Context) (cache.BlockSource, error) {
	n.mu.Lock()
	src := n.src
	n.mu.Unlock()
	if src != nil {
		return src, nil
	}
	src, err := n.t.source(ctx, n.img)
	if err != nil {
		return nil, err
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.src == nil {
		n.src = src
	}
	return n.src, nil
}

func (n *imageNode) Open(ctx context.Context, flags uint32) (gofs.FileHandle, uint32, syscall.Errno) {
	if errno := checkOpen(flags); errno != 0 {
		return nil, 0, errno
	}
	if _, err := n.source(ctx); err != nil {
		return nil, 0, translateError(n.t.log, "open", err)
	}
	if n.t.cfg.DirectIO {
		return nil, fuse.FOPEN_DIRECT_IO, 0
	}
	// Active Glance images never change, and the inode number covers the
	// checksum, so the page cache may outlive a close.
	return nil, fuse.FOPEN_KEEP_CACHE, 0
}

func (n *imageNode) Read(ctx context.Context, f gofs.FileHandle, dest []byte, off int64) (fuse.ReadResult, syscall.Errno) {
	if t := n.failedAt.Load(); t != 0 && time.Since(time.Unix(0, t)) < recentFailure {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, shortWait)
		defer cancel()
	}
	src, err := n.source(ctx)
	if err == nil {
		var k int
		k, err = n.t.readImage(ctx, src, n.img, dest, off)
		if err == nil {
			n.failedAt.Store(0)
			return fuse.ReadResultData(dest[:k]), 0
		}
	}
	errno := translateError(n.t.log, "read", err)
	if errno == syscall.EIO {
		n.failedAt.Store(time.Now().UnixNano())
	}
	return nil, errno
}

func (n *imageNode) Getxattr(ctx context.Context, attr string, dest []byte) (uint32, syscall.Errno) {
	return getxattr(imageXattrs(n.t.current(n.img)), attr, dest)
}

func (n *imageNode) Listxattr(ctx context.Context, dest []byte) (uint32, syscall.Errno) {
	return listxattr(imageXattrs(n.t.current(n.img)), dest)
}

// getxattr follows getxattr(2): a too small dest gets ERANGE and the size.
func getxattr(xs []xattr, name string, dest []byte) (uint32, syscall.Errno) {
	for _, x := range xs {
		if x.name == name {
			if len(dest) < len(x.value) {
				return uint32(len(x.value)), syscall.ERANGE
			}
			return uint32(copy(dest, x.value)), 0
		}
	}
	return 0, syscall.ENODATA
}

// listxattr follows listxattr(2): NUL-terminated names.
func listxattr(xs []xattr, dest []byte) (uint32, syscall.Errno) {
	var b []byte
	for _, x := range xs {
		b = append(append(b, x.name...), 0)
	}
	if len(dest) < len(b) {
		return uint32(len(b)), syscall.ERANGE
	}
	return uint32(copy(dest, b)), 0
}

func (n *dataNode) Getattr(ctx context.Context, f gofs.FileHandle, out *fuse.AttrOut) syscall.Errno {
	n.t.fillAttr(n.e, nil, &out.Attr)
	return 0
}

func (n *dataNode) Open(ctx context.Context, flags uint32) (gofs.FileHandle, uint32, syscall.Errno) {
	if errno := checkOpen(flags); errno != 0 {
		return nil, 0, errno
	}
	// The inode number covers the content, so cached pages stay valid.
	return nil, fuse.FOPEN_KEEP_CACHE, 0
}

func (n *dataNode) Read(ctx context.Context, f gofs.FileHandle, dest []byte, off int64) (fuse.ReadResult, syscall.Errno) {
	return fuse.ReadResultData(sliceAt(n.e.data, dest, off)), 0
}

// sliceAt copies data[off:] into dest and returns the filled part.
func sliceAt(data, dest []byte, off int64) []byte {
	if off < 0 || off >= int64(len(data)) {
		return dest[:0]
	}
	return dest[:copy(dest, data[off:])]
}

func (n *linkNode) Getattr(ctx context.Context, f gofs.FileHandle, out *fuse.AttrOut) syscall.Errno {
	n.t.fillAttr(n.e, nil, &out.Attr)
	return 0
}

func (n *linkNode) Readlink(ctx context.Context) ([]byte, syscall.Errno) {
	return []byte(n.e.target), 0
}
