package transfer

import (
	"errors"
	"fmt"
	"os"
	"sync/atomic"
	"unsafe"

	"golang.org/x/sys/unix"
)

// directAlign is the alignment O_DIRECT needs of offsets, lengths and
// memory (the largest logical block size in use).
const directAlign = 4096

// volumeWriter writes an import's temporary file. Aligned writes go
// through a second descriptor opened with O_DIRECT: the bytes go from the
// copy's buffers to the disk, not through gigabytes of fresh page cache
// (in a VM, touching new page-cache memory cost more CPU than sha512), and
// the final fsync has little left to do. That is what VDSM's own copies do
// (dd oflag=direct, qemu-img -t none). Other writes, the unaligned tail or
// a file system that refuses O_DIRECT, go through the page cache, with
// their writeback started at once.
type volumeWriter struct {
	f      *os.File
	direct *os.File // nil without O_DIRECT
	noDir  atomic.Bool
}

// newVolumeWriter wraps f, a regular file opened for writing.
func newVolumeWriter(f *os.File) *volumeWriter {
	w := &volumeWriter{f: f}
	// Reopen the same inode (not the same name) with O_DIRECT.
	fd, err := unix.Open(fmt.Sprintf("/proc/self/fd/%d", f.Fd()), unix.O_WRONLY|unix.O_DIRECT|unix.O_CLOEXEC, 0)
	if err == nil {
		w.direct = os.NewFile(uintptr(fd), f.Name())
	}
	return w
}

// Direct reports whether aligned writes bypass the page cache.
func (w *volumeWriter) Direct() bool { return w.direct != nil && !w.noDir.Load() }

func (w *volumeWriter) WriteAt(p []byte, off int64) (int, error) {
	if w.Direct() && aligned(p, off) {
		n, err := w.direct.WriteAt(p, off)
		if !errors.Is(err, unix.EINVAL) {
			return n, err
		}
		// The file system takes O_DIRECT opens but not these writes.
		w.noDir.Store(true)
	}
	n, err := w.f.WriteAt(p, off)
	if err == nil {
		// Advice only: start writing to disk now, not all at the fsync.
		_ = unix.SyncFileRange(int(w.f.Fd()), off, int64(n), unix.SYNC_FILE_RANGE_WRITE)
	}
	return n, err
}

// Close closes the O_DIRECT descriptor; f stays the caller's.
func (w *volumeWriter) Close() error {
	if w.direct == nil {
		return nil
	}
	return w.direct.Close()
}

func aligned(p []byte, off int64) bool {
	return len(p) > 0 && off%directAlign == 0 && len(p)%directAlign == 0 &&
		uintptr(unsafe.Pointer(&p[0]))%directAlign == 0
}

// alignedBuf returns n bytes starting at a directAlign boundary.
func alignedBuf(n int) []byte {
	b := make([]byte, n+directAlign)
	skip := (directAlign - int(uintptr(unsafe.Pointer(&b[0]))%directAlign)) % directAlign
	return b[skip : skip+n]
}
