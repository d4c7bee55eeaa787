package fs

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"time"
)

// catalog keeps the current view of a domain and decides when to list the
// domain again: after RefreshTTL, and on a lookup miss at most once per
// MissInterval. One listing runs at a time; concurrent callers share it.
type catalog struct {
	d       Domain
	info    DomainInfo
	cfg     Config
	log     *slog.Logger
	now     func() time.Time
	base    context.Context // listings run under this, not under one caller's ctx
	onFresh func(*view)     // called after each successful listing

	mu       sync.Mutex
	cur      *view
	loaded   bool      // cur reflects a listing
	loadedAt time.Time // when cur's listing finished
	retryAt  time.Time // after a failed listing, the earliest next try
	missAt   time.Time // last refresh caused by a miss
	inflight *listing
}

// listing is one run of Domain.Images that several callers may wait on.
type listing struct {
	done chan struct{}
	v    *view
	err  error
}

func newCatalog(base context.Context, d Domain, cfg Config, log *slog.Logger, now func() time.Time) *catalog {
	c := &catalog{d: d, info: d.Info(), cfg: cfg, log: log, now: now, base: base}
	c.cur = buildView(c.info, nil, now())
	return c
}

// peek returns the current view without listing.
func (c *catalog) peek() *view {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.cur
}

// get returns a view no older than RefreshTTL when the domain answers, the
// last good view when it does not, and an error only if no listing ever
// succeeded.
func (c *catalog) get(ctx context.Context) (*view, error) {
	c.mu.Lock()
	now := c.now()
	if c.loaded && (now.Sub(c.loadedAt) < c.cfg.RefreshTTL || now.Before(c.retryAt)) {
		v := c.cur
		c.mu.Unlock()
		return v, nil
	}
	if !c.loaded && now.Before(c.retryAt) {
		c.mu.Unlock()
		return nil, fmt.Errorf("fs: list domain %s: %w", c.info.UUID, ErrNotListed)
	}
	l := c.startLocked(c.loaded)
	c.mu.Unlock()
	return c.wait(ctx, l)
}

// miss lists the domain again because a name was not found, unless that
// happened less than MissInterval ago. It reports whether it listed.
func (c *catalog) miss(ctx context.Context) (*view, bool, error) {
	c.mu.Lock()
	now := c.now()
	if !c.missAt.IsZero() && now.Sub(c.missAt) < c.cfg.MissInterval {
		v := c.cur
		c.mu.Unlock()
		return v, false, nil
	}
	c.missAt = now
	l := c.startLocked(true)
	c.mu.Unlock()
	v, err := c.wait(ctx, l)
	return v, err == nil, err
}

// startLocked joins the listing in flight or starts one.
func (c *catalog) startLocked(refresh bool) *listing {
	if c.inflight != nil {
		return c.inflight
	}
	l := &listing{done: make(chan struct{})}
	c.inflight = l
	go c.run(l, refresh)
	return l
}

func (c *catalog) run(l *listing, refresh bool) {
	ctx, cancel := context.WithTimeout(c.base, c.cfg.ListTimeout)
	defer cancel()
	imgs, err := c.d.Images(ctx, refresh)

	c.mu.Lock()
	now := c.now()
	if err != nil {
		l.err = fmt.Errorf("fs: list domain %s: %w", c.info.UUID, err)
		c.retryAt = now.Add(c.cfg.MissInterval)
		c.log.Warn("listing domain failed", "domain", c.info.Name, "err", err)
	} else {
		l.v = buildView(c.info, imgs, now)
		c.cur, c.loaded, c.loadedAt = l.v, true, now
	}
	c.inflight = nil
	c.mu.Unlock()
	if l.v != nil && c.onFresh != nil {
		c.onFresh(l.v)
	}
	close(l.done)
}

// wait waits for l within ctx; a failed listing falls back to the last
// good view.
func (c *catalog) wait(ctx context.Context, l *listing) (*view, error) {
	select {
	case <-l.done:
	case <-ctx.Done():
		return nil, fmt.Errorf("fs: wait for listing: %w", ctx.Err())
	}
	if l.err == nil {
		return l.v, nil
	}
	c.mu.Lock()
	v, loaded := c.cur, c.loaded
	c.mu.Unlock()
	if loaded {
		return v, nil
	}
	return nil, l.err
}
