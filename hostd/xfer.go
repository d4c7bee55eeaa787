package hostd

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/glancegw/glancegw/cache"
	"github.com/glancegw/glancegw/glance"
	"github.com/glancegw/glancegw/hostd/transfer"
)

// This file turns importImage/exportImage requests into jobs: it validates
// them synchronously (bad input fails before any byte moves) and resolves
// URLs of attached domains to their cached, authenticated view.

// StartImport validates req and starts an import job.
func (d *Daemon) StartImport(ctx context.Context, req ImportRequest) (Job, error) {
	vol, err := transfer.ParseVolume(d.cfg.RepoRoot, req.SPUUID, req.SDUUID, req.ImgUUID, req.VolUUID)
	if err != nil {
		return Job{}, err
	}
	info := req.ImportInfo
	if info.Domain != "" || info.Name != "" {
		return Job{}, badRequest("importInfo takes method, url and headers (domain and name are for exportInfo)")
	}
	u, header, err := checkHTTPInfo("importInfo", info)
	if err != nil {
		return Job{}, err
	}
	if err := vol.Check(false, req.Overwrite); err != nil {
		return Job{}, err
	}
	job := Job{Kind: JobImport, Volume: vol.Path(), Source: transfer.RedactURL(info.URL)}

	var open func(ctx context.Context, j *Job) (cache.BlockSource, transfer.Checksum, func(), error)
	if dom, id, ok := d.domainForURL(u); ok {
		// An attached domain's image: read through its client and the
		// shared cache; its credentials, not the request's headers.
		gi, err := d.activeImage(ctx, dom, id)
		if err != nil {
			return Job{}, err
		}
		src, err := dom.openImage(ctx, gi)
		if err != nil {
			return Job{}, err
		}
		job.Note = "read through domain " + dom.record().Name
		open = func(context.Context, *Job) (cache.BlockSource, transfer.Checksum, func(), error) {
			return src, transfer.Expected(gi.OSHashAlgo, gi.OSHashValue, gi.Checksum), func() {}, nil
		}
	} else {
		open = func(ctx context.Context, j *Job) (cache.BlockSource, transfer.Checksum, func(), error) {
			return d.openHTTP(ctx, info.URL, header, j)
		}
	}
	return d.jobs.start(job, vol.Path(), func(ctx context.Context, r *jobRun, j *Job) error {
		src, expect, closeSrc, err := open(ctx, j)
		if err != nil {
			return err
		}
		defer closeSrc()
		r.total.Store(src.Size())
		if expect.IsZero() {
			j.Note = strings.TrimPrefix(j.Note+"; "+transfer.NoChecksumNote, "; ")
		}
		meta, err := d.engine.Import(ctx, transfer.ImportSpec{
			Volume: vol, Source: src, SourceURL: j.Source, Expect: expect,
			Overwrite: req.Overwrite, Progress: r.progress, Retrying: r.retry,
		})
		j.Format, j.VirtualSize, j.Verified = meta.Format, meta.VirtualSize, meta.Verified
		if !meta.Checksum.IsZero() {
			j.Checksum = meta.Checksum.String()
		}
		return err
	})
}

// openHTTP opens a generic HTTP(S) source. When the URL is a Glance image
// file URL, the image record is read with the same headers for its
// checksum.
func (d *Daemon) openHTTP(ctx context.Context, rawURL string, header http.Header, j *Job) (cache.BlockSource, transfer.Checksum, func(), error) {
	var expect transfer.Checksum
	var size int64
	rec, found, err := d.engine.GlanceRecord(ctx, rawURL, header)
	if err != nil {
		return nil, expect, nil, fmt.Errorf("read the Glance record of %s: %w", j.Source, err)
	}
	if found {
		if rec.Status != "active" {
			return nil, expect, nil, fmt.Errorf("image %s is %s, not active", rec.ID, rec.Status)
		}
		expect, size = transfer.Expected(rec.OSHashAlgo, rec.OSHashValue, rec.Checksum), rec.Size
	}
	src, err := glance.NewHTTPSource(ctx, glance.HTTPSourceConfig{URL: rawURL, Header: header, Size: size},
		d.log.With("component", "transfer"))
	if err != nil {
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err // its URL may carry secrets
		}
		return nil, expect, nil, fmt.Errorf("open %s: %w", j.Source, err)
	}
	return src, expect, func() { src.Close() }, nil
}

