package hostd

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"sync"
	"time"

	"github.com/glancegw/glancegw/cache"
	"github.com/glancegw/glancegw/glance"
	"github.com/glancegw/glancegw/glance/inspect"
)

// Defaults of the catalog's format detection.
const (
	defaultInspectWorkers = 4
	defaultInspectTimeout = 15 * time.Second
	// A failed inspection is shown as unknown and tried again only after
	// this long, so a broken image does not cost every listing a timeout.
	defaultInspectRetry = 10 * time.Minute
)

// formatUnknown is shown when an image could not be inspected.
const formatUnknown = "unknown"

// detection is what glance/inspect found in one image version.
type detection struct {
	Format      string   // formatUnknown when inspection failed
	VirtualSize int64    // 0 when unknown
	Unsafe      []string // why the image must not be used as is; empty when safe
	Err         string   // why inspection failed
	at          time.Time
}

func (d detection) failed() bool { return d.Err != "" }

// detector inspects each active image of a domain once per content
// identity (id, checksum, size) and remembers the result, so listings show
// the real format and virtual size without reading headers on every
// refresh. It reads through the domain's cached view: a header and a footer
// block per image.
type detector struct {
	log     *slog.Logger
	now     func() time.Time
	workers int
	timeout time.Duration // one image
	retry   time.Duration // least time before a failed image is tried again

	mu   sync.Mutex
	done map[string]detection
}

func newDetector(log *slog.Logger, now func() time.Time, workers int, timeout, retry time.Duration) *detector {
	if workers <= 0 {
		workers = defaultInspectWorkers
	}
	if timeout <= 0 {
		timeout = defaultInspectTimeout
	}
	if retry <= 0 {
		retry = defaultInspectRetry
	}
	return &detector{log: log, now: now, workers: workers, timeout: timeout, retry: retry, done: map[string]detection{}}
}

// detectKey is an image's content identity.
func detectKey(im glance.Image) string {
	return im.ID + "@" + im.Checksum + "/" + strconv.FormatInt(im.Size, 10)
}

// get returns the detection of im, if there is one.
func (t *detector) get(im glance.Image) (detection, bool) {
	if t == nil {
		return detection{}, false
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	det, ok := t.done[detectKey(im)]
	return det, ok
}

// detectAll inspects the active images of imgs that have no result yet (or
// whose failure is older than the retry interval), at most workers at once,
// each bounded by the per-image timeout, and returns when all are done or
// ctx ends. Results of images no longer listed are dropped. A failure is
// remembered as unknown; an image cut short by ctx is not remembered, so the
// next listing tries it again.
func (t *detector) detectAll(ctx context.Context, imgs []glance.Image, open func(context.Context, glance.Image) (cache.BlockSource, error)) {
	now := t.now()
	listed := make(map[string]bool, len(imgs))
	var todo []glance.Image
	t.mu.Lock()
	for _, im := range imgs {
		if im.Status != "active" {
			continue
		}
		k := detectKey(im)
		listed[k] = true
		if det, ok := t.done[k]; ok && (!det.failed() || now.Sub(det.at) < t.retry) {
			continue
		}
		todo = append(todo, im)
	}
	for k := range t.done {
		if !listed[k] {
			delete(t.done, k)
		}
	}
	t.mu.Unlock()
	if len(todo) == 0 {
		return
	}

	start := t.now()
	work := make(chan glance.Image)
	var wg sync.WaitGroup
	for range min(t.workers, len(todo)) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for im := range work {
				det, err := t.inspect(ctx, im, open)
				if err != nil && ctx.Err() != nil {
					continue // cut short by the caller, not the image's fault
				}
				if err != nil {
					t.log.Warn("inspecting image failed; its format shows as unknown", "image", im.ID, "err", err)
				}
				t.mu.Lock()
				t.done[detectKey(im)] = det
				t.mu.Unlock()
			}
		}()
	}
feed:
	for _, im := range todo {
		select {
		case work <- im:
		case <-ctx.Done():
			break feed
		}
	}
	close(work)
	wg.Wait()
	t.log.Debug("inspected images", "count", len(todo), "took", t.now().Sub(start))
}

// inspect detects one image's format through its cached view.
func (t *detector) inspect(ctx context.Context, im glance.Image, open func(context.Context, glance.Image) (cache.BlockSource, error)) (detection, error) {
	ictx, cancel := context.WithTimeout(ctx, t.timeout)
	defer cancel()
	fail := func(err error) (detection, error) {
		return detection{Format: formatUnknown, Err: err.Error(), at: t.now()}, err
	}
	src, err := open(ictx, im)
	if err != nil {
		return fail(fmt.Errorf("open image %s: %w", im.ID, err))
	}
	res, err := inspect.Detect(inspect.ReaderAtFunc(func(p []byte, off int64) (int, error) {
		return src.ReadAt(ictx, p, off)
	}), src.Size())
	if err != nil {
		if errors.Is(ictx.Err(), context.DeadlineExceeded) && ctx.Err() == nil {
			err = fmt.Errorf("no answer within %v: %w", t.timeout, err)
		}
		return fail(fmt.Errorf("inspect image %s: %w", im.ID, err))
	}
	unsafe := res.Unsafe
	if unsafe == nil {
		unsafe = []string{}
	}
	return detection{Format: res.Format, VirtualSize: res.VirtualSize, Unsafe: unsafe, at: t.now()}, nil
}
