package hostd

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/glancegw/glancegw/cache"
	"github.com/glancegw/glancegw/fs"
	"github.com/glancegw/glancegw/glance"
)

// domain is one Glance storage domain at run time: its record and secrets,
// a lazily built Glance client, the catalog, and its mount. It is the
// fs.Domain the FUSE tree reads and the source of its NBD exports.
type domain struct {
	base    *slog.Logger
	connect connectFunc
	timeout time.Duration // bound on connecting and on one listing
	retry   time.Duration // least time between connection attempts after a failure
	now     func() time.Time
	open    func(cache.BlockSource) cache.BlockSource // the shared cache
	cat     *catalog
	detect  *detector // formats of the listed images

	connectMu sync.Mutex // held while connecting

	mu      sync.Mutex // guards the fields below
	log     *slog.Logger
	rec     DomainRecord
	sec     secrets
	version uint64 // bumped when the connection settings change
	be      backend
	beErr   error
	beTried time.Time
	lastErr string     // last failure, for the API
	srv     *fs.Server // the mounted tree, nil when not mounted
	made    []string   // directories created for srv's mountpoint (or a lost one's), leaf first
	lost    bool       // the tree left its mountpoint without the daemon unmounting it
	// views holds one cached view per image version, so every opener (FUSE
	// files, NBD connections) shares one Glance source and the streams it
	// keeps open between sequential reads.
	views      map[string]cache.BlockSource
	viewsFresh *listing // listing views was last pruned against
}

var _ fs.Domain = (*domain)(nil)

type domainDeps struct {
	log          *slog.Logger
	connect      connectFunc
	timeout      time.Duration
	ttl, missMin time.Duration
	now          func() time.Time
	open         func(cache.BlockSource) cache.BlockSource
	// Format detection of listed images; zero values take defaults.
	inspectWorkers int
	inspectTimeout time.Duration
}

func newDomain(rec DomainRecord, sec secrets, deps domainDeps) *domain {
	d := &domain{
		base:    deps.log.With("sd_uuid", rec.UUID),
		log:     deps.log.With("sd_uuid", rec.UUID, "domain", rec.Name),
		connect: deps.connect,
		timeout: deps.timeout,
		retry:   deps.missMin,
		now:     deps.now,
		open:    deps.open,
		rec:     rec,
		sec:     sec,
	}
	d.detect = newDetector(d.base.With("component", "inspect"), deps.now, deps.inspectWorkers, deps.inspectTimeout, 0)
	d.cat = newCatalog(deps.ttl, deps.missMin, deps.now, d.listImages, func(im glance.Image) fs.Image {
		return toFSImage(rec.UUID, im, d.detected(im))
	})
	return d
}

func (d *domain) record() DomainRecord {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.rec
}

func (d *domain) logger() *slog.Logger {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.log
}

func (d *domain) secrets() secrets {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.sec
}

// view is the domain as the API shows it. A tree someone else unmounted is
// not active but lost, also before the daemon noticed (see liveMount).
func (d *domain) view() Domain {
	srv, lost := d.liveMount()
	d.mu.Lock()
	defer d.mu.Unlock()
	v := Domain{
		DomainRecord: d.rec,
		Active:       srv != nil && !lost,
		HasToken:     d.sec.Token != "",
		HasPassword:  d.sec.Password != "",
		Error:        d.lastErr,
	}
	if lost {
		v.Lost = lostText(d.rec)
	}
	return v
}

// lostText says what became of the lost mount of rec and what brings it
// back.
func lostText(rec DomainRecord) string {
	return fmt.Sprintf("%s was unmounted outside the daemon; glancegw mount %s mounts it again", rec.Mountpoint, rec.Name)
}

