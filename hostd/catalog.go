package hostd

import (
	"context"
	"sync"
	"time"

	"github.com/glancegw/glancegw/fs"
	"github.com/glancegw/glancegw/glance"
)

// listing is one immutable answer of Glance with what is derived from it.
type listing struct {
	images []glance.Image
	fs     []fs.Image // same order as images
	byID   map[string]int
}

func newListing(imgs []glance.Image, toFS func(glance.Image) fs.Image) *listing {
	l := &listing{images: imgs, fs: make([]fs.Image, len(imgs)), byID: make(map[string]int, len(imgs))}
	for i, im := range imgs {
		l.fs[i] = toFS(im)
		l.byID[im.ID] = i
	}
	return l
}

// image returns the record with id.
func (l *listing) image(id string) (glance.Image, bool) {
	if l == nil {
		return glance.Image{}, false
	}
	i, ok := l.byID[id]
	if !ok {
		return glance.Image{}, false
	}
	return l.images[i], true
}

// catalog caches one domain's image listing. A listing younger than ttl is
// answered from memory; a forced refresh is honoured at most once per
// minInterval, so lookup misses from FUSE or NBD cannot hammer Glance.
// Listings are serialized: callers that waited for a running listing take
// its answer instead of starting another.
type catalog struct {
	ttl, minInterval time.Duration
	now              func() time.Time
	list             func(ctx context.Context) ([]glance.Image, error)
	toFS             func(glance.Image) fs.Image

	fetchMu sync.Mutex // held while listing

	mu      sync.Mutex // guards the fields below
	cur     *listing   // last successful listing, nil before one
	fetched time.Time  // when cur was listed
	tried   time.Time  // when the last finished listing started
	lastErr error      // error of the last listing, nil after a success
	gen     uint64     // counts finished listings
	epoch   uint64     // counts invalidations; a listing begun before one is dropped
}

func newCatalog(ttl, minInterval time.Duration, now func() time.Time,
	list func(ctx context.Context) ([]glance.Image, error), toFS func(glance.Image) fs.Image) *catalog {
	return &catalog{ttl: ttl, minInterval: minInterval, now: now, list: list, toFS: toFS}
}

// get returns the listing. With refresh false a listing younger than ttl is
// reused; with refresh true Glance is asked again unless it was asked less
// than minInterval ago. When a TTL refresh fails but an older listing exists,
// the older listing is returned (a brief Glance outage must not empty a
// mounted tree); a forced refresh reports the error.
func (c *catalog) get(ctx context.Context, refresh bool) (*listing, error) {
	c.mu.Lock()
	if l, err, ok := c.cachedLocked(refresh); ok {
		c.mu.Unlock()
		return l, err
	}
	gen := c.gen
	c.mu.Unlock()

	c.fetchMu.Lock()
	defer c.fetchMu.Unlock()

	c.mu.Lock()
	if c.gen != gen { // a listing finished while we waited; take its answer
		l, err := c.resultLocked(refresh)
		c.mu.Unlock()
		return l, err
	}
	started := c.now()
	epoch := c.epoch
	c.mu.Unlock()

	imgs, err := c.list(ctx)
	var l *listing
	if err == nil {
		l = newListing(imgs, c.toFS)
	}

	c.mu.Lock()
	defer c.mu.Unlock()
	if c.epoch != epoch { // invalidated meanwhile: answer, but don't keep it
		return l, err
	}
	c.gen++
	c.tried = started
	if err != nil {
		c.lastErr = err
		return c.resultLocked(refresh)
	}
	c.cur, c.fetched, c.lastErr = l, c.now(), nil
	return l, nil
}

// cachedLocked answers without listing when the rules allow it.
func (c *catalog) cachedLocked(refresh bool) (*listing, error, bool) {
	now := c.now()
	recent := !c.tried.IsZero() && now.Sub(c.tried) < c.minInterval
	switch {
	case c.cur != nil && !refresh && now.Sub(c.fetched) < c.ttl:
		return c.cur, nil, true
	case recent && (refresh || c.cur == nil):
		// Glance was asked just now; don't ask again within minInterval.
		l, err := c.resultLocked(refresh)
		return l, err, true
	}
	return nil, nil, false
}

func (c *catalog) resultLocked(refresh bool) (*listing, error) {
	if c.lastErr != nil && (refresh || c.cur == nil) {
		return nil, c.lastErr
	}
	return c.cur, nil
}

// last returns the last successful listing without asking Glance (nil if
// none).
func (c *catalog) last() *listing {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.cur
}

// invalidate forgets the listing, e.g. after the domain's URL changed.
func (c *catalog) invalidate() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.cur, c.fetched, c.tried, c.lastErr = nil, time.Time{}, time.Time{}, nil
	c.epoch++
}
