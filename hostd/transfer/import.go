package transfer

import (
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/glancegw/glancegw/cache"
	"github.com/glancegw/glancegw/glance/inspect"
	"golang.org/x/sys/unix"
)

// ImportSpec is one import.
type ImportSpec struct {
	Volume Volume
	Source cache.BlockSource
	// SourceURL names the source in the .meta file and messages. It must
	// carry no credentials (see RedactURL).
	SourceURL string
	// Expect is the digest the bytes must have; zero means the source gave
	// none and the copy is not verified (the .meta says so).
	Expect    Checksum
	Overwrite bool
	// Progress, if set, is called with the bytes read from the source as
	// they arrive, at most 1 MiB at a time.
	Progress func(n int64)
	// Retrying, if set, is told of every failed source read (inspection
	// included) before the engine waits to try it again, and called with
	// nil once a retried read went through.
	Retrying func(r *Retry)
}

// Meta is the <volUUID>.meta file written after a verified import.
type Meta struct {
	Format      string `json:"format"`
	VirtualSize int64  `json:"virtual_size"`
	Size        int64  `json:"size"`
	Source      string `json:"source"`
	// Checksum is what the bytes were verified against, or computed
	// (unverified) when the source gave none.
	Checksum Checksum  `json:"checksum"`
	Verified bool      `json:"verified"`
	Note     string    `json:"note,omitempty"`
	Created  time.Time `json:"created"`
	// Written counts the bytes actually written; the rest are holes.
	Written int64 `json:"written_bytes"`
}

// NoChecksumNote explains an unverified import.
const NoChecksumNote = "source gave no checksum: the copy is not verified"

// Inspect detects src's format (reading headers only, with the engine's
// retries), and refuses an unsafe image with an ErrUnsafe error.
func (e *Engine) Inspect(ctx context.Context, src cache.BlockSource, what string) (inspect.Result, error) {
	return e.inspect(ctx, src, what, nil)
}

// inspect is Inspect telling retry of its retries (see ImportSpec.Retrying).
func (e *Engine) inspect(ctx context.Context, src cache.BlockSource, what string, retry func(*Retry)) (inspect.Result, error) {
	res, err := inspect.Detect(inspect.ReaderAtFunc(func(p []byte, off int64) (int, error) {
		return e.readAt(ctx, src, p, off, retry)
	}), src.Size())
	if err != nil {
		if ctx.Err() != nil {
			return res, context.Cause(ctx)
		}
		return res, fmt.Errorf("transfer: inspect %s: %w", what, err)
	}
	if err := res.Safe(); err != nil {
		return res, fmt.Errorf("transfer: %s: %w: %w", what, ErrUnsafe, err)
	}
	return res, nil
}

