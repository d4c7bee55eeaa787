package fs

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"path"
	"sort"
	"sync"
	"time"

	"github.com/glancegw/glancegw/cache"
)

// tree is the filesystem logic without FUSE: names, listings and reads. The
// FUSE nodes are thin adapters over it, and tests drive it directly.
type tree struct {
	d   Domain
	cat *catalog
	cfg Config
	log *slog.Logger
	sd  string // escaped sdUUID: the name of the domain's directory
	md  string // path of the dom_md directory

	started time.Time // mtime of directories

	mu   sync.Mutex
	srcs map[string]cache.BlockSource // by imageKey; opened once, reused
}

func newTree(base context.Context, d Domain, cfg Config, log *slog.Logger, now func() time.Time) *tree {
	t := &tree{d: d, cfg: cfg, log: log, srcs: map[string]cache.BlockSource{}, started: now()}
	t.cat = newCatalog(base, d, cfg, log, now)
	t.sd = sdDirName(t.cat.info)
	t.md = path.Join(t.sd, "dom_md")
	t.cat.onFresh = t.prune
	return t
}

// viewFor returns the view to answer about directory dir: directories whose
// content comes from the listing want a fresh one, the others do not.
func (t *tree) viewFor(ctx context.Context, dir string) (*view, error) {
	if !listsImages(t.sd, dir) {
		return t.cat.peek(), nil
	}
	return t.cat.get(ctx)
}

// lookup finds name in dir. A miss in a listed directory lists the domain
// again (rate-limited), so a new image shows up on its first lookup.
func (t *tree) lookup(ctx context.Context, dir, name string) (entry, error) {
	if dir == t.md && name == "metadata" {
		return t.metadata(), nil
	}
	v, err := t.viewFor(ctx, dir)
	if err != nil {
		return entry{}, err
	}
	if e, ok := v.lookup(dir, name); ok {
		return e, nil
	}
	if listsImages(t.sd, dir) {
		v, listed, err := t.cat.miss(ctx)
		if err != nil {
			return entry{}, err
		}
		if listed {
			if e, ok := v.lookup(dir, name); ok {
				return e, nil
			}
		}
	}
	return entry{}, fmt.Errorf("fs: lookup %q in %q: %w", name, dir, ErrNotFound)
}

// list returns the entries of directory dir, sorted by name.
func (t *tree) list(ctx context.Context, dir string) ([]entry, error) {
	v, err := t.viewFor(ctx, dir)
	if err != nil {
		return nil, err
	}
	es, ok := v.dirs[dir]
	if !ok {
		return nil, fmt.Errorf("fs: list %q: %w", dir, ErrNotFound)
	}
	if dir == t.md {
		return []entry{t.metadata()}, nil
	}
	return es, nil
}

// metadata is dom_md/metadata as the domain is now, not as it was at the
// last listing: an edit of the domain (name, URL) shows without a remount.
// The inode number covers the content, so the kernel drops the old pages
// once the name's entry expires.
func (t *tree) metadata() entry {
	md := metadataFile(t.d.Info())
	return entry{name: "metadata", kind: kindData, data: md, path: path.Join(t.md, "metadata"),
		ino: inoOf("data", "dom_md/metadata", string(md))}
}

// current returns the newest known version of img (same content, maybe new
// name or times), or img itself once it left the listing.
func (t *tree) current(img *Image) *Image {
	if cur := t.cat.peek().images[img.ID]; cur != nil && imageKey(cur) == imageKey(img) {
		return cur
	}
	return img
}

// source opens img's bytes once and reuses them.
func (t *tree) source(ctx context.Context, img *Image) (cache.BlockSource, error) {
	key := imageKey(img)
	t.mu.Lock()
	src := t.srcs[key]
	t.mu.Unlock()
	if src != nil {
		return src, nil
	}
	src, err := t.d.Open(ctx, *img)
	if err != nil {
		return nil, fmt.Errorf("fs: open image %s: %w", img.ID, err)
	}
	if src.Size() < img.Size {
		return nil, fmt.Errorf("fs: open image %s: size %d < %d: %w", img.ID, src.Size(), img.Size, ErrShortSource)
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if old := t.srcs[key]; old != nil { // a concurrent open won
		return old, nil
	}
	t.srcs[key] = src
	return src, nil
}

// prune forgets the sources of images that left the listing. Open files
// keep their own reference.
func (t *tree) prune(v *view) {
	keep := make(map[string]bool, len(v.images))
	for _, img := range v.images {
		keep[imageKey(img)] = true
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	for k := range t.srcs {
		if !keep[k] {
			delete(t.srcs, k)
		}
	}
}

// readImage fills p from img at off, clipped at img.Size. It returns n <
// len(p) only at the end of the image (with a nil error) or with an error.
func (t *tree) readImage(ctx context.Context, src cache.BlockSource, img *Image, p []byte, off int64) (int, error) {
	if off < 0 {
		return 0, fmt.Errorf("fs: read %s@%d: negative offset", img.ID, off)
	}
	if off >= img.Size {
		return 0, nil
	}
	if rest := img.Size - off; int64(len(p)) > rest {
		p = p[:rest]
	}
	ctx, cancel := context.WithTimeout(ctx, t.cfg.ReadTimeout)
	defer cancel()
	n, err := src.ReadAt(ctx, p, off)
	if errors.Is(err, io.EOF) {
		if n == len(p) {
			return n, nil
		}
		err = ErrShortSource
	}
	if err != nil {
		return n, fmt.Errorf("fs: read %s@%d+%d: %w", img.ID, off, len(p), err)
	}
	return n, nil
}

// xattr is one extended attribute of an image file.
type xattr struct{ name, value string }

// imageXattrs lists the user.glance.* attributes img has, sorted by name.
// Unknown values are left out rather than shown empty.
func imageXattrs(img *Image) []xattr {
	var xs []xattr
	add := func(name, value string) {
		if value != "" {
			xs = append(xs, xattr{"user.glance." + name, value})
		}
	}
	add("id", img.ID)
	add("disk_format", img.DiskFormat)
	add("checksum", img.Checksum)
	add("os_hash_algo", img.OSHashAlgo)
	add("os_hash_value", img.OSHashValue)
	if img.VirtualSize > 0 {
		add("virtual_size", fmt.Sprint(img.VirtualSize))
	}
	sort.Slice(xs, func(i, j int) bool { return xs[i].name < xs[j].name })
	return xs
}
