package nbd

import (
	"bufio"
	"context"
	"errors"
	"log/slog"
	"net"
	"runtime/debug"
	"sync"
	"time"
)

// Config tunes the server. Zero values take defaults.
type Config struct {
	MaxInFlight      int           // concurrent requests per connection (default 16)
	HandshakeTimeout time.Duration // bound on the whole handshake (default 10s)
	ReadTimeout      time.Duration // bound on one backend read (default 60s)
	WriteTimeout     time.Duration // bound on sending one reply (default 60s)
	MaxBufferBytes   int64         // read buffers held by all connections together (default 256 MiB)
}

func (c Config) withDefaults() Config {
	if c.MaxInFlight <= 0 {
		c.MaxInFlight = 16
	}
	if c.HandshakeTimeout <= 0 {
		c.HandshakeTimeout = 10 * time.Second
	}
	if c.ReadTimeout <= 0 {
		c.ReadTimeout = 60 * time.Second
	}
	if c.WriteTimeout <= 0 {
		c.WriteTimeout = 60 * time.Second
	}
	if c.MaxBufferBytes <= 0 {
		c.MaxBufferBytes = 256 << 20
	}
	// Below one maximal request, such a request could never run.
	c.MaxBufferBytes = max(c.MaxBufferBytes, maxBlockSize)
	return c
}

// Server serves Exports over any number of listeners.
//
// Waiting for the next request has no time bound of its own: an attached
// disk may sit idle for hours. Shutdown and the Serve context end such waits.
type Server struct {
	cfg     Config
	exports Exports
	log     *slog.Logger
	pool    bufPool
	budget  *byteBudget

	mu        sync.Mutex
	closing   bool
	listeners map[net.Listener]struct{}
	conns     map[*tracked]struct{}
	wg        sync.WaitGroup // connection goroutines
}

// tracked is the server's handle on one connection.
type tracked struct {
	nc     net.Conn
	cancel context.CancelFunc

	mu       sync.Mutex
	draining bool
}

// drain stops the connection reading: a handshake dies, a transmission loop
// finishes its requests in flight and closes.
func (t *tracked) drain() {
	t.mu.Lock()
	t.draining = true
	t.mu.Unlock()
	_ = t.nc.SetReadDeadline(time.Now())
}

func (t *tracked) isDraining() bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.draining
}

// NewServer makes a server. log may be nil.
func NewServer(cfg Config, exports Exports, log *slog.Logger) *Server {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Server{
		cfg:       cfg.withDefaults(),
		exports:   exports,
		log:       log,
		budget:    newByteBudget(cfg.withDefaults().MaxBufferBytes),
		listeners: make(map[net.Listener]struct{}),
		conns:     make(map[*tracked]struct{}),
	}
}

// Serve accepts connections on l until ctx ends or Shutdown is called, and
// then returns nil. Ending ctx also drops the connections accepted here at
// once; Shutdown is the graceful way. Serve closes l.
func (s *Server) Serve(ctx context.Context, l net.Listener) error {
	s.mu.Lock()
	if s.closing {
		s.mu.Unlock()
		_ = l.Close()
		return nil
	}
	s.listeners[l] = struct{}{}
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		delete(s.listeners, l)
		s.mu.Unlock()
		_ = l.Close()
	}()
	stop := context.AfterFunc(ctx, func() { _ = l.Close() })
	defer stop()

	backoff := time.Duration(0)
	for {
		nc, err := l.Accept()
		if err != nil {
			if ctx.Err() != nil || s.isClosing() || errors.Is(err, net.ErrClosed) {
				return nil
			}
			// EMFILE and friends pass; back off instead of spinning.
			backoff = min(max(2*backoff, 5*time.Millisecond), time.Second)
			s.log.Warn("nbd: accept failed; retrying", "err", err, "backoff", backoff)
			select {
			case <-time.After(backoff):
				continue
			case <-ctx.Done():
				return nil
			}
		}
		backoff = 0
		s.start(ctx, nc)
	}
}

func (s *Server) isClosing() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.closing
}

func (s *Server) start(ctx context.Context, nc net.Conn) {
	cctx, cancel := context.WithCancel(ctx)
	t := &tracked{nc: nc, cancel: cancel}
	s.mu.Lock()
	if s.closing {
		s.mu.Unlock()
		cancel()
		_ = nc.Close()
		return
	}
	s.conns[t] = struct{}{}
	s.wg.Add(1)
	s.mu.Unlock()
	go s.serveConn(cctx, t)
}

// serveConn runs one connection: bounded handshake, then transmission. A
// panic here closes this connection only.
func (s *Server) serveConn(ctx context.Context, t *tracked) {
	log := s.log.With("remote", t.nc.RemoteAddr().String())
	defer s.wg.Done()
	defer func() {
		s.mu.Lock()
		delete(s.conns, t)
		s.mu.Unlock()
	}()
	defer t.nc.Close()
	defer t.cancel()
	defer func() {
		if r := recover(); r != nil {
			log.Error("nbd: panic in connection; closed it", "panic", r, "stack", string(debug.Stack()))
		}
	}()
	// Cancelling the context (Serve's ctx, a forced Shutdown, a dead
	// client) unblocks every read and write on the socket.
	stop := context.AfterFunc(ctx, func() { _ = t.nc.Close() })
	defer stop()

	_ = t.nc.SetDeadline(time.Now().Add(s.cfg.HandshakeTimeout))
	br := bufio.NewReaderSize(t.nc, 64<<10)
	sess, err := negotiate(br, t.nc, s.exports)
	if err != nil {
		if isAbort(err) {
			log.Debug("nbd: client aborted handshake")
		} else {
			log.Info("nbd: handshake failed", "err", err)
		}
		return
	}
	// Clear the handshake bound; if Shutdown came in meanwhile, its
	// deadline would be lost here, so check after.
	_ = t.nc.SetDeadline(time.Time{})
	if t.isDraining() {
		return
	}
	log = log.With("export", sess.export.Name)
	log.Debug("nbd: transmission", "structured", sess.structured, "base_allocation", sess.meta)
	c := &conn{
		r:        br,
		w:        t.nc,
		sess:     sess,
		size:     sess.export.Source.Size(),
		pool:     &s.pool,
		budget:   s.budget,
		log:      log,
		readTO:   s.cfg.ReadTimeout,
		writeTO:  s.cfg.WriteTimeout,
		ctx:      ctx,
		cancel:   t.cancel,
		sem:      make(chan struct{}, s.cfg.MaxInFlight),
		draining: t.isDraining,
	}
	if err := c.serve(); err != nil && !errors.Is(err, errDrained) {
		log.Debug("nbd: connection ended", "err", err)
	}
}

// Shutdown stops accepting, drains requests in flight (bounded by ctx) and
// closes every connection. When ctx ends first, remaining connections are
// dropped at once and ctx's error is returned.
func (s *Server) Shutdown(ctx context.Context) error {
	s.mu.Lock()
	s.closing = true
	for l := range s.listeners {
		_ = l.Close()
	}
	conns := make([]*tracked, 0, len(s.conns))
	for t := range s.conns {
		conns = append(conns, t)
	}
	s.mu.Unlock()

	for _, t := range conns {
		t.drain()
	}
	done := make(chan struct{})
	go func() {
		s.wg.Wait()
		close(done)
	}()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		s.mu.Lock()
		for t := range s.conns {
			t.cancel()
		}
		s.mu.Unlock()
		return ctx.Err()
	}
}
