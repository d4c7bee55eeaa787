// Package hostd is the glancegw host daemon: it keeps the configured Glance
// storage domains (state and secrets on disk), serves each of them as a FUSE
// tree and every image as an NBD export through one shared block cache, and
// answers a local JSON API on a unix socket. Client is the thin client of that
// API used by the CLI.
package hostd

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"runtime/debug"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/glancegw/glancegw/cache"
	"github.com/glancegw/glancegw/hostd/transfer"
	"github.com/glancegw/glancegw/nbd"
)

// Daemon is the host daemon. Make it with New and run it once with Run.
type Daemon struct {
	cfg     Config
	log     *slog.Logger
	store   store
	now     func() time.Time
	started time.Time

	opMu sync.Mutex // serializes changes to domains and mounts

	mu      sync.RWMutex // guards the fields below
	domains []*domain    // in the order they were added
	nbdErr  string
	nbdTCP  string // address the TCP listener got

	// Set by Run before anything is served.
	life  context.Context // the daemon's lifetime, outlives Run's ctx during shutdown
	cache *cache.Cache

	jobs        *jobManager
	jobsChanged bool // jobs were marked interrupted at load
	engine      *transfer.Engine
	cleaner     *cleaner // deletes images of exports that did not succeed
}

// New checks cfg, applies its defaults and loads the recorded domains.
func New(cfg Config, log *slog.Logger) (*Daemon, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if err := cfg.applyDefaults(); err != nil {
		return nil, err
	}
	d := &Daemon{cfg: cfg, log: log, store: store{dir: cfg.StateDir}, now: time.Now}
	d.engine = transfer.New(cfg.Transfer, log.With("component", "transfer"))
	d.jobs = newJobManager(jobsPath(cfg.StateDir), cfg.MaxJobs, log.With("component", "jobs"), d.now)
	changed, err := d.jobs.load()
	if err != nil {
		return nil, err
	}
	d.jobsChanged = changed
	d.cleaner = newCleaner(d.jobs, d.domainGlance, log.With("component", "cleanup"),
		cfg.GlanceTimeout, cleanupEvery, cleanupGiveUp)
	d.jobs.ended = d.cleaner.jobEnded
	recs, err := d.store.load()
	if err != nil {
		return nil, err
	}
	for _, rec := range recs {
		sec, err := d.store.loadSecrets(rec.UUID)
		if err != nil {
			return nil, err
		}
		d.domains = append(d.domains, newDomain(rec, sec, d.domainDeps()))
	}
	return d, nil
}

func (d *Daemon) domainDeps() domainDeps {
	return domainDeps{
		log:     d.log,
		connect: d.cfg.connect,
		timeout: d.cfg.GlanceTimeout,
		ttl:     d.cfg.RefreshTTL,
		missMin: d.cfg.MissInterval,
		now:     d.now,
		open:    func(src cache.BlockSource) cache.BlockSource { return d.cache.Open(src) },
	}
}

