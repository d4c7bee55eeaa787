package transfer

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"
)

// The volume writer puts aligned writes through O_DIRECT and the rest
// (the unaligned tail, misaligned memory) through the page cache; the file
// reads back the same either way.
func TestVolumeWriter(t *testing.T) {
	for _, direct := range []bool{true, false} {
		path := filepath.Join(t.TempDir(), "vol")
		f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
		if err != nil {
			t.Fatal(err)
		}
		w := newVolumeWriter(f)
		if direct && !w.Direct() {
			t.Logf("SKIPPING the O_DIRECT half: the file system of %s refuses O_DIRECT", path)
			w.Close()
			f.Close()
			continue
		}
		if !direct {
			w.Close()
			w = &volumeWriter{f: f} // as when O_DIRECT cannot be opened
		}
		want := make([]byte, 3*directAlign+100)
		for i := range want {
			want[i] = byte(i*7 + 1)
		}
		buf := alignedBuf(len(want) + 1)
		copy(buf, want)
		if !aligned(buf[:directAlign], 0) || aligned(buf[1:directAlign+1], 0) || aligned(buf[:100], 0) {
			t.Fatal("aligned() disagrees with alignedBuf")
		}
		// Aligned head, unaligned tail, and a misaligned buffer at an
		// aligned offset.
		writes := []struct {
			p   []byte
			off int64
		}{
			{buf[:2*directAlign], 0},
			{buf[3*directAlign : len(want)], 3 * directAlign},
		}
		mis := make([]byte, directAlign+1)
		copy(mis[1:], want[2*directAlign:3*directAlign])
		writes = append(writes, struct {
			p   []byte
			off int64
		}{mis[1:], 2 * directAlign})
		for _, wr := range writes {
			if n, err := w.WriteAt(wr.p, wr.off); err != nil || n != len(wr.p) {
				t.Fatalf("direct=%v: WriteAt(%d bytes at %d) = %d, %v", direct, len(wr.p), wr.off, n, err)
			}
		}
		if err := w.Close(); err != nil {
			t.Fatal(err)
		}
		if direct && !w.Direct() {
			t.Errorf("O_DIRECT was dropped after an aligned write")
		}
		f.Close()
		got, err := os.ReadFile(path)
		if err != nil || !bytes.Equal(got, want) {
			t.Fatalf("direct=%v: file differs from what was written (err %v)", direct, err)
		}
	}
}
