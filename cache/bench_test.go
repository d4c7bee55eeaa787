package cache_test

import (
	"context"
	"testing"

	"github.com/glancegw/glancegw/cache"
	"github.com/glancegw/glancegw/cache/cachetest"
)

// BenchmarkSequentialRead reads a MemSource front to back through the
// cache (default 1 MiB blocks and read-ahead) in 128 KiB reads, like a FUSE
// reader. cold: the source is 4× the cache, so every block is fetched;
// warm: the source fits and is read again and again.
func BenchmarkSequentialRead(b *testing.B) {
	for _, bc := range []struct {
		name           string
		size, maxBytes int64
	}{
		{"cold", 256 << 20, 64 << 20},
		{"warm", 32 << 20, 64 << 20},
	} {
		b.Run(bc.name, func(b *testing.B) {
			data := make([]byte, bc.size)
			for i := range data {
				data[i] = byte(i*7 + 1)
			}
			c := newCache(b, cache.Config{MaxBytes: bc.maxBytes})
			v := c.Open(cachetest.NewMemSource(data))
			p := make([]byte, 128<<10)
			ctx := context.Background()
			b.SetBytes(int64(len(p)))
			b.ReportAllocs()
			b.ResetTimer()
			var off int64
			for range b.N {
				if off >= bc.size {
					off = 0
				}
				if _, err := v.ReadAt(ctx, p, off); err != nil {
					b.Fatal(err)
				}
				off += int64(len(p))
			}
			b.StopTimer()
			s := c.Stats()
			b.ReportMetric(float64(s.Fetches)/float64(b.N), "fetches/op")
		})
	}
}
