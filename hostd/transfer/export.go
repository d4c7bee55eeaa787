package transfer

import (
	"context"
	"crypto/md5"
	"crypto/sha512"
	"encoding/hex"
	"fmt"
	"hash"
	"io"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/glancegw/glancegw/cache"
	"github.com/glancegw/glancegw/glance"
	"github.com/glancegw/glancegw/glance/inspect"
)

// Glance is what export needs of a Glance client; *glance.Client has it.
type Glance interface {
	Get(ctx context.Context, id string) (glance.Image, error)
	Create(ctx context.Context, opts glance.CreateOpts) (glance.Image, error)
	Upload(ctx context.Context, id string, r io.Reader, size int64) error
	Delete(ctx context.Context, id string) error
}

var _ Glance = (*glance.Client)(nil)

// ExportSpec is one export. The target is either Glance (a client with Name
// to create a new image, or ImageID to fill an existing queued one) or URL
// with Header for a plain HTTP PUT.
type ExportSpec struct {
	Source cache.BlockSource // the volume's bytes
	What   string            // names the volume in messages

	Glance  Glance
	Name    string // create a new image with this name
	ImageID string // or upload into this image
	// Created, when set, is called with the id of the image Export created,
	// before any byte is sent, so the caller can record it for removal
	// should the process die mid-upload. An error deletes the image and
	// fails the export: no image is filled that was not recorded.
	Created func(imageID string) error

	URL    string
	Header http.Header // sent with the PUT; never logged

	Progress func(n int64)
	// Retrying is told of retried reads of the volume while it is
	// inspected, as ImportSpec.Retrying. The upload itself is not retried
	// (a body cannot be sent twice); a stalled one fails after the
	// client's idle timeout.
	Retrying func(r *Retry)
}

// ExportResult is what an export did.
type ExportResult struct {
	ImageID    string `json:"image_id,omitempty"`
	DiskFormat string `json:"disk_format"`
	Size       int64  `json:"size"`
	MD5        string `json:"md5"`
	SHA512     string `json:"sha512"`
	// Verified is true when Glance's checksum and os_hash_value were
	// compared with ours and matched.
	Verified bool   `json:"verified"`
	Note     string `json:"note,omitempty"`
}

// diskFormats maps inspect's formats to Glance disk formats.
var diskFormats = map[string]string{
	inspect.FormatRaw: "raw", inspect.FormatQCOW2: "qcow2", inspect.FormatVMDK: "vmdk",
	inspect.FormatVHD: "vhd", inspect.FormatVHDX: "vhdx", inspect.FormatVDI: "vdi", inspect.FormatISO: "iso",
}