// Run serves until ctx ends, then shuts down: it stops the listeners, drains
// NBD, unmounts every tree (keeping them recorded as mounted, so the next
// start mounts them again) and returns.
func (d *Daemon) Run(ctx context.Context) error {
	// The cache's blocks live outside the Go heap (see cache's arena), but
	// NBD buffers and the rest do not: a soft limit keeps the GC from
	// letting the heap double (GOGC's default) on a busy host.
	debug.SetMemoryLimit(d.cfg.CacheSize + 64<<20)

	if err := d.store.init(); err != nil {
		return err
	}
	// Two daemons on one state directory would fight over its files and
	// mounts, and on one repository remove each other's temporary files.
	unlockState, err := lockStateDir(d.cfg.StateDir)
	if err != nil {
		return err
	}
	defer unlockState()
	unlockRepo, err := lockRepo(d.cfg.RepoRoot)
	if err != nil {
		return err
	}
	defer unlockRepo()
	if err := os.MkdirAll(d.cfg.MountRoot, 0o755); err != nil {
		return fmt.Errorf("hostd: mount root: %w", err)
	}
	apiL, err := listenUnix(d.cfg.Socket, 0o600, d.cfg.SocketGroup)
	if err != nil {
		return err
	}
	defer apiL.Close()
	nbdL, err := listenUnix(d.cfg.NBDSocket, 0o660, "")
	if err != nil {
		return err
	}
	defer nbdL.Close()
	listeners := []net.Listener{nbdL}
	if d.cfg.NBDListen != "" {
		tcpL, err := net.Listen("tcp", d.cfg.NBDListen)
		if err != nil {
			return fmt.Errorf("hostd: nbd listen %s: %w", d.cfg.NBDListen, err)
		}
		defer tcpL.Close()
		if !isLoopback(tcpL.Addr()) {
			d.log.Warn("NBD is served on a non-loopback address without authentication", "addr", tcpL.Addr().String())
		}
		d.mu.Lock()
		d.nbdTCP = tcpL.Addr().String()
		d.mu.Unlock()
		listeners = append(listeners, tcpL)
	}

	life, stop := context.WithCancel(context.WithoutCancel(ctx))
	defer stop()
	d.life = life
	d.cache = cache.New(life, cache.Config{MaxBytes: d.cfg.CacheSize, Reserve: true}, d.log.With("component", "cache"))
	d.started = d.now()

	nbdSrv := nbd.NewServer(nbd.Config{}, &exports{d: d}, d.log.With("component", "nbd"))
	var wg sync.WaitGroup
	for _, l := range listeners {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := nbdSrv.Serve(life, l); err != nil && life.Err() == nil {
				// NBD is one front-end of three; the daemon stays up
				// without it and status shows why.
				d.log.Error("NBD server stopped", "addr", l.Addr().String(), "err", err)
				d.mu.Lock()
				d.nbdErr = err.Error()
				d.mu.Unlock()
			}
		}()
	}

	d.restoreMounts()
	d.recoverJobs(life)
	d.jobs.begin(life)

	api := &http.Server{
		Handler:           d.handler(),
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       30 * time.Second,
		IdleTimeout:       60 * time.Second,
		ErrorLog:          slog.NewLogLogger(d.log.Handler(), slog.LevelDebug),
		BaseContext:       func(net.Listener) context.Context { return life },
	}
	apiErr := make(chan error, 1)
	go func() { apiErr <- api.Serve(apiL) }()
	d.log.Info("glancegw daemon serving", "version", Version, "socket", d.cfg.Socket,
		"nbd_socket", d.cfg.NBDSocket, "nbd_listen", d.cfg.NBDListen, "domains", len(d.domainList()))

	var runErr error
	select {
	case <-ctx.Done():
	case err := <-apiErr:
		runErr = fmt.Errorf("hostd: api server: %w", err)
	}

	d.log.Info("shutting down")
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), d.cfg.ShutdownTimeout)
	defer cancel()
	// Jobs first: a client long-polling a job then hears it was
	// interrupted, and the API drains at once instead of waiting out the
	// poll.
	d.jobs.shutdown(sctx)
	if err := api.Shutdown(sctx); err != nil {
		d.log.Warn("api shutdown", "err", err)
	}
	if err := nbdSrv.Shutdown(sctx); err != nil {
		d.log.Warn("nbd shutdown", "err", err)
	}
	for _, l := range listeners {
		l.Close()
	}
	d.unmountAll()
	stop()
	wg.Wait()
	d.cleaner.wait()
	d.log.Info("stopped")
	return runErr
}

// recoverJobs records jobs a stopped daemon left as interrupted, removes
// the temporary files of their imports and starts deleting, in the
// background, the images their exports created.
func (d *Daemon) recoverJobs(life context.Context) {
	if d.jobsChanged {
		d.jobs.save()
	}
	d.cleaner.begin(life)
	removed, err := transfer.RemoveTemps(d.cfg.RepoRoot)
	for _, p := range removed {
		d.log.Info("removed the temporary file of an interrupted import", "path", p)
	}
	if err != nil {
		d.log.Warn("removing temporary files of interrupted imports", "err", err)
	}
}

// listenUnix listens on a unix socket at path with mode, refusing when
// another process answers there and removing a stale socket file.
func listenUnix(path string, mode os.FileMode, group string) (net.Listener, error) {
	if err := os.MkdirAll(dirOf(path), 0o755); err != nil {
		return nil, fmt.Errorf("hostd: socket dir of %s: %w", path, err)
	}
	if fi, err := os.Lstat(path); err == nil {
		if fi.Mode()&os.ModeSocket == 0 {
			return nil, fmt.Errorf("hostd: %s exists and is not a socket", path)
		}
		if c, err := net.DialTimeout("unix", path, time.Second); err == nil {
			c.Close()
			return nil, fmt.Errorf("hostd: a daemon answers on %s: %w", path, ErrAlreadyRunning)
		}
		if err := os.Remove(path); err != nil {
			return nil, fmt.Errorf("hostd: remove stale socket %s: %w", path, err)
		}
	}
	l, err := net.Listen("unix", path)
	if err != nil {
		return nil, fmt.Errorf("hostd: listen %s: %w", path, err)
	}
	if group != "" {
		gid, err := lookupGroup(group)
		if err == nil {
			err = os.Chown(path, -1, gid)
		}
		if err != nil {
			l.Close()
			return nil, fmt.Errorf("hostd: socket group %s of %s: %w", group, path, err)
		}
		mode = 0o660
	}
	if err := os.Chmod(path, mode); err != nil {
		l.Close()
		return nil, fmt.Errorf("hostd: chmod %s: %w", path, err)
	}
	return l, nil
}

