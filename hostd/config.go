package hostd

import (
	"context"
	"fmt"
	"log/slog"
	"path/filepath"
	"time"

	"github.com/glancegw/glancegw/glance"
	"github.com/glancegw/glancegw/hostd/transfer"
)

// Defaults of Config, applied by New.
const (
	DefaultStateDir   = "/var/lib/glancegw"
	DefaultMountRoot  = "/run/glancegw/mnt"
	DefaultRepoRoot   = "/var/lib/glancegw/repo"
	DefaultSocket     = "/run/glancegw/glancegw.sock"
	DefaultNBDSocket  = "/run/glancegw/nbd.sock"
	DefaultCacheSize  = 512 << 20
	DefaultRefreshTTL = 30 * time.Second
)

// Config configures a Daemon. Zero values take the defaults above.
type Config struct {
	StateDir    string // domains.json and secrets/
	MountRoot   string // default parent of mountpoints: <MountRoot>/<domain name>
	RepoRoot    string // where imported volumes go
	Socket      string // the local API's unix socket
	SocketGroup string // group name or gid granted rw on Socket (0660); empty: root only (0600)
	CacheSize   int64  // bytes of the shared block cache
	NBDSocket   string // NBD unix socket, always served
	NBDListen   string // NBD TCP address, served only when set
	RefreshTTL  time.Duration

	// MissInterval is the least time between catalog refreshes forced by a
	// lookup miss or ?refresh=1 (default 2s).
	MissInterval time.Duration
	// GlanceTimeout bounds connecting to a domain's Glance and one listing
	// (default 30s).
	GlanceTimeout time.Duration
	// ShutdownTimeout bounds draining the API and NBD on shutdown (default 10s).
	ShutdownTimeout time.Duration
	// FUSEDebug turns on go-fuse's debug log.
	FUSEDebug bool
	// DirectIO serves mounted files with direct I/O (see fs.Config).
	DirectIO bool
	// MaxJobs bounds the import/export jobs running at once (default 2);
	// more wait queued.
	MaxJobs int
	// TransferRateLimit caps all imports and exports together, in bytes
	// per second (0: no limit). It overrides Transfer.RateLimit.
	TransferRateLimit int64
	// Transfer tunes the copy engine.
	Transfer transfer.Config

	// connect builds a domain's Glance client; tests replace it.
	connect connectFunc
}

type connectFunc func(ctx context.Context, cfg glance.Config, log *slog.Logger) (backend, error)

func (c *Config) applyDefaults() error {
	def := func(s *string, v string) {
		if *s == "" {
			*s = v
		}
	}
	def(&c.StateDir, DefaultStateDir)
	def(&c.MountRoot, DefaultMountRoot)
	def(&c.RepoRoot, DefaultRepoRoot)
	def(&c.Socket, DefaultSocket)
	def(&c.NBDSocket, DefaultNBDSocket)
	if c.CacheSize == 0 {
		c.CacheSize = DefaultCacheSize
	}
	if c.RefreshTTL == 0 {
		c.RefreshTTL = DefaultRefreshTTL
	}
	if c.MissInterval == 0 {
		c.MissInterval = 2 * time.Second
	}
	if c.GlanceTimeout == 0 {
		c.GlanceTimeout = 30 * time.Second
	}
	if c.ShutdownTimeout == 0 {
		c.ShutdownTimeout = 10 * time.Second
	}
	if c.MaxJobs <= 0 {
		c.MaxJobs = 2
	}
	if c.TransferRateLimit < 0 {
		return fmt.Errorf("hostd: config: transfer rate limit %d is negative", c.TransferRateLimit)
	}
	if c.TransferRateLimit > 0 {
		c.Transfer.RateLimit = c.TransferRateLimit
	}
	if c.connect == nil {
		c.connect = connectGlance
	}
	if c.CacheSize < 0 {
		return fmt.Errorf("hostd: config: cache size %d is negative", c.CacheSize)
	}
	if c.RefreshTTL < 0 || c.MissInterval < 0 || c.GlanceTimeout < 0 || c.ShutdownTimeout < 0 {
		return fmt.Errorf("hostd: config: durations must not be negative")
	}
	for _, p := range []*string{&c.StateDir, &c.MountRoot, &c.RepoRoot, &c.Socket, &c.NBDSocket} {
		abs, err := filepath.Abs(*p)
		if err != nil {
			return fmt.Errorf("hostd: config: path %q: %w", *p, err)
		}
		*p = abs
	}
	return nil
}
