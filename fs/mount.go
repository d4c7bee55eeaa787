package fs

import (
	"context"
	"errors"
	"fmt"
	"golang.org/x/sys/unix"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
	"unicode"

	gofs "github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
)

// Config tunes a mounted tree. Zero values take defaults.
type Config struct {
	RefreshTTL   time.Duration // listing refresh interval (default 30s)
	MissInterval time.Duration // least time between refreshes caused by lookup misses (default 2s)
	Debug        bool          // go-fuse debug logging

	// EntryTimeout is how long the kernel may cache names and attributes
	// (default 1s). Short, so a deleted image vanishes soon after a refresh.
	EntryTimeout time.Duration
	ListTimeout  time.Duration // bound of one listing of the domain (default 1m)
	ReadTimeout  time.Duration // bound of one read request (default 2m)
	// MaxReadAhead is the kernel's read-ahead window in bytes (default 1 MiB).
	MaxReadAhead int
	// MaxRead is the largest read request the kernel sends (default 1 MiB,
	// the kernel's limit).
	MaxRead int
	// DirectIO serves image files with direct I/O instead of through the
	// kernel page cache. Off by default: with FOPEN_KEEP_CACHE a file read
	// once is read again from the page cache (measured: 5-6 GB/s against
	// 1.8 GB/s through the daemon), and with the kernel's read-ahead window
	// raised to MaxReadAhead (see raiseReadAhead) a cold sequential read
	// through the page cache is as fast as a direct one.
	DirectIO bool
}

func (c Config) withDefaults() Config {
	def := func(d *time.Duration, v time.Duration) {
		if *d <= 0 {
			*d = v
		}
	}
	def(&c.RefreshTTL, 30*time.Second)
	def(&c.MissInterval, 2*time.Second)
	def(&c.EntryTimeout, time.Second)
	def(&c.ListTimeout, time.Minute)
	def(&c.ReadTimeout, 2*time.Minute)
	if c.MaxReadAhead <= 0 {
		c.MaxReadAhead = 1 << 20
	}
	if c.MaxRead <= 0 || c.MaxRead > 1<<20 {
		c.MaxRead = 1 << 20
	}
	return c
}

// Server is one mounted domain.
type Server struct {
	srv        *fuse.Server
	mountpoint string
	real       string // mountpoint with symlinks resolved, as mountinfo shows it
	dev        string // "major:minor" of the mount, as mountinfo shows it; "" if unknown
	log        *slog.Logger
	cancel     context.CancelFunc
	done       chan struct{} // closed when the serve loop has ended
	asked      atomic.Bool   // Unmount was called

	once sync.Once
	err  error
}

// Mount mounts d read-only at mountpoint and serves it until Unmount. ctx
// gives values to the background work of the mount but does not end it:
// only Unmount does.
func Mount(ctx context.Context, mountpoint string, d Domain, cfg Config, log *slog.Logger) (*Server, error) {
	cfg = cfg.withDefaults()
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	info := d.Info()
	log = log.With("domain", info.Name, "mountpoint", mountpoint)
	base, cancel := context.WithCancel(context.WithoutCancel(ctx))
	t := newTree(base, d, cfg, log, time.Now)

	entryTTL, negTTL := cfg.EntryTimeout, time.Duration(0)
	opts := &gofs.Options{
		MountOptions: fuse.MountOptions{
			AllowOther:           true,
			FsName:               "glancegw:" + fsName(info.Name),
			Name:                 "glancegw",
			Options:              []string{"ro", "nosuid", "nodev"},
			DirectMount:          true, // we run as root; fusermount is the fallback
			DirectMountFlags:     syscall.MS_RDONLY | syscall.MS_NOSUID | syscall.MS_NODEV,
			MaxReadAhead:         cfg.MaxReadAhead,
			MaxWrite:             cfg.MaxRead, // also sets max_read and max_pages
			MaxBackground:        64,
			IgnoreSecurityLabels: true,
			// Our bytes are in memory, never in a file to splice from: each
			// attempt only failed (a 1 MiB read plus its header does not fit
			// the 1 MiB pipe) and logged a line per read.
			DisableSplice: true,
			// Parallel requests for large direct reads, and mmap of
			// direct-I/O files (kernel 6.6+; older kernels ignore it).
			ExtraCapabilities: fuse.CAP_ASYNC_DIO | fuse.CAP_DIRECT_IO_ALLOW_MMAP,
			Debug:             cfg.Debug,
		},
		EntryTimeout: &entryTTL,
		AttrTimeout:  &entryTTL,
		// No negative caching: a new image must show up on its first lookup.
		NegativeTimeout: &negTTL,
		RootStableAttr:  &gofs.StableAttr{Ino: 1},
	}
	// Resolved before the mount covers the directory; mountinfo names
	// mountpoints without symlinks.
	real, err := filepath.EvalSymlinks(mountpoint)
	if err == nil {
		real, err = filepath.Abs(real)
	}
	if err != nil {
		cancel()
		return nil, fmt.Errorf("fs: mount %s at %s: %w", info.Name, mountpoint, err)
	}
	srv, err := gofs.Mount(mountpoint, &dirNode{t: t, path: ""}, opts)
	if err != nil {
		cancel()
		return nil, fmt.Errorf("fs: mount %s at %s: %w", info.Name, mountpoint, err)
	}
	s := &Server{srv: srv, mountpoint: mountpoint, real: real, log: log, cancel: cancel, done: make(chan struct{})}
	var st syscall.Stat_t
	if err := syscall.Stat(mountpoint, &st); err != nil {
		log.Warn("stat of the new mount failed; read-ahead not raised", "err", err)
	} else {
		s.dev = fmt.Sprintf("%d:%d", unix.Major(st.Dev), unix.Minor(st.Dev))
		raiseReadAhead(st.Dev, cfg.MaxReadAhead, log)
	}
	go func() {
		// The loop ends after Unmount, and also when the kernel ends the
		// mount without us: umount or fusermount -u by someone else, or
		// umount -l once the last file open in the tree is closed.
		srv.Wait()
		cancel()
		close(s.done)
	}()
	log.Info("mounted domain")
	return s, nil
}

