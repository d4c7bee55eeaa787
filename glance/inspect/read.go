package inspect

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
)

// Limits that bound what a hostile image can make Detect do.
const (
	headSize     = 64 << 10 // first bytes every probe looks at
	maxTotalRead = 8 << 20  // all reads of one Detect together
	maxOneRead   = 2 << 20  // one read (a qcow2 header cluster at most)
	maxReasons   = 16       // Unsafe entries kept
)

// errBudget means the image asked for more reading than any sane header
// needs; the caller reports it as unsafe, not as an I/O failure.
var errBudget = errors.New("inspect: header read budget exhausted")

// reader reads bounded pieces of the image, clamped to its declared size.
// It keeps the first read (the head) and serves later reads inside it from
// memory: over Glance every read is a request of about 10 ms, and most
// header structures (qcow2 cluster, VMDK descriptor, ISO volume descriptor)
// lie in the first 64 KiB.
type reader struct {
	r      io.ReaderAt
	size   int64
	budget int64
	head   []byte
}

// read returns up to n bytes at off: fewer when the image ends first, none
// when off is past the end. Callers must not modify the bytes. It fails with errBudget when n exceeds the
// per-read or total limit, and with a wrapped error when the source is
// shorter than the declared size or the read fails.
func (rd *reader) read(off int64, n int) ([]byte, error) {
	if off < 0 || n < 0 {
		return nil, fmt.Errorf("%w: read %d bytes at %d", errBudget, n, off)
	}
	if off >= rd.size {
		return nil, nil
	}
	if int64(n) > rd.size-off {
		n = int(rd.size - off)
	}
	if off+int64(n) <= int64(len(rd.head)) {
		return rd.head[off : off+int64(n) : off+int64(n)], nil
	}
	if n > maxOneRead || int64(n) > rd.budget {
		return nil, fmt.Errorf("%w: read %d bytes at %d", errBudget, n, off)
	}
	rd.budget -= int64(n)
	p := make([]byte, n)
	got, err := rd.r.ReadAt(p, off)
	if got == n {
		if off == 0 && rd.head == nil {
			rd.head = p
		}
		return p, nil
	}
	if err == nil || errors.Is(err, io.EOF) {
		err = io.ErrUnexpectedEOF
	}
	return nil, fmt.Errorf("inspect: read %d bytes at %d: %w", n, off, err)
}

// readFull is read that also reports whether all n bytes were there.
func (rd *reader) readFull(off int64, n int) ([]byte, bool, error) {
	p, err := rd.read(off, n)
	return p, err == nil && len(p) == n, err
}

// Byte-order helpers that tolerate short slices (they read zeros), so a
// truncated header never panics.
func be16(b []byte, off int) uint16 {
	if off < 0 || off+2 > len(b) {
		return 0
	}
	return binary.BigEndian.Uint16(b[off:])
}

func be32(b []byte, off int) uint32 {
	if off < 0 || off+4 > len(b) {
		return 0
	}
	return binary.BigEndian.Uint32(b[off:])
}

func be64(b []byte, off int) uint64 {
	if off < 0 || off+8 > len(b) {
		return 0
	}
	return binary.BigEndian.Uint64(b[off:])
}

func le16(b []byte, off int) uint16 {
	if off < 0 || off+2 > len(b) {
		return 0
	}
	return binary.LittleEndian.Uint16(b[off:])
}

func le32(b []byte, off int) uint32 {
	if off < 0 || off+4 > len(b) {
		return 0
	}
	return binary.LittleEndian.Uint32(b[off:])
}

func le64(b []byte, off int) uint64 {
	if off < 0 || off+8 > len(b) {
		return 0
	}
	return binary.LittleEndian.Uint64(b[off:])
}

// hasAt reports whether b holds magic at off.
func hasAt(b []byte, off int, magic string) bool {
	return off >= 0 && off+len(magic) <= len(b) && string(b[off:off+len(magic)]) == magic
}

// cstring returns b up to its first NUL.
func cstring(b []byte) string {
	for i, c := range b {
		if c == 0 {
			return string(b[:i])
		}
	}
	return string(b)
}