func dirOf(path string) string {
	if i := strings.LastIndexByte(path, '/'); i > 0 {
		return path[:i]
	}
	return "."
}

func isLoopback(a net.Addr) bool {
	ta, ok := a.(*net.TCPAddr)
	return ok && ta.IP.IsLoopback()
}

// domainList is a snapshot of the domains.
func (d *Daemon) domainList() []*domain {
	d.mu.RLock()
	defer d.mu.RUnlock()
	return append([]*domain(nil), d.domains...)
}

// find resolves D, a domain's sdUUID or name.
func (d *Daemon) find(key string) (*domain, error) {
	d.mu.RLock()
	defer d.mu.RUnlock()
	if u, err := parseUUID(key); err == nil {
		for _, dom := range d.domains {
			if dom.record().UUID == u {
				return dom, nil
			}
		}
	}
	for _, dom := range d.domains {
		if dom.record().Name == key {
			return dom, nil
		}
	}
	return nil, notFound("domain %q not found", key)
}

func (d *Daemon) records() []DomainRecord {
	doms := d.domainList()
	recs := make([]DomainRecord, len(doms))
	for i, dom := range doms {
		recs[i] = dom.record()
	}
	return recs
}

// saveWith persists the domains with one record replaced (or the list as is
// when rec is nil). Callers hold opMu.
func (d *Daemon) saveWith(doms []*domain, replace *DomainRecord) error {
	recs := make([]DomainRecord, 0, len(doms))
	for _, dom := range doms {
		r := dom.record()
		if replace != nil && r.UUID == replace.UUID {
			r = *replace
		}
		recs = append(recs, r)
	}
	return d.store.save(recs)
}

// AddDomain validates spec, stores it and returns the new domain. It does not
// contact Glance: a domain whose Glance is down is still added.
func (d *Daemon) AddDomain(spec DomainSpec) (Domain, error) {
	rec := DomainRecord{
		UUID: spec.UUID, Name: spec.Name, URL: spec.URL, Auth: spec.Auth,
		AuthURL: spec.AuthURL, Username: spec.Username, Project: spec.Project,
		UserDomain: spec.UserDomain, ProjectDomain: spec.ProjectDomain,
		CAFile: spec.CAFile, Insecure: spec.Insecure,
	}
	if rec.UUID == "" {
		rec.UUID = newUUID()
	} else {
		u, err := parseUUID(rec.UUID)
		if err != nil {
			return Domain{}, err
		}
		rec.UUID = u
	}
	sec := secrets{Token: spec.Token, Password: spec.Password}
	if err := validateDomain(&rec, sec); err != nil {
		return Domain{}, err
	}

	d.opMu.Lock()
	defer d.opMu.Unlock()
	doms := d.domainList()
	if err := checkUnique(doms, rec, ""); err != nil {
		return Domain{}, err
	}
	if err := d.store.saveSecrets(rec.UUID, sec); err != nil {
		return Domain{}, err
	}
	dom := newDomain(rec, sec, d.domainDeps())
	if err := d.saveWith(append(doms, dom), nil); err != nil {
		d.store.removeSecrets(rec.UUID)
		return Domain{}, err
	}
	d.mu.Lock()
	d.domains = append(d.domains, dom)
	d.mu.Unlock()
	d.log.Info("domain added", "domain", rec.Name, "sd_uuid", rec.UUID, "url", rec.URL, "auth", rec.Auth)
	return dom.view(), nil
}

// checkUnique reports a conflict when rec's name or uuid is taken by a domain
// other than the one with uuid self.
func checkUnique(doms []*domain, rec DomainRecord, self string) error {
	for _, o := range doms {
		or := o.record()
		if or.UUID == self {
			continue
		}
		switch {
		case or.UUID == rec.UUID:
			return conflict("a domain with uuid %s exists (%s)", rec.UUID, or.Name)
		case or.Name == rec.Name:
			return conflict("a domain named %q exists", rec.Name)
		case strings.EqualFold(or.UUID, rec.Name):
			return conflict("domain name %q is the uuid of domain %s", rec.Name, or.Name)
		}
	}
	return nil
}

// EditDomain applies patch to the domain key.
func (d *Daemon) EditDomain(key string, patch DomainPatch) (Domain, error) {
	d.opMu.Lock()
	defer d.opMu.Unlock()
	dom, err := d.find(key)
	if err != nil {
		return Domain{}, err
	}
	rec, sec := applyPatch(dom.record(), dom.secrets(), patch)
	if err := validateDomain(&rec, sec); err != nil {
		return Domain{}, err
	}
	if err := checkUnique(d.domainList(), rec, rec.UUID); err != nil {
		return Domain{}, err
	}
	if err := d.store.saveSecrets(rec.UUID, sec); err != nil {
		return Domain{}, err
	}
	if err := d.saveWith(d.domainList(), &rec); err != nil {
		return Domain{}, err
	}
	dom.update(rec, sec)
	d.log.Info("domain edited", "domain", rec.Name, "sd_uuid", rec.UUID)
	return dom.view(), nil
}

