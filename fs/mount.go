package fs

import (
	"context"
	"errors"
	"log/slog"
	"time"
)

// CONTRACT STUB: signatures here are the agreed API; bodies are being written.

// Config tunes a mounted tree. Zero values take defaults.
type Config struct {
	RefreshTTL   time.Duration // listing refresh interval (default 30s)
	MissInterval time.Duration // least time between refreshes caused by lookup misses (default 2s)
	Debug        bool          // go-fuse debug logging
}

// Server is one mounted domain.
type Server struct{}

// Mount mounts d read-only at mountpoint and serves it until Unmount.
func Mount(ctx context.Context, mountpoint string, d Domain, cfg Config, log *slog.Logger) (*Server, error) {
	return nil, errors.New("fs: not implemented yet")
}

// Unmount unmounts and waits for the serve loop to end.
func (s *Server) Unmount() error { return nil }