// update replaces the record and secrets. When the connection settings
// change, the client is rebuilt on next use and the catalog is dropped.
func (d *domain) update(rec DomainRecord, sec secrets) {
	d.mu.Lock()
	old, oldSec := d.rec, d.sec
	d.rec, d.sec = rec, sec
	d.log = d.base.With("domain", rec.Name)
	changed := old.URL != rec.URL || old.Auth != rec.Auth || old.AuthURL != rec.AuthURL ||
		old.Username != rec.Username || old.Project != rec.Project ||
		old.UserDomain != rec.UserDomain || old.ProjectDomain != rec.ProjectDomain ||
		old.CAFile != rec.CAFile || old.Insecure != rec.Insecure || oldSec != sec
	if changed {
		d.version++
		d.be, d.beErr, d.beTried, d.lastErr = nil, nil, time.Time{}, ""
		d.views, d.viewsFresh = nil, nil // bound to the old client
	}
	d.mu.Unlock()
	if changed {
		d.cat.invalidate()
	}
}

// setMount records the mounted tree (nil when unmounted) and the
// directories created for it.
func (d *domain) setMount(srv *fs.Server, made []string) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.srv, d.made, d.lost = srv, made, false
}

// setLost forgets the tree, which left its mountpoint without the daemon
// unmounting it, and keeps the directories made for it (the next mount there
// takes them over, unmount removes them).
func (d *domain) setLost() {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.srv, d.lost = nil, true
}

// liveMount returns the mounted tree, nil when there is none, and whether
// the mount is lost: forgotten after it ended without the daemon (srv nil),
// or still held but no longer at its mountpoint (someone ran umount -l while
// files are open in it, or the daemon has not yet seen its loop end).
func (d *domain) liveMount() (srv *fs.Server, lost bool) {
	d.mu.Lock()
	srv, lost = d.srv, d.lost
	d.mu.Unlock()
	if srv == nil {
		return nil, lost
	}
	// An error reading mountinfo is no evidence: the tree counts as there.
	ok, err := srv.Attached()
	return srv, err == nil && !ok
}

// madeDirs returns the directories created for the mounted tree.
func (d *domain) madeDirs() []string {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.made
}

func (d *domain) mounted() *fs.Server {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.srv
}

func (d *domain) setError(err error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if err == nil {
		d.lastErr = ""
	} else {
		d.lastErr = err.Error()
	}
}

func glanceConfig(rec DomainRecord, sec secrets) glance.Config {
	return glance.Config{
		URL: rec.URL,
		Auth: glance.Auth{
			Type:          rec.Auth,
			Token:         sec.Token,
			AuthURL:       rec.AuthURL,
			Username:      rec.Username,
			Password:      sec.Password,
			Project:       rec.Project,
			UserDomain:    rec.UserDomain,
			ProjectDomain: rec.ProjectDomain,
		},
		CAFile:   rec.CAFile,
		Insecure: rec.Insecure,
	}
}

// backend returns the Glance client, connecting on first use. A domain whose
// Glance is down still exists; the error shows on use, and connecting is
// retried at most once per retry interval.
func (d *domain) backend(ctx context.Context) (backend, error) {
	d.mu.Lock()
	if d.be != nil {
		be := d.be
		d.mu.Unlock()
		return be, nil
	}
	if d.beErr != nil && d.now().Sub(d.beTried) < d.retry {
		err := d.beErr
		d.mu.Unlock()
		return nil, err
	}
	d.mu.Unlock()

	d.connectMu.Lock()
	defer d.connectMu.Unlock()

	d.mu.Lock()
	if d.be != nil { // connected while we waited
		be := d.be
		d.mu.Unlock()
		return be, nil
	}
	cfg, version, rec, log := glanceConfig(d.rec, d.sec), d.version, d.rec, d.log
	name := rec.Name
	d.mu.Unlock()

	cctx, cancel := context.WithTimeout(ctx, d.timeout)
	defer cancel()
	be, err := d.connect(cctx, cfg, log)
	if err != nil {
		err = backendError(rec, err, "domain %s: connect to Glance at %s", name, cfg.URL)
	}

	d.mu.Lock()
	defer d.mu.Unlock()
	if d.version == version {
		d.be, d.beErr, d.beTried = be, err, d.now()
		if err != nil {
			d.lastErr = err.Error()
		}
	}
	return be, err
}