// fsName makes a domain name safe inside mount options and mountinfo.
func fsName(s string) string {
	return strings.Map(func(r rune) rune {
		if r == ',' || r == '\\' || unicode.IsSpace(r) || unicode.IsControl(r) {
			return '_'
		}
		return r
	}, s)
}

// Unmount unmounts and waits for the serve loop to end. When files are
// still open it detaches the mount lazily instead of failing or hanging:
// the mountpoint is free at once and the serve loop ends with the last
// close. A mount that is no longer attached (see Attached) is only let
// go: nothing at the mountpoint is touched, since it may hold another mount
// by now (a connection someone aborted leaves a dead mount there, which
// CleanStale removes). Calling it again returns the first result.
func (s *Server) Unmount() error {
	s.once.Do(func() {
		s.asked.Store(true)
		defer s.cancel()
		if ok, err := s.Attached(); err == nil && !ok {
			s.log.Info("unmount: the mount had already left its mountpoint")
			return
		}
		if err := s.srv.Unmount(); err == nil {
			s.log.Info("unmounted domain")
			return
		} else if derr := syscall.Unmount(s.mountpoint, syscall.MNT_DETACH); derr != nil && !errors.Is(derr, syscall.EINVAL) {
			s.err = fmt.Errorf("fs: unmount %s: %w (lazy: %v)", s.mountpoint, err, derr)
			return
		} else {
			s.log.Warn("mount busy, detached lazily", "err", err)
		}
	})
	return s.err
}

// Wait blocks until the serve loop ends (after Unmount, or an external
// umount).
func (s *Server) Wait() { <-s.done }

// Done is closed when the serve loop has ended: after Unmount, or when the
// kernel ended the mount without Unmount (see Lost).
func (s *Server) Done() <-chan struct{} { return s.done }

// Lost reports whether the serve loop ended without Unmount being called:
// someone else unmounted the tree (umount, umount -l, fusermount -u) or
// aborted its FUSE connection.
func (s *Server) Lost() bool {
	select {
	case <-s.done:
		return !s.asked.Load()
	default:
		return false
	}
}

// Attached reports whether the mount is still in place at its mountpoint
// and served. It is false once the serve loop has ended, and also while a
// tree that someone detached (umount -l) still serves the files open in
// it. It reads /proc/self/mountinfo and never touches the mountpoint. The
// mount is told apart from others there by its device number, which is
// unique while the loop runs (a later mount may reuse it). A mount stacked
// on top of this one is not noticed.
func (s *Server) Attached() (bool, error) {
	select {
	case <-s.done:
		return false, nil
	default:
	}
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return false, fmt.Errorf("fs: is %s mounted: %w", s.mountpoint, err)
	}
	defer f.Close()
	mounts, err := mountsAt(f, s.real)
	if err != nil {
		return false, fmt.Errorf("fs: is %s mounted: %w", s.mountpoint, err)
	}
	for _, m := range mounts {
		if isFUSE(m.fstype) && (s.dev == "" || m.dev == s.dev) {
			return true, nil
		}
	}
	return false, nil
}

// Mountpoint is where the domain is mounted.
func (s *Server) Mountpoint() string { return s.mountpoint }

// raiseReadAhead sets the kernel read-ahead of the mount's backing device
// to maxReadAhead. The FUSE init answer caps it but does not raise it: the
// kernel starts a FUSE mount at 128 KiB, and a cold sequential read then
// asks for 128 KiB at a time (measured: 226 MB/s against 700 MB/s at
// 1 MiB). Best effort: without sysfs the mount works, only slower.
func raiseReadAhead(dev uint64, maxReadAhead int, log *slog.Logger) {
	path := fmt.Sprintf("/sys/class/bdi/%d:%d/read_ahead_kb", unix.Major(dev), unix.Minor(dev))
	if err := os.WriteFile(path, []byte(strconv.Itoa(maxReadAhead>>10)), 0); err != nil {
		log.Warn("read-ahead not raised", "path", path, "err", err)
	}
}