// Export inspects the volume, streams it with Content-Length to the target
// while computing md5 and sha512, and compares them with what Glance reports
// afterwards. An image it created is deleted on any failure or mismatch, so
// a short or wrong image never stays behind.
func (e *Engine) Export(ctx context.Context, spec ExportSpec) (res ExportResult, err error) {
	src := spec.Source
	res.Size = src.Size()
	ins, err := e.inspect(ctx, src, spec.What, spec.Retrying)
	if err != nil {
		return res, err
	}
	df, ok := diskFormats[ins.Format]
	if !ok {
		return res, fmt.Errorf("transfer: export %s: format %s has no Glance disk format: %w", spec.What, ins.Format, ErrUnsupported)
	}
	res.DiskFormat = df

	switch {
	case spec.Glance != nil && spec.Name != "":
		img, cerr := spec.Glance.Create(ctx, glance.CreateOpts{Name: spec.Name, DiskFormat: df, ContainerFormat: "bare"})
		if cerr != nil {
			return res, fmt.Errorf("transfer: export %s: create image %q: %w", spec.What, spec.Name, cerr)
		}
		res.ImageID = img.ID
		defer func() {
			if err != nil {
				e.deleteImage(ctx, spec.Glance, img.ID)
			}
		}()
		if spec.Created != nil {
			if err := spec.Created(img.ID); err != nil {
				return res, fmt.Errorf("transfer: export %s: record the new image %s: %w", spec.What, img.ID, err)
			}
		}
	case spec.Glance != nil && spec.ImageID != "":
		res.ImageID = spec.ImageID
	case spec.URL != "":
		if _, err := CheckHTTPURL(spec.URL); err != nil {
			return res, err
		}
	default:
		return res, fmt.Errorf("transfer: export %s: no target: %w", spec.What, ErrInvalid)
	}

	if spec.ImageID != "" || spec.URL != "" {
		if err := e.checkTarget(ctx, spec, df); err != nil {
			return res, fmt.Errorf("transfer: export %s: %w", spec.What, err)
		}
	}

	body := newHashingReader(ctx, src, e.cfg.ChunkSize, e.pace, spec.Progress)
	defer body.close()
	start := time.Now()
	if spec.Glance != nil {
		err = spec.Glance.Upload(ctx, res.ImageID, body, res.Size)
	} else {
		err = e.put(ctx, spec.URL, spec.Header, body, res.Size)
	}
	if err == nil && body.done() != res.Size {
		err = fmt.Errorf("sent %d of %d bytes", body.done(), res.Size)
	}
	if err != nil {
		if ctx.Err() != nil {
			err = context.Cause(ctx)
		} else if rerr := body.err(); rerr != nil {
			err = rerr
		}
		return res, fmt.Errorf("transfer: export %s: upload: %w", spec.What, err)
	}
	res.MD5, res.SHA512 = body.sums()
	el := time.Since(start)

	// Compare with what Glance stored.
	var rec glance.Image
	var found bool
	if spec.Glance != nil {
		rec, err = spec.Glance.Get(ctx, res.ImageID)
		found = err == nil
	} else {
		rec, found, err = e.record(ctx, spec.URL, spec.Header)
	}
	if err != nil {
		return res, fmt.Errorf("transfer: export %s: read back the image record: %w", spec.What, err)
	}
	if !found {
		res.Note = "the target is not a Glance image file URL: checksums not compared"
	} else if err := compare(rec, res); err != nil {
		return res, fmt.Errorf("transfer: export %s to image %s: %w", spec.What, rec.ID, err)
	} else {
		res.Verified = true
		if rec.ID != "" {
			res.ImageID = rec.ID
		}
	}
	e.log.Info("export done", "volume", spec.What, "image", res.ImageID, "bytes", res.Size,
		"verified", res.Verified, "seconds", el.Seconds(), "mb_per_s", float64(res.Size)/el.Seconds()/1e6)
	return res, nil
}

// checkTarget reads the record of an existing target image, when there is
// one, before any byte goes up: Glance takes data only into a queued image
// (it answers 409 only after the body started), and bytes of one format in
// an image that declares another would be handed to guests as the wrong
// format.
func (e *Engine) checkTarget(ctx context.Context, spec ExportSpec, diskFormat string) error {
	var rec glance.Image
	var err error
	found := true
	if spec.Glance != nil {
		rec, err = spec.Glance.Get(ctx, spec.ImageID)
	} else {
		rec, found, err = e.record(ctx, spec.URL, spec.Header)
	}
	switch {
	case err != nil:
		return fmt.Errorf("read the target image's record: %w", err)
	case !found:
		return nil // not a Glance image URL: nothing to check
	case rec.DiskFormat == "":
		return fmt.Errorf("image %s has no disk_format, so Glance refuses its data (set one, e.g. openstack image set --disk-format %s %s): %w",
			rec.ID, diskFormat, rec.ID, ErrTarget)
	case rec.Status != "queued":
		return fmt.Errorf("image %s is %s: Glance takes data only into a queued image (export --to D --name N creates one): %w",
			rec.ID, rec.Status, ErrTarget)
	case !sameFormat(rec.DiskFormat, diskFormat):
		return fmt.Errorf("the volume is %s but image %s declares disk_format %s, so it would be read as %s: %w",
			diskFormat, rec.ID, rec.DiskFormat, rec.DiskFormat, ErrTarget)
	}
	return nil
}

// sameFormat reports whether bytes of disk format have may go into an image
// that declares want: the same format, or raw and iso, which are both read
// as plain bytes.
func sameFormat(want, have string) bool {
	plain := func(f string) bool { return f == "raw" || f == "iso" }
	return strings.EqualFold(want, have) || plain(strings.ToLower(want)) && plain(have)
}

// compare checks Glance's record against the sums of what was sent.
func compare(rec glance.Image, res ExportResult) error {
	if rec.Status != "active" {
		return fmt.Errorf("image is %s after the upload, not active: %w", rec.Status, ErrChecksum)
	}
	if rec.Size != res.Size {
		return fmt.Errorf("Glance stored %d bytes, we sent %d: %w", rec.Size, res.Size, ErrChecksum)
	}
	if rec.Checksum == "" && rec.OSHashValue == "" {
		return fmt.Errorf("Glance reports no checksum: %w", ErrChecksum)
	}
	if rec.Checksum != "" && !strings.EqualFold(rec.Checksum, res.MD5) {
		return fmt.Errorf("Glance checksum (md5) %s, we sent %s: %w", rec.Checksum, res.MD5, ErrChecksum)
	}
	if strings.EqualFold(rec.OSHashAlgo, "sha512") && !strings.EqualFold(rec.OSHashValue, res.SHA512) {
		return fmt.Errorf("Glance os_hash_value (sha512) %s, we sent %s: %w", rec.OSHashValue, res.SHA512, ErrChecksum)
	}
	return nil
}

