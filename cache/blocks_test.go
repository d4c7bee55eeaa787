package cache

import "testing"

func TestSpanOf(t *testing.T) {
	const bs = 100
	tests := []struct {
		name        string
		off         int64
		plen        int
		size        int64
		n           int
		first, last int64
		eof         bool
	}{
		{"inside one block", 10, 20, 1000, 20, 0, 0, false},
		{"whole first block", 0, 100, 1000, 100, 0, 0, false},
		{"head body tail", 50, 300, 1000, 300, 0, 3, false},
		{"aligned body", 100, 200, 1000, 200, 1, 2, false},
		{"ends on boundary", 150, 50, 1000, 50, 1, 1, false},
		{"last short block", 1000, 30, 1030, 30, 10, 10, false},
		{"crosses end", 990, 100, 1030, 40, 9, 10, true},
		{"exactly to end", 930, 100, 1030, 100, 9, 10, false},
		{"at end", 1030, 10, 1030, 0, 0, -1, true},
		{"past end", 5000, 10, 1030, 0, 0, -1, true},
		{"zero length inside", 10, 0, 1000, 0, 0, -1, false},
		{"zero length at end", 1000, 0, 1000, 0, 0, -1, false},
		{"empty source", 0, 10, 0, 0, 0, -1, true},
		{"empty source zero length", 0, 0, 0, 0, 0, -1, false},
		{"one byte source", 0, 10, 1, 1, 0, 0, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := spanOf(tt.off, tt.plen, tt.size, bs)
			want := span{n: tt.n, first: tt.first, last: tt.last, eof: tt.eof}
			if s != want {
				t.Errorf("spanOf(%d, %d, %d) = %+v, want %+v", tt.off, tt.plen, tt.size, s, want)
			}
		})
	}
}

func TestPiece(t *testing.T) {
	const bs = 100
	tests := []struct {
		name                string
		b, off              int64
		n                   int
		blkOff, dstOff, cnt int
	}{
		{"head", 0, 50, 300, 50, 0, 50},
		{"body", 1, 50, 300, 0, 50, 100},
		{"tail", 3, 50, 300, 0, 250, 50},
		{"inside", 2, 210, 20, 10, 0, 20},
		{"whole aligned", 4, 400, 100, 0, 0, 100},
		{"short read in last block", 10, 1000, 30, 0, 0, 30},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			bo, do, c := piece(tt.b, tt.off, tt.n, bs)
			if bo != tt.blkOff || do != tt.dstOff || c != tt.cnt {
				t.Errorf("piece(%d, %d, %d) = (%d, %d, %d), want (%d, %d, %d)",
					tt.b, tt.off, tt.n, bo, do, c, tt.blkOff, tt.dstOff, tt.cnt)
			}
		})
	}
}

// TestPiecesCover checks that the pieces of a span tile the read exactly.
func TestPiecesCover(t *testing.T) {
	const bs = 64
	for size := int64(0); size < 300; size += 37 {
		for off := int64(0); off <= size+10; off += 7 {
			for plen := 0; plen < 250; plen += 13 {
				s := spanOf(off, plen, size, bs)
				next := 0
				for b := s.first; b <= s.last; b++ {
					bo, do, c := piece(b, off, s.n, bs)
					if do != next || c <= 0 || bo+c > blockLen(b, size, bs) {
						t.Fatalf("size %d off %d len %d block %d: piece (%d,%d,%d), next %d",
							size, off, plen, b, bo, do, c, next)
					}
					next += c
				}
				if next != s.n {
					t.Fatalf("size %d off %d len %d: pieces cover %d, want %d", size, off, plen, next, s.n)
				}
			}
		}
	}
}

func TestNumBlocksAndBlockLen(t *testing.T) {
	tests := []struct {
		size    int64
		nblocks int64
		lastLen int
	}{
		{0, 0, 0},
		{1, 1, 1},
		{100, 1, 100},
		{101, 2, 1},
		{1000, 10, 100},
		{1030, 11, 30},
	}
	for _, tt := range tests {
		if got := numBlocks(tt.size, 100); got != tt.nblocks {
			t.Errorf("numBlocks(%d) = %d, want %d", tt.size, got, tt.nblocks)
		}
		if tt.nblocks > 0 {
			if got := blockLen(tt.nblocks-1, tt.size, 100); got != tt.lastLen {
				t.Errorf("blockLen(last of %d) = %d, want %d", tt.size, got, tt.lastLen)
			}
		}
		if got := blockLen(tt.nblocks, tt.size, 100); got != 0 {
			t.Errorf("blockLen(past end of %d) = %d, want 0", tt.size, got)
		}
	}
}

// FuzzSpan checks that the pieces of any read tile exactly the bytes that
// exist, each inside its block.
func FuzzSpan(f *testing.F) {
	f.Add(int64(50), 300, int64(1000), 100)
	f.Add(int64(0), 0, int64(0), 512)
	f.Add(int64(999), 10, int64(1000), 1)
	f.Fuzz(func(t *testing.T, off int64, plen int, size int64, bs int) {
		if off < 0 || plen < 0 || plen > 1<<20 || size < 0 || size > 1<<40 || bs <= 0 || bs > 1<<20 {
			t.Skip()
		}
		s := spanOf(off, plen, size, bs)
		want := int(max(min(int64(plen), size-off), 0))
		if s.n != want || s.eof != (plen > want) {
			t.Fatalf("spanOf(%d, %d, %d, %d) = %+v, want n %d", off, plen, size, bs, s, want)
		}
		next := 0
		for b := s.first; b <= s.last; b++ {
			bo, do, cnt := piece(b, off, s.n, bs)
			if do != next || cnt <= 0 || bo < 0 || bo+cnt > blockLen(b, size, bs) {
				t.Fatalf("block %d: piece (%d, %d, %d) after %d bytes", b, bo, do, cnt, next)
			}
			next += cnt
		}
		if next != s.n {
			t.Fatalf("pieces cover %d bytes, want %d", next, s.n)
		}
	})
}
