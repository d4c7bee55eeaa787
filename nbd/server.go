package nbd

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"time"
)

// CONTRACT STUB: signatures here are the agreed API; bodies are being written.

// Config tunes the server. Zero values take defaults.
type Config struct {
	MaxInFlight      int           // concurrent requests per connection (default 16)
	HandshakeTimeout time.Duration // bound on the whole handshake (default 10s)
	ReadTimeout      time.Duration // bound on one backend read (default 60s)
}

// Server serves Exports over any number of listeners.
type Server struct{}

// NewServer makes a server.
func NewServer(cfg Config, exports Exports, log *slog.Logger) *Server { return &Server{} }

// Serve accepts connections on l until ctx ends or Shutdown is called.
func (s *Server) Serve(ctx context.Context, l net.Listener) error {
	return errors.New("nbd: not implemented yet")
}

// Shutdown stops accepting, drains requests in flight (bounded by ctx) and
// closes every connection.
func (s *Server) Shutdown(ctx context.Context) error { return nil }