// applyPatch returns rec and sec with patch applied. Switching auth drops
// the settings and secrets of the old kind unless the patch sets them.
func applyPatch(rec DomainRecord, sec secrets, p DomainPatch) (DomainRecord, secrets) {
	set := func(dst *string, v *string) {
		if v != nil {
			*dst = *v
		}
	}
	if p.Auth != nil && *p.Auth != rec.Auth {
		if *p.Auth != "keystone" {
			rec.AuthURL, rec.Username, rec.Project, rec.UserDomain, rec.ProjectDomain = "", "", "", "", ""
			sec.Password = ""
		}
		if *p.Auth != "token" {
			sec.Token = ""
		}
	}
	set(&rec.Name, p.Name)
	set(&rec.URL, p.URL)
	set(&rec.Auth, p.Auth)
	set(&rec.AuthURL, p.AuthURL)
	set(&rec.Username, p.Username)
	set(&rec.Project, p.Project)
	set(&rec.UserDomain, p.UserDomain)
	set(&rec.ProjectDomain, p.ProjectDomain)
	set(&rec.CAFile, p.CAFile)
	set(&sec.Token, p.Token)
	set(&sec.Password, p.Password)
	if p.Insecure != nil {
		rec.Insecure = *p.Insecure
	}
	return rec, sec
}

// RemoveDomain unmounts the domain key and forgets it with its secrets.
func (d *Daemon) RemoveDomain(key string) error {
	d.opMu.Lock()
	defer d.opMu.Unlock()
	dom, err := d.find(key)
	if err != nil {
		return err
	}
	if err := d.unmountLocked(dom, true); err != nil {
		return err
	}
	rec := dom.record()
	var rest []*domain
	for _, o := range d.domainList() {
		if o != dom {
			rest = append(rest, o)
		}
	}
	if err := d.saveWith(rest, nil); err != nil {
		return err
	}
	d.mu.Lock()
	d.domains = rest
	d.mu.Unlock()
	if err := d.store.removeSecrets(rec.UUID); err != nil {
		d.log.Warn("domain removed but its secrets were not", "domain", rec.Name, "err", err)
	}
	d.log.Info("domain removed", "domain", rec.Name, "sd_uuid", rec.UUID)
	return nil
}

// Domains lists the domains.
func (d *Daemon) Domains() []Domain {
	doms := d.domainList()
	out := make([]Domain, len(doms))
	for i, dom := range doms {
		out[i] = dom.view()
	}
	return out
}

// Domain returns the domain key.
func (d *Daemon) Domain(key string) (Domain, error) {
	dom, err := d.find(key)
	if err != nil {
		return Domain{}, err
	}
	return dom.view(), nil
}

// Images lists the images of domain key in every status.
func (d *Daemon) Images(ctx context.Context, key string, refresh bool) ([]Image, error) {
	dom, err := d.find(key)
	if err != nil {
		return nil, err
	}
	imgs, err := dom.images(ctx, refresh)
	if err != nil {
		return nil, err
	}
	out := make([]Image, len(imgs))
	for i, im := range imgs {
		out[i] = toAPIImage(im, dom.detected(im))
	}
	return out, nil
}

// Status reports the daemon's state.
func (d *Daemon) Status() Status {
	st := d.cache.Stats()
	s := Status{
		Version:   Version,
		PID:       os.Getpid(),
		StartedAt: d.started,
		Uptime:    d.now().Sub(d.started).Seconds(),
		Cache: CacheStats{
			MaxBytes: d.cfg.CacheSize, Bytes: st.Bytes, Hits: st.Hits, Misses: st.Misses,
			Fetches: st.Fetches, Evictions: st.Evictions,
		},
		NBDSocket: d.cfg.NBDSocket,
		Mounts:    []MountInfo{},
	}
	d.mu.RLock()
	s.NBDListen, s.NBDError, s.Domains = d.nbdTCP, d.nbdErr, len(d.domains)
	d.mu.RUnlock()
	for _, dom := range d.domainList() {
		v := dom.view()
		m := MountInfo{Domain: v.Name, UUID: v.UUID, Mountpoint: v.Mountpoint}
		switch {
		case v.Active:
			s.Mounts = append(s.Mounts, m)
		case v.Lost != "":
			s.LostMounts = append(s.LostMounts, m)
		}
	}
	for _, ms := range [][]MountInfo{s.Mounts, s.LostMounts} {
		sort.Slice(ms, func(i, j int) bool { return ms[i].Mountpoint < ms[j].Mountpoint })
	}
	return s
}
