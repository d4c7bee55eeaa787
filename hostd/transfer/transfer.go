// Package transfer is glancegw's copy engine: import copies an image from a
// block source (a Glance image through the shared cache, or any HTTP(S) URL)
// into a local volume, parallel, sparse and hash-verified while it copies;
// export streams a local volume to Glance with its md5 and sha512 computed on
// the way and compared with what Glance reports.
//
// # Volumes
//
// A volume lives at <root>/<spUUID>/<sdUUID>/images/<imgUUID>/<volUUID> with
// <volUUID>.meta beside it. The four ids must be UUIDs in the canonical
// 8-4-4-4-12 hex form; upper case is accepted and lower-cased, so one volume
// has one path. Directories are opened one component at a time with
// O_NOFOLLOW, so a symlink anywhere below the root is refused instead of
// followed. Data goes to ".<volUUID>.glancegw-tmp-<hex>" beside the volume,
// is fsynced and renamed only after the copy verified; RemoveTemps deletes
// what a killed daemon left behind.
//
// # Errors
//
// Failures carry one of the sentinels below (errors.Is), wrapped with what
// was being done, so the daemon can map them to API answers in one place.
package transfer

import (
	"errors"
	"log/slog"
	"time"
)

// Sentinel errors.
var (
	// ErrInvalid is bad input: an id that is not a UUID, a non-http(s) URL,
	// a path that would leave the root.
	ErrInvalid = errors.New("invalid request")
	// ErrExists means the volume exists and overwrite was not asked.
	ErrExists = errors.New("volume exists")
	// ErrNoVolume means the volume to export does not exist.
	ErrNoVolume = errors.New("volume not found")
	// ErrUnsafe means format inspection refused the image (it would expose
	// host files, or its format is ambiguous). It also matches
	// inspect.ErrUnsafe.
	ErrUnsafe = errors.New("image refused")
	// ErrChecksum means the bytes do not match the checksum Glance reports.
	ErrChecksum = errors.New("checksum mismatch")
	// ErrNoSpace means the volume's file system lacks room for the image.
	ErrNoSpace = errors.New("not enough free space")
	// ErrUnsupported means the image's format has no Glance disk_format.
	ErrUnsupported = errors.New("unsupported format")
	// ErrTarget means an existing image cannot take the export: it is not
	// queued, or it declares no disk format or another one than the
	// volume has.
	ErrTarget = errors.New("target image refused")
)

// Config tunes the engine. Zero values take the defaults in New.
type Config struct {
	// ChunkSize is the unit of copying (default 8 MiB).
	ChunkSize int
	// Readers read chunks from the source in offset order (default 1: the
	// Glance source streams one sequential reader at GB/s; more readers cut
	// its stream into ranged requests).
	Readers int
	// Writers check chunks for zeros and write them (default 4).
	Writers int
	// Buffers bounds the chunks in memory (default Readers+Writers+2).
	Buffers int
	// RetryFor is how long a failing source read is retried, resuming at
	// the last good byte, counted from its first attempt: no attempt starts
	// later (default 30s; negative: no retries). The Glance and HTTP
	// sources retry on their own for up to ~42 s before a read fails, so a
	// hung source is not retried again, while one that refuses at once (a
	// Glance restarting) is retried for RetryFor.
	RetryFor time.Duration
	// Backoff before the first retry, doubled each time up to MaxBackoff
	// (defaults 1s and 4s).
	Backoff    time.Duration
	MaxBackoff time.Duration
	// FreeMargin is kept free beyond the image size (default 64 MiB).
	FreeMargin int64
	// HTTPTimeout bounds the wait for response headers of generic HTTP
	// requests made by export (default 5m: Glance answers an upload after
	// storing it) and IdleTimeout a stalled upload body (default 60s).
	HTTPTimeout time.Duration
	IdleTimeout time.Duration
	// FileMode of new volumes (default 0640).
	FileMode uint32
	// RateLimit caps all imports and exports together, in bytes per
	// second (0: no cap).
	RateLimit int64
}

// Engine runs imports and exports. It is safe for concurrent use.
type Engine struct {
	cfg  Config
	log  *slog.Logger
	pace *pacer // nil without a RateLimit
}

// New returns an engine with cfg's defaults applied.
func New(cfg Config, log *slog.Logger) *Engine {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if cfg.ChunkSize <= 0 {
		cfg.ChunkSize = 8 << 20
	}
	if cfg.Readers <= 0 {
		cfg.Readers = 1
	}
	if cfg.Writers <= 0 {
		cfg.Writers = 4
	}
	if cfg.Buffers < cfg.Readers+1 {
		cfg.Buffers = cfg.Readers + cfg.Writers + 2
	}
	if cfg.RetryFor == 0 {
		cfg.RetryFor = 30 * time.Second
	} else if cfg.RetryFor < 0 {
		cfg.RetryFor = 0
	}
	if cfg.Backoff <= 0 {
		cfg.Backoff = time.Second
	}
	if cfg.MaxBackoff <= 0 {
		cfg.MaxBackoff = 4 * time.Second
	}
	cfg.MaxBackoff = max(cfg.MaxBackoff, cfg.Backoff)
	if cfg.FreeMargin == 0 {
		cfg.FreeMargin = 64 << 20
	}
	if cfg.HTTPTimeout <= 0 {
		cfg.HTTPTimeout = 5 * time.Minute
	}
	if cfg.IdleTimeout <= 0 {
		cfg.IdleTimeout = 60 * time.Second
	}
	if cfg.FileMode == 0 {
		cfg.FileMode = 0o640
	}
	return &Engine{cfg: cfg, log: log, pace: newPacer(cfg.RateLimit)}
}