// Import inspects the source, copies it into a temporary file beside the
// volume (parallel, sparse, hashing in offset order), checks the digest,
// then fsyncs, renames, fsyncs the directory and writes the .meta file. On
// any failure or cancellation the temporary file is removed and no volume
// is left.
func (e *Engine) Import(ctx context.Context, spec ImportSpec) (Meta, error) {
	v, src := spec.Volume, spec.Source
	size := src.Size()
	res, err := e.inspect(ctx, src, spec.SourceURL, spec.Retrying)
	if err != nil {
		return Meta{}, err
	}
	dirfd, created, err := v.openDir(true)
	keep := false
	defer func() {
		if !keep {
			removeDirs(created)
		}
	}()
	if err != nil {
		return Meta{}, err
	}
	defer unix.Close(dirfd)
	if err := v.checkTarget(dirfd, spec.Overwrite); err != nil {
		return Meta{}, err
	}
	var sfs unix.Statfs_t
	if err := unix.Fstatfs(dirfd, &sfs); err != nil {
		return Meta{}, fmt.Errorf("transfer: statfs %s: %w", v.Dir(), err)
	}
	// Holes may make the volume smaller, but a full image must fit.
	if free := int64(sfs.Bavail) * int64(sfs.Bsize); free < size+e.cfg.FreeMargin {
		return Meta{}, fmt.Errorf("transfer: %s has %d bytes free, the image needs %d (+%d margin): %w",
			v.Dir(), free, size, e.cfg.FreeMargin, ErrNoSpace)
	}

	f, tmp, err := createTemp(dirfd, v.Dir(), v.VolumeID, e.cfg.FileMode)
	if err != nil {
		return Meta{}, err
	}
	defer func() {
		if !keep {
			f.Close()
			unix.Unlinkat(dirfd, tmp, 0)
		}
	}()

	algo := spec.Expect.Algo
	if spec.Expect.IsZero() {
		algo = "sha512" // recorded, not verified
	}
	h := newHash(algo)
	if h == nil {
		return Meta{}, fmt.Errorf("transfer: unknown checksum algorithm %q: %w", algo, ErrInvalid)
	}
	start := time.Now()
	w := newVolumeWriter(f)
	st, err := e.copyVerified(ctx, src, w, h, watch{moved: spec.Progress, retry: spec.Retrying})
	w.Close()
	if err != nil {
		if ctx.Err() != nil {
			err = fmt.Errorf("transfer: import %s: %w", v.Path(), context.Cause(ctx))
		}
		return Meta{}, err
	}
	got := hex.EncodeToString(h.Sum(nil))
	meta := Meta{
		Format: res.Format, VirtualSize: res.VirtualSize, Size: size, Source: spec.SourceURL,
		Checksum: Checksum{Algo: algo, Value: got}, Created: time.Now().UTC(), Written: st.written,
	}
	if spec.Expect.IsZero() {
		meta.Note = NoChecksumNote
	} else {
		if got != strings.ToLower(spec.Expect.Value) {
			return Meta{}, fmt.Errorf("transfer: import %s: %s of the copy is %s, the source says %s: %w",
				spec.SourceURL, algo, got, spec.Expect.Value, ErrChecksum)
		}
		meta.Verified = true
	}
	if err := f.Truncate(size); err != nil {
		return Meta{}, fmt.Errorf("transfer: truncate %s: %w", f.Name(), err)
	}
	if err := f.Sync(); err != nil {
		return Meta{}, fmt.Errorf("transfer: fsync %s: %w", f.Name(), err)
	}
	if err := f.Close(); err != nil {
		return Meta{}, fmt.Errorf("transfer: close %s: %w", f.Name(), err)
	}
	if spec.Overwrite {
		// An old .meta must not describe the new bytes.
		if err := unix.Unlinkat(dirfd, v.VolumeID+".meta", 0); err != nil && !errors.Is(err, unix.ENOENT) {
			return Meta{}, fmt.Errorf("transfer: remove old %s: %w", v.MetaPath(), err)
		}
		err = unix.Renameat(dirfd, tmp, dirfd, v.VolumeID)
	} else {
		err = unix.Renameat2(dirfd, tmp, dirfd, v.VolumeID, unix.RENAME_NOREPLACE)
		if errors.Is(err, unix.EEXIST) {
			err = fmt.Errorf("created meanwhile: %w", ErrExists)
		}
	}
	if err != nil {
		return Meta{}, fmt.Errorf("transfer: rename to %s: %w", v.Path(), err)
	}
	keep = true
	if err := unix.Fsync(dirfd); err != nil {
		return meta, fmt.Errorf("transfer: fsync %s: %w", v.Dir(), err)
	}
	if err := writeMeta(dirfd, v, meta, e.cfg.FileMode); err != nil {
		return meta, err
	}
	el := time.Since(start)
	e.log.Info("import done", "volume", v.Path(), "source", spec.SourceURL, "bytes", size,
		"written", st.written, "retries", st.retries, "verified", meta.Verified, "direct_io", w.Direct(),
		"seconds", el.Seconds(), "mb_per_s", float64(size)/el.Seconds()/1e6)
	return meta, nil
}

// writeMeta writes <vol>.meta atomically (temp, fsync, rename, fsync dir).
func writeMeta(dirfd int, v Volume, m Meta, mode uint32) error {
	b, err := json.MarshalIndent(m, "", "  ")
	if err != nil {
		return fmt.Errorf("transfer: encode %s: %w", v.MetaPath(), err)
	}
	f, tmp, err := createTemp(dirfd, v.Dir(), v.VolumeID+".meta", mode)
	if err != nil {
		return err
	}
	ok := false
	defer func() {
		if !ok {
			f.Close()
			unix.Unlinkat(dirfd, tmp, 0)
		}
	}()
	if _, err := f.Write(append(b, '\n')); err != nil {
		return fmt.Errorf("transfer: write %s: %w", v.MetaPath(), err)
	}
	if err := f.Sync(); err != nil {
		return fmt.Errorf("transfer: fsync %s: %w", v.MetaPath(), err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("transfer: close %s: %w", v.MetaPath(), err)
	}
	if err := unix.Renameat(dirfd, tmp, dirfd, v.VolumeID+".meta"); err != nil {
		return fmt.Errorf("transfer: rename to %s: %w", v.MetaPath(), err)
	}
	ok = true
	if err := unix.Fsync(dirfd); err != nil {
		return fmt.Errorf("transfer: fsync %s: %w", v.Dir(), err)
	}
	return nil
}