// StartExport validates req and starts an export job.
func (d *Daemon) StartExport(ctx context.Context, req ExportRequest) (Job, error) {
	vol, err := transfer.ParseVolume(d.cfg.RepoRoot, req.SPUUID, req.SDUUID, req.ImgUUID, req.VolUUID)
	if err != nil {
		return Job{}, err
	}
	if err := d.jobs.free(vol.Path()); err != nil {
		return Job{}, err
	}
	if err := vol.Check(true, false); err != nil {
		return Job{}, err
	}
	info := req.ExportInfo
	job := Job{Kind: JobExport, Volume: vol.Path()}
	var target func(ctx context.Context, spec *transfer.ExportSpec) error
	switch {
	case info.Domain != "" || info.Name != "":
		if info.Domain == "" || info.Name == "" || info.URL != "" || info.Method != "" || len(info.Headers) > 0 {
			return Job{}, badRequest("exportInfo takes either domain and name, or method, url and headers")
		}
		if len(info.Name) > 255 || strings.ContainsAny(info.Name, "\x00\r\n") {
			return Job{}, badRequest("invalid image name %q", info.Name)
		}
		dom, err := d.find(info.Domain)
		if err != nil {
			return Job{}, err
		}
		job.Target = "domain " + dom.record().Name + ": new image " + info.Name
		job.Domain = dom.record().UUID
		target = func(ctx context.Context, spec *transfer.ExportSpec) error {
			g, err := d.uploader(ctx, dom)
			spec.Glance, spec.Name = g, info.Name
			return err
		}
	default:
		u, header, err := checkHTTPInfo("exportInfo", info)
		if err != nil {
			return Job{}, err
		}
		job.Target = transfer.RedactURL(info.URL)
		if dom, id, ok := d.domainForURL(u); ok {
			job.Note = "uploaded through domain " + dom.record().Name
			job.Domain = dom.record().UUID
			target = func(ctx context.Context, spec *transfer.ExportSpec) error {
				g, err := d.uploader(ctx, dom)
				spec.Glance, spec.ImageID = g, id
				return err
			}
		} else {
			target = func(ctx context.Context, spec *transfer.ExportSpec) error {
				spec.URL, spec.Header = info.URL, header
				return nil
			}
		}
	}
	return d.jobs.start(job, vol.Path(), func(ctx context.Context, r *jobRun, j *Job) error {
		f, err := vol.Open()
		if err != nil {
			return err
		}
		fsrc, err := transfer.NewFileSource(f)
		if err != nil {
			f.Close()
			return err
		}
		defer fsrc.Close()
		r.total.Store(fsrc.Size())
		spec := transfer.ExportSpec{Source: d.cache.Open(fsrc), What: vol.Path(), Progress: r.progress, Retrying: r.retry}
		if err := target(ctx, &spec); err != nil {
			return err
		}
		if spec.Name != "" {
			// The new image is recorded before a byte goes up, so that
			// after a kill -9 the next start deletes it.
			spec.Created = func(id string) error {
				set := func(j *Job) { j.ImageID, j.CleanupImage = id, id }
				set(j)
				_, err := d.jobs.update(j.ID, set)
				return err
			}
		}
		res, err := d.engine.Export(ctx, spec)
		if err == nil {
			j.CleanupImage = ""
		}
		j.Format, j.ImageID, j.Verified, j.Note = res.DiskFormat, res.ImageID, res.Verified,
			strings.TrimPrefix(j.Note+"; "+res.Note, "; ")
		j.Note = strings.TrimSuffix(j.Note, "; ")
		if res.SHA512 != "" {
			j.Checksum = "sha512:" + res.SHA512
		}
		return err
	})
}