// listImages is the catalog's way to Glance.
func (d *domain) listImages(ctx context.Context) ([]glance.Image, error) {
	be, err := d.backend(ctx)
	if err != nil {
		return nil, err
	}
	lctx, cancel := context.WithTimeout(ctx, d.timeout)
	defer cancel()
	imgs, err := be.List(lctx)
	if err != nil {
		rec := d.record()
		err = backendError(rec, err, "domain %s: list images", rec.Name)
		d.logger().Warn("listing images failed", "err", err)
	}
	d.setError(err)
	if err == nil {
		// New images are inspected before the listing is shown, within
		// the same bound as the listing; what is left over is tried again
		// by the next listing.
		dctx, cancel := context.WithTimeout(ctx, d.timeout)
		d.detect.detectAll(dctx, imgs, d.openImage)
		cancel()
	}
	return imgs, err
}

// detected returns the detection of im, nil when it was not inspected (yet).
func (d *domain) detected(im glance.Image) *detection {
	det, ok := d.detect.get(im)
	if !ok {
		return nil
	}
	return &det
}

// Info implements fs.Domain.
func (d *domain) Info() fs.DomainInfo {
	r := d.record()
	return fs.DomainInfo{UUID: r.UUID, Name: r.Name, URL: r.URL, Description: r.Name}
}

// Images implements fs.Domain: every image in any status (the tree shows
// only the active ones).
func (d *domain) Images(ctx context.Context, refresh bool) ([]fs.Image, error) {
	l, err := d.cat.get(ctx, refresh)
	if err != nil {
		return nil, err
	}
	return l.fs, nil
}

// images is Images with the Glance records.
func (d *domain) images(ctx context.Context, refresh bool) ([]glance.Image, error) {
	l, err := d.cat.get(ctx, refresh)
	if err != nil {
		return nil, err
	}
	return l.images, nil
}

// Open implements fs.Domain: the cached bytes of img. The record comes from
// the catalog when it matches, else from Glance, so a changed image is read
// under its new identity.
func (d *domain) Open(ctx context.Context, img fs.Image) (cache.BlockSource, error) {
	gi, ok := d.cat.last().image(img.ID)
	if !ok || gi.Checksum != img.Checksum || gi.Size != img.Size {
		be, err := d.backend(ctx)
		if err != nil {
			return nil, err
		}
		gctx, cancel := context.WithTimeout(ctx, d.timeout)
		defer cancel()
		gi, err = be.Get(gctx, img.ID)
		if err != nil {
			var nf interface{ NotFound() bool }
			if errors.As(err, &nf) && nf.NotFound() {
				return nil, &kindError{kind: ErrNotFound, msg: fmt.Sprintf("domain %s: image %s", d.record().Name, img.ID), err: err}
			}
			rec := d.record()
			return nil, backendError(rec, err, "domain %s: get image %s", rec.Name, img.ID)
		}
	}
	return d.openImage(ctx, gi)
}

// openImage returns the cached view of an active image, shared by all its
// openers.
func (d *domain) openImage(ctx context.Context, gi glance.Image) (cache.BlockSource, error) {
	if gi.Status != "active" {
		return nil, conflict("image %s is %s, not active", gi.ID, gi.Status)
	}
	be, err := d.backend(ctx)
	if err != nil {
		return nil, err
	}
	key := viewKey(gi)
	cur := d.cat.last()
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.viewsFresh != cur {
		d.pruneViewsLocked(cur)
	}
	if v, ok := d.views[key]; ok {
		return v, nil
	}
	v := d.open(be.Source(d.rec.UUID, gi))
	if d.views == nil {
		d.views = map[string]cache.BlockSource{}
	}
	d.views[key] = v
	return v, nil
}

