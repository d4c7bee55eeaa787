package fs

import (
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"math/rand"
	"sync"
	"sync/atomic"
	"time"

	"github.com/glancegw/glancegw/cache"
)

// memSource is an in-memory BlockSource; err, when set, fails every read.
type memSource struct {
	id   string
	data []byte
	err  error
}

func (m *memSource) ReadAt(ctx context.Context, p []byte, off int64) (int, error) {
	if m.err != nil {
		return 0, m.err
	}
	if err := ctx.Err(); err != nil {
		return 0, err
	}
	if off >= int64(len(m.data)) {
		return 0, io.EOF
	}
	n := copy(p, m.data[off:])
	if n < len(p) {
		return n, io.EOF
	}
	return n, nil
}

func (m *memSource) Size() int64      { return int64(len(m.data)) }
func (m *memSource) Identity() string { return m.id }

// goneError is how a lower layer says "deleted" (it has NotFound()).
type goneError struct{ what string }

func (e goneError) Error() string  { return e.what + " is gone" }
func (e goneError) NotFound() bool { return true }

// fakeDomain is a Domain whose listing and bytes tests change at will.
type fakeDomain struct {
	info DomainInfo

	mu       sync.Mutex
	imgs     []Image
	data     map[string][]byte
	openErr  map[string]error
	readErr  map[string]error
	listErr  error
	listHook func() // runs inside Images, e.g. to block

	lists atomic.Int64
	opens atomic.Int64
}

func newFakeDomain() *fakeDomain {
	return &fakeDomain{
		info: DomainInfo{UUID: "6d1b2f3c-0a4e-4c4f-9a53-1c2d3e4f5a6b", Name: "test-dom",
			URL: "http://glance.example:9292", Description: "fake domain"},
		data: map[string][]byte{}, openErr: map[string]error{}, readErr: map[string]error{},
	}
}

func (f *fakeDomain) Info() DomainInfo {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.info
}

// setInfo changes the domain's description, as an edit of the domain does.
func (f *fakeDomain) setInfo(info DomainInfo) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.info = info
}

func (f *fakeDomain) Images(ctx context.Context, refresh bool) ([]Image, error) {
	f.lists.Add(1)
	f.mu.Lock()
	hook, err := f.listHook, f.listErr
	out := append([]Image(nil), f.imgs...)
	f.mu.Unlock()
	if hook != nil {
		hook()
	}
	if err != nil {
		return nil, err
	}
	return out, ctx.Err()
}

func (f *fakeDomain) Open(ctx context.Context, img Image) (cache.BlockSource, error) {
	f.opens.Add(1)
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.openErr[img.ID]; err != nil {
		return nil, err
	}
	d, ok := f.data[img.ID]
	if !ok {
		return nil, goneError{"image " + img.ID}
	}
	return &memSource{id: img.ID + "@" + img.Checksum, data: d, err: f.readErr[img.ID]}, nil
}

// add puts an image with size bytes of seeded random content in the listing.
func (f *fakeDomain) add(img Image, size int, seed int64) Image {
	d := make([]byte, size+8)
	rng := rand.New(rand.NewSource(seed))
	for i := 0; i < size; i += 8 {
		binary.LittleEndian.PutUint64(d[i:], rng.Uint64())
	}
	d = d[:size]
	if img.Status == "" {
		img.Status = statusActive
	}
	img.Size = int64(size)
	if img.Checksum == "" {
		img.Checksum = fmt.Sprintf("%032x", seed)
	}
	if img.UpdatedAt.IsZero() {
		img.UpdatedAt = time.Date(2024, 5, 6, 7, 8, 9, 0, time.UTC)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.imgs = append(f.imgs, img)
	f.data[img.ID] = d
	return img
}

func (f *fakeDomain) remove(id string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	for i, img := range f.imgs {
		if img.ID == id {
			f.imgs = append(f.imgs[:i], f.imgs[i+1:]...)
			return
		}
	}
}

func (f *fakeDomain) bytes(id string) []byte {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.data[id]
}

// fakeClock is a settable clock for the catalog's timing rules.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *fakeClock) now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}
