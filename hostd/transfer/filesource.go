package transfer

import (
	"context"
	"fmt"
	"io"
	"os"
	"syscall"

	"github.com/glancegw/glancegw/cache"
)

// FileSource is a local file as a cache.BlockSource. Its size is fixed when
// it is made; its identity names the file (device, inode) and its version
// (size, mtime), so a rewritten volume gets a new identity.
type FileSource struct {
	f    *os.File
	size int64
	id   string
}

var _ cache.BlockSource = (*FileSource)(nil)

// NewFileSource serves f, which the source owns from now on (Close closes
// it).
func NewFileSource(f *os.File) (*FileSource, error) {
	fi, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("transfer: stat %s: %w", f.Name(), err)
	}
	id := fmt.Sprintf("file:%s@%d", f.Name(), fi.ModTime().UnixNano())
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		id = fmt.Sprintf("file:%d:%d@%d.%d/%d", st.Dev, st.Ino, st.Mtim.Sec, st.Mtim.Nsec, fi.Size())
	}
	return &FileSource{f: f, size: fi.Size(), id: id}, nil
}

// ReadAt reads len(p) bytes at off (io.ReaderAt contract; io.EOF at the
// end).
func (s *FileSource) ReadAt(ctx context.Context, p []byte, off int64) (int, error) {
	if err := ctx.Err(); err != nil {
		return 0, err
	}
	if off < 0 {
		return 0, fmt.Errorf("transfer: read %s at %d: negative offset", s.f.Name(), off)
	}
	if off >= s.size {
		if len(p) == 0 {
			return 0, nil
		}
		return 0, io.EOF
	}
	want := len(p)
	if rest := s.size - off; int64(want) > rest {
		want = int(rest)
	}
	n, err := s.f.ReadAt(p[:want], off)
	if n < want {
		if err == nil || err == io.EOF {
			// The file shrank under us.
			err = fmt.Errorf("transfer: read %s at %d: file shorter than its size %d: %w", s.f.Name(), off, s.size, io.ErrUnexpectedEOF)
		}
		return n, err
	}
	if want < len(p) {
		return n, io.EOF
	}
	return n, nil
}

// Size is the file size when the source was made.
func (s *FileSource) Size() int64 { return s.size }

// Identity names the file and its version.
func (s *FileSource) Identity() string { return s.id }

// Close closes the file.
func (s *FileSource) Close() error { return s.f.Close() }