// viewKey names one version of an image (what its source's identity is
// built from).
func viewKey(gi glance.Image) string {
	return gi.ID + "@" + gi.Checksum + "/" + gi.OSHashValue + "/" + gi.UpdatedAt.UTC().Format(time.RFC3339Nano) +
		"/" + strconv.FormatInt(gi.Size, 10)
}

// pruneViewsLocked forgets the views of image versions that l no longer
// lists. Readers that hold one keep it; its idle streams close on their own.
func (d *domain) pruneViewsLocked(l *listing) {
	d.viewsFresh = l
	if l == nil {
		return
	}
	for k := range d.views {
		id := k[:strings.IndexByte(k, '@')]
		if gi, ok := l.image(id); !ok || viewKey(gi) != k {
			delete(d.views, k)
		}
	}
}

// toFSImage maps a Glance record, with what was detected in it (nil when
// nothing was), to what the tree shows.
func toFSImage(sdUUID string, im glance.Image, det *detection) fs.Image {
	vsize := im.VirtualSize
	if vsize == 0 && det != nil {
		vsize = det.VirtualSize
	}
	return fs.Image{
		ID:              im.ID,
		Name:            im.Name,
		Status:          im.Status,
		Size:            im.Size,
		VirtualSize:     vsize,
		DiskFormat:      im.DiskFormat,
		ContainerFormat: im.ContainerFormat,
		Checksum:        im.Checksum,
		OSHashAlgo:      im.OSHashAlgo,
		OSHashValue:     im.OSHashValue,
		CreatedAt:       im.CreatedAt,
		UpdatedAt:       im.UpdatedAt,
		Meta:            imageMeta(sdUUID, im, det),
	}
}

// imageMeta is the JSON of meta/<id>.json: Glance's record as sent, plus a
// "glancegw" object with what glancegw adds: the domain, and the format,
// virtual size and unsafe findings detected in the image's headers (format
// "unknown" with inspect_error when inspection failed; absent when the image
// was not inspected, e.g. it is not active).
func imageMeta(sdUUID string, im glance.Image, det *detection) json.RawMessage {
	fields := map[string]json.RawMessage{}
	raw := im.Raw
	if len(raw) == 0 {
		raw, _ = json.Marshal(im) // a record built without Raw (tests, older clients)
	}
	if err := json.Unmarshal(raw, &fields); err != nil || fields == nil {
		fields = map[string]json.RawMessage{}
	}
	ownFields := map[string]any{"sd_uuid": sdUUID}
	if det != nil {
		ownFields["format"] = det.Format
		if det.failed() {
			ownFields["inspect_error"] = det.Err
		} else {
			ownFields["virtual_size"] = det.VirtualSize
			ownFields["unsafe"] = det.Unsafe
		}
	}
	own, _ := json.Marshal(ownFields)
	fields["glancegw"] = own
	out, err := json.MarshalIndent(fields, "", "  ")
	if err != nil {
		return nil
	}
	return append(out, '\n')
}

// toAPIImage maps a Glance record and its detection (nil: none) to the API.
func toAPIImage(im glance.Image, det *detection) Image {
	out := Image{
		ID: im.ID, Name: im.Name, Status: im.Status, Size: im.Size, VirtualSize: im.VirtualSize,
		DiskFormat: im.DiskFormat, ContainerFormat: im.ContainerFormat, Checksum: im.Checksum,
		OSHashAlgo: im.OSHashAlgo, OSHashValue: im.OSHashValue,
		CreatedAt: im.CreatedAt, UpdatedAt: im.UpdatedAt,
	}
	if det != nil {
		out.DetectedFormat = det.Format
		out.DetectedVirtualSize = det.VirtualSize
		out.DetectedUnsafe = det.Unsafe
	}
	return out
}