// uploader is the domain's Glance client as export needs it.
func (d *Daemon) uploader(ctx context.Context, dom *domain) (transfer.Glance, error) {
	be, err := dom.backend(ctx)
	if err != nil {
		return nil, err
	}
	g, ok := be.(transfer.Glance)
	if !ok {
		return nil, fmt.Errorf("domain %s: its client cannot upload", dom.record().Name)
	}
	return g, nil
}

// activeImage returns image id of dom, which must be active.
func (d *Daemon) activeImage(ctx context.Context, dom *domain, id string) (glance.Image, error) {
	be, err := dom.backend(ctx)
	if err != nil {
		return glance.Image{}, err
	}
	gctx, cancel := context.WithTimeout(ctx, d.cfg.GlanceTimeout)
	defer cancel()
	gi, err := be.Get(gctx, id)
	if err != nil {
		var nf interface{ NotFound() bool }
		if errors.As(err, &nf) && nf.NotFound() {
			return glance.Image{}, &kindError{kind: ErrNotFound, msg: fmt.Sprintf("domain %s: image %s", dom.record().Name, id), err: err}
		}
		return glance.Image{}, unavailable(err, "domain %s: get image %s", dom.record().Name, id)
	}
	if gi.Status != "active" {
		return glance.Image{}, conflict("image %s is %s, not active", gi.ID, gi.Status)
	}
	return gi, nil
}

// checkHTTPInfo checks method "http", the URL and the headers.
func checkHTTPInfo(what string, info TransferInfo) (*url.URL, http.Header, error) {
	if info.Method != "http" {
		return nil, nil, badRequest("%s: method %q is not supported (want \"http\")", what, info.Method)
	}
	u, err := transfer.CheckHTTPURL(info.URL)
	if err != nil {
		return nil, nil, fmt.Errorf("%s: %w", what, err)
	}
	header := http.Header{}
	for k, v := range info.Headers {
		if k == "" || strings.ContainsAny(k, " :\r\n\x00") || strings.ContainsAny(v, "\r\n\x00") {
			// The value may be a secret: name the key only.
			return nil, nil, badRequest("%s: invalid header %q", what, k)
		}
		header.Set(k, v)
	}
	return u, header, nil
}

// domainForURL finds the attached domain whose Glance serves u as an image
// file URL (same scheme, host, port and path prefix).
func (d *Daemon) domainForURL(u *url.URL) (*domain, string, bool) {
	ep, id, ok := transfer.GlanceFileURL(u)
	if !ok || u.RawQuery != "" {
		return nil, "", false
	}
	for _, dom := range d.domainList() {
		du, err := url.Parse(dom.record().URL)
		if err != nil {
			continue
		}
		if du.Scheme == ep.Scheme && hostPort(du) == hostPort(ep) &&
			strings.TrimRight(du.Path, "/") == strings.TrimRight(ep.Path, "/") {
			return dom, id, true
		}
	}
	return nil, "", false
}

func hostPort(u *url.URL) string {
	port := u.Port()
	if port == "" {
		port = map[string]string{"http": "80", "https": "443"}[u.Scheme]
	}
	return net.JoinHostPort(strings.ToLower(u.Hostname()), port)
}

// Jobs lists the jobs, oldest first.
func (d *Daemon) Jobs() []Job { return d.jobs.list() }

// Job returns job id.
func (d *Daemon) Job(id string) (Job, error) { return d.jobs.get(id) }

// CancelJob cancels job id and returns it once it stopped (or after 10s).
func (d *Daemon) CancelJob(ctx context.Context, id string) (Job, error) {
	return d.jobs.cancel(ctx, id)
}

// WaitJob returns job id when it is done or after timeout.
func (d *Daemon) WaitJob(ctx context.Context, id string, timeout time.Duration) (Job, error) {
	return d.jobs.wait(ctx, id, timeout)
}
