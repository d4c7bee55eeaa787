package hostd

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"github.com/glancegw/glancegw/fs"
)

// defaultMountpoint is where a domain mounts when no mountpoint is asked.
func (d *Daemon) defaultMountpoint(rec DomainRecord) string {
	return filepath.Join(d.cfg.MountRoot, rec.Name)
}

// MountAnswer is the answer of POST /v1/domains/{d}/mount: the domain,
// and a warning when the mount is in place but the domain's first listing
// failed (Glance down, credentials refused): the mount stays, since Glance
// may come back, and the warning says what failed.
type MountAnswer struct {
	Domain
	Warning string `json:"warning,omitempty"`
}

// Mount mounts the domain key at mountpoint (empty: the recorded one, else
// <MountRoot>/<name>) and records it as mounted, then lists the domain once
// within ctx and the listing's bound. Mounting a mounted domain at the same
// place is a no-op; at another place it is a conflict. A tree that is no
// longer at its mountpoint (unmounted outside the daemon) does not count as
// mounted: it is let go and the domain mounted again.
func (d *Daemon) Mount(ctx context.Context, key, mountpoint string) (MountAnswer, error) {
	dom, err := d.mount(key, mountpoint)
	if err != nil {
		return MountAnswer{}, err
	}
	// Outside opMu: a hung Glance must not hold up other domains.
	lctx, cancel := context.WithTimeout(ctx, d.cfg.GlanceTimeout)
	defer cancel()
	var warning string
	if _, err := dom.images(lctx, false); err != nil {
		warning = fmt.Sprintf("mounted, but the first listing failed (the mount stays and lists again on use): %v", err)
		d.log.Warn("mounted a domain whose listing fails", "domain", dom.record().Name, "err", err)
	}
	return MountAnswer{Domain: dom.view(), Warning: warning}, nil
}

func (d *Daemon) mount(key, mountpoint string) (*domain, error) {
	if mountpoint != "" {
		if !filepath.IsAbs(mountpoint) {
			return nil, badRequest("mountpoint %q must be an absolute path", mountpoint)
		}
		mountpoint = filepath.Clean(mountpoint)
	}
	d.opMu.Lock()
	defer d.opMu.Unlock()
	dom, err := d.find(key)
	if err != nil {
		return nil, err
	}
	rec := dom.record()
	if srv, lost := dom.liveMount(); srv != nil && !lost {
		if mountpoint == "" || mountpoint == rec.Mountpoint {
			return dom, nil
		}
		return nil, conflict("domain %s is mounted at %s", rec.Name, rec.Mountpoint)
	} else if srv != nil {
		d.dropLost(dom, srv)
	}
	if mountpoint == "" {
		mountpoint = rec.Mountpoint
	}
	if mountpoint == "" {
		mountpoint = d.defaultMountpoint(rec)
	}
	for _, o := range d.domainList() {
		if srv, lost := o.liveMount(); o != dom && srv != nil && !lost && o.record().Mountpoint == mountpoint {
			return nil, conflict("domain %s is mounted at %s", o.record().Name, mountpoint)
		}
	}
	if err := d.mountLocked(dom, mountpoint); err != nil {
		return nil, err
	}
	rec.Mounted, rec.Mountpoint = true, mountpoint
	if err := d.saveWith(d.domainList(), &rec); err != nil {
		d.unmountTree(dom)
		return nil, err
	}
	dom.update(rec, dom.secrets())
	return dom, nil
}

// mountLocked mounts the tree of dom at mountpoint. Callers hold opMu.
func (d *Daemon) mountLocked(dom *domain, mountpoint string) error {
	rec := dom.record()
	name := rec.Name
	// What is created here is removed again on unmount; the default
	// mountpoint, in the daemon's own mount root, counts as created even
	// when a killed daemon left it, and so do the directories made for a
	// lost tree at the same place.
	prev := dom.madeDirs()
	if len(prev) > 0 && prev[0] != mountpoint {
		d.removeDirs(prev) // a lost tree's, elsewhere
	}
	made := missingDirs(mountpoint)
	switch {
	case len(made) > 0:
	case len(prev) > 0 && prev[0] == mountpoint:
		made = prev
	case mountpoint == d.defaultMountpoint(rec):
		made = []string{mountpoint}
	}
	dom.setMount(nil, nil)
	if err := os.MkdirAll(mountpoint, 0o755); err != nil {
		err = fmt.Errorf("mount %s: create mountpoint: %w", name, err)
		dom.setError(err)
		return err
	}
	// No live Server of ours is at mountpoint (checked by the callers), so
	// any FUSE mount there is a leftover of a killed daemon.
	if err := fs.CleanStale(mountpoint); err != nil {
		d.log.Warn("cleaning a stale mount failed", "mountpoint", mountpoint, "err", err)
	}
	// Mounting over a non-empty directory would hide what is there; with a
	// SocketGroup that would let group members shadow system directories.
	if err := checkEmptyDir(mountpoint); err != nil {
		d.removeDirs(made)
		dom.setError(err)
		return err
	}
	srv, err := fs.Mount(d.life, mountpoint, dom, fs.Config{
		RefreshTTL:   d.cfg.RefreshTTL,
		MissInterval: d.cfg.MissInterval,
		Debug:        d.cfg.FUSEDebug,
		DirectIO:     d.cfg.DirectIO,
	}, d.log.With("component", "fs"))
	if err != nil {
		d.removeDirs(made)
		err = fmt.Errorf("mount %s at %s: %w", name, mountpoint, err)
		dom.setError(err)
		return err
	}
	dom.setMount(srv, made)
	dom.setError(nil)
	go d.watchMount(dom, srv)
	return nil
}