// deleteImage removes an image export created, even when ctx was cancelled.
func (e *Engine) deleteImage(ctx context.Context, g Glance, id string) {
	dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
	defer cancel()
	if err := g.Delete(dctx, id); err != nil {
		e.log.Error("could not delete the image of a failed export", "image", id, "err", err)
		return
	}
	e.log.Info("deleted the image of a failed export", "image", id)
}

// hashingReader streams a BlockSource in order as an io.Reader, reading one
// chunk ahead in the background, and computes md5 and sha512 of what it
// delivers.
type hashingReader struct {
	ctx      context.Context
	cancel   context.CancelFunc
	chunks   chan []byte
	free     chan []byte
	buf      []byte // the chunk being read out, whole
	cur      []byte // its unread part
	md5, sha hash.Hash
	n        int64
	pace     *pacer // paces Read, so a limited upload stays smooth
	progress func(int64)

	mu      sync.Mutex
	readErr error
	wg      sync.WaitGroup
}

// hashPiece is how much md5 and then sha512 take at a time.
const hashPiece = 128 << 10

func newHashingReader(ctx context.Context, src cache.BlockSource, chunk int, pace *pacer, progress func(int64)) *hashingReader {
	ctx, cancel := context.WithCancel(ctx)
	r := &hashingReader{ctx: ctx, cancel: cancel, chunks: make(chan []byte, 1), free: make(chan []byte, 2),
		md5: md5.New(), sha: sha512.New(), pace: pace, progress: progress}
	size := src.Size()
	bufSize := int(min(int64(chunk), max(size, 1)))
	r.free <- make([]byte, bufSize)
	r.free <- make([]byte, bufSize)
	r.wg.Add(1)
	go func() {
		defer r.wg.Done()
		defer close(r.chunks)
		for off := int64(0); off < size; {
			var buf []byte
			select {
			case buf = <-r.free:
			case <-ctx.Done():
				return
			}
			n := int(min(int64(len(buf)), size-off))
			got, err := src.ReadAt(ctx, buf[:n], off)
			if got < n {
				if err == nil || err == io.EOF {
					err = io.ErrUnexpectedEOF
				}
				r.mu.Lock()
				r.readErr = fmt.Errorf("read volume at %d: %w", off+int64(got), err)
				r.mu.Unlock()
				return
			}
			// Hash here, in order, while the uploader sends the chunk
			// before. One goroutine hashes both: on a small host Glance
			// needs the other core (two hashers ran slower). Pieces that
			// fit in L2 are read from memory once for both sums.
			for p := buf[:n]; len(p) > 0; {
				k := min(len(p), hashPiece)
				r.md5.Write(p[:k])
				r.sha.Write(p[:k])
				p = p[k:]
			}
			select {
			case r.chunks <- buf[:n]:
			case <-ctx.Done():
				return
			}
			off += int64(n)
		}
	}()
	return r
}

func (r *hashingReader) Read(p []byte) (int, error) {
	if len(r.cur) == 0 {
		select {
		case c, ok := <-r.chunks:
			if !ok {
				if err := r.err(); err != nil {
					return 0, err
				}
				if err := r.ctx.Err(); err != nil {
					return 0, err
				}
				return 0, io.EOF
			}
			r.buf, r.cur = c, c
		case <-r.ctx.Done():
			return 0, r.ctx.Err()
		}
	}
	if err := r.pace.wait(r.ctx, min(len(p), len(r.cur))); err != nil {
		return 0, err
	}
	n := copy(p, r.cur)
	r.cur = r.cur[n:]
	r.n += int64(n)
	if len(r.cur) == 0 {
		r.free <- r.buf[:cap(r.buf)] // never blocks: two buffers exist
		r.buf, r.cur = nil, nil
	}
	if r.progress != nil {
		r.progress(int64(n))
	}
	return n, nil
}

func (r *hashingReader) err() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.readErr
}

func (r *hashingReader) done() int64 { return r.n }

func (r *hashingReader) sums() (string, string) {
	return hex.EncodeToString(r.md5.Sum(nil)), hex.EncodeToString(r.sha.Sum(nil))
}

func (r *hashingReader) close() {
	r.cancel()
	r.wg.Wait()
}