// watchMount waits for the serve loop of srv, dom's tree, to end. When it
// ends without the daemon unmounting it (someone ran umount, umount -l or
// fusermount -u), the domain is marked lost.
func (d *Daemon) watchMount(dom *domain, srv *fs.Server) {
	<-srv.Done()
	if !srv.Lost() {
		return
	}
	d.opMu.Lock()
	defer d.opMu.Unlock()
	d.dropLost(dom, srv)
}

// dropLost forgets srv, dom's tree, which left its mountpoint without the
// daemon unmounting it, and logs it. The domain stays recorded as mounted:
// `glancegw mount` (or the next start) mounts it again, `glancegw unmount`
// clears the record. Callers hold opMu.
func (d *Daemon) dropLost(dom *domain, srv *fs.Server) {
	if dom.mounted() != srv {
		return // unmounted or replaced meanwhile
	}
	// Touches nothing at the mountpoint: the tree is not there any more.
	if err := srv.Unmount(); err != nil {
		dom.logger().Warn("letting go of a lost mount failed", "mountpoint", srv.Mountpoint(), "err", err)
	}
	dom.setLost()
	dom.logger().Warn("mount lost: it was unmounted outside the daemon; the domain stays recorded as mounted and glancegw mount mounts it again",
		"mountpoint", srv.Mountpoint())
}

// missingDirs lists the directories of path that do not exist, leaf first.
func missingDirs(path string) []string {
	var out []string
	for p := filepath.Clean(path); ; p = filepath.Dir(p) {
		if _, err := os.Lstat(p); !errors.Is(err, os.ErrNotExist) {
			return out
		}
		out = append(out, p)
		if filepath.Dir(p) == p {
			return out
		}
	}
}

// removeDirs removes dirs, leaf first, while they are empty: never a
// directory that holds anything.
func (d *Daemon) removeDirs(dirs []string) {
	for _, p := range dirs {
		if err := os.Remove(p); err != nil && !errors.Is(err, os.ErrNotExist) {
			d.log.Info("mountpoint directory kept", "path", p, "err", err)
			return
		}
	}
}

func checkEmptyDir(path string) error {
	f, err := os.Open(path)
	if err != nil {
		return fmt.Errorf("mountpoint %s: %w", path, err)
	}
	defer f.Close()
	names, err := f.Readdirnames(1)
	if err != nil && !errors.Is(err, io.EOF) {
		return badRequest("mountpoint %s: %v", path, err)
	}
	if len(names) > 0 {
		return conflict("mountpoint %s is not an empty directory", path)
	}
	return nil
}

// Unmount unmounts the domain key and records it as not mounted. It is a
// no-op for a domain that is not mounted.
func (d *Daemon) Unmount(key string) (Domain, error) {
	d.opMu.Lock()
	defer d.opMu.Unlock()
	dom, err := d.find(key)
	if err != nil {
		return Domain{}, err
	}
	if err := d.unmountLocked(dom, true); err != nil {
		return Domain{}, err
	}
	return dom.view(), nil
}

// unmountLocked unmounts dom; with forget it also records it as not
// mounted. Callers hold opMu.
func (d *Daemon) unmountLocked(dom *domain, forget bool) error {
	if err := d.unmountTree(dom); err != nil {
		return err
	}
	rec := dom.record()
	if !forget || (!rec.Mounted && rec.Mountpoint == "") {
		return nil
	}
	rec.Mounted, rec.Mountpoint = false, ""
	if err := d.saveWith(d.domainList(), &rec); err != nil {
		return err
	}
	dom.update(rec, dom.secrets())
	return nil
}

func (d *Daemon) unmountTree(dom *domain) error {
	srv := dom.mounted()
	if srv == nil {
		// A lost tree leaves the directories made for it.
		if made := dom.madeDirs(); len(made) > 0 {
			d.removeDirs(made)
		}
		dom.setMount(nil, nil)
		return nil
	}
	if err := srv.Unmount(); err != nil {
		err = fmt.Errorf("unmount %s: %w", dom.record().Name, err)
		dom.setError(err)
		return err
	}
	made := dom.madeDirs()
	dom.setMount(nil, nil)
	d.removeDirs(made)
	d.log.Info("unmounted", "domain", dom.record().Name, "mountpoint", srv.Mountpoint())
	return nil
}

// restoreMounts cleans stale mounts at every recorded or default mountpoint
// and mounts again the domains recorded as mounted. A failure is logged and
// shown on the domain; the record stays, so the next start tries again.
func (d *Daemon) restoreMounts() {
	d.opMu.Lock()
	defer d.opMu.Unlock()
	for _, dom := range d.domainList() {
		rec := dom.record()
		for _, mp := range []string{rec.Mountpoint, d.defaultMountpoint(rec)} {
			if mp == "" {
				continue
			}
			if err := fs.CleanStale(mp); err != nil {
				d.log.Warn("cleaning a stale mount failed", "mountpoint", mp, "err", err)
			}
		}
		if !rec.Mounted {
			continue
		}
		mp := rec.Mountpoint
		if mp == "" {
			mp = d.defaultMountpoint(rec)
		}
		if err := d.mountLocked(dom, mp); err != nil {
			d.log.Error("restoring a mount failed", "domain", rec.Name, "mountpoint", mp, "err", err)
			continue
		}
		d.log.Info("mount restored", "domain", rec.Name, "mountpoint", mp)
	}
}

// unmountAll unmounts every tree at shutdown, keeping them recorded as
// mounted.
func (d *Daemon) unmountAll() {
	d.opMu.Lock()
	defer d.opMu.Unlock()
	for _, dom := range d.domainList() {
		if err := d.unmountTree(dom); err != nil {
			d.log.Error("unmount at shutdown failed", "domain", dom.record().Name, "err", err)
		}
	}
}
