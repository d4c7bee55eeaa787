package hostd

import (
	"context"
	"fmt"
	"net"
	"net/url"
	"strings"
	"time"

	"github.com/glancegw/glancegw/glance"
	"github.com/glancegw/glancegw/nbd"
)

// exportLookupTimeout bounds the Glance work behind one export lookup or
// listing; the NBD handshake that waits on it has its own bound of 10s.
const exportLookupTimeout = 8 * time.Second

// exports is the live set of NBD exports over the domains' catalogs.
type exports struct{ d *Daemon }

var _ nbd.Exports = (*exports)(nil)

// namedImage is one export before its source is opened.
type namedImage struct {
	Name   string
	Domain int // index into the domains given to exportNames
	Image  glance.Image
}

// exportNames names the active images of the domains: <sdUUID>/<image-id>
// for each, plus <image-id> when exactly one domain has that image active.
func exportNames(sdUUIDs []string, images [][]glance.Image) []namedImage {
	count := map[string]int{}
	for _, imgs := range images {
		seen := map[string]bool{}
		for _, im := range imgs {
			if im.Status == "active" && !seen[im.ID] {
				seen[im.ID] = true
				count[im.ID]++
			}
		}
	}
	var out []namedImage
	for i, imgs := range images {
		seen := map[string]bool{}
		for _, im := range imgs {
			if im.Status != "active" || seen[im.ID] {
				continue
			}
			seen[im.ID] = true
			out = append(out, namedImage{Name: sdUUIDs[i] + "/" + im.ID, Domain: i, Image: im})
			if count[im.ID] == 1 {
				out = append(out, namedImage{Name: im.ID, Domain: i, Image: im})
			}
		}
	}
	return out
}

// listPolicy says how named gets a domain's listing.
type listPolicy int

const (
	fromMemory listPolicy = iota // the last listing, however old (Glance only if there is none)
	byTTL                        // the catalog's own rule: Glance when the listing is older than its TTL
	forced                       // Glance again (rate-limited by the catalog)
)

// listFailure is a domain whose listing an export lookup asked for and did
// not get.
type listFailure struct {
	domain string // its name
	err    error
}

// named lists the exports of the domains, each domain's listing got as
// policy(dom) says, and the domains that could not be listed. Domains that
// need Glance are listed concurrently and waited for within ctx only, so
// one Glance that hangs costs ctx's bound at most, and only when it is
// asked (also when another listing of that domain holds it up). only, when
// set, is the one sdUUID whose images are wanted: a qualified export name
// depends on no other domain.
func (e *exports) named(ctx context.Context, only string, policy func(*domain) listPolicy) ([]namedImage, []*domain, []listFailure) {
	doms := e.d.domainList()
	uuids := make([]string, len(doms))
	images := make([][]glance.Image, len(doms))
	errs := make([]error, len(doms))
	type result struct {
		i    int
		imgs []glance.Image
		err  error
	}
	results := make(chan result, len(doms)) // a listing that outlives ctx still sends
	waiting := make([]bool, len(doms))
	asked := 0
	for i, dom := range doms {
		uuids[i] = dom.record().UUID
		if only != "" && !strings.EqualFold(uuids[i], only) {
			continue
		}
		p := policy(dom)
		if l := dom.cat.last(); l != nil && p == fromMemory {
			images[i] = l.images
			continue
		}
		waiting[i] = true
		asked++
		go func() {
			imgs, err := dom.images(ctx, p == forced)
			results <- result{i, imgs, err}
		}()
	}
collect:
	for ; asked > 0; asked-- {
		select {
		case r := <-results:
			waiting[r.i] = false
			if r.err != nil {
				errs[r.i] = r.err
				doms[r.i].logger().Debug("domain left out of NBD exports", "err", r.err)
				continue
			}
			images[r.i] = r.imgs
		case <-ctx.Done():
			for i, w := range waiting {
				if w {
					errs[i] = fmt.Errorf("Glance did not answer in time (an NBD lookup waits at most %v): %w", exportLookupTimeout, ctx.Err())
				}
			}
			break collect
		}
	}
	var failed []listFailure
	for i, err := range errs {
		if err != nil {
			failed = append(failed, listFailure{domain: doms[i].record().Name, err: err})
		}
	}
	return exportNames(uuids, images), doms, failed
}

// unlistedError is an export name that was not found while domains that
// may hold it could not be listed: the export may exist, Glance could not
// tell.
type unlistedError struct{ failed []listFailure }

func (e *unlistedError) Error() string {
	parts := make([]string, len(e.failed))
	for i, f := range e.failed {
		// The causes name their domain already.
		cause := strings.TrimPrefix(f.err.Error(), "domain "+f.domain+": ")
		parts[i] = fmt.Sprintf("domain %s could not be listed: %s", f.domain, cause)
	}
	return strings.Join(parts, "; ")
}

func (e *unlistedError) Unwrap() []error {
	errs := make([]error, len(e.failed))
	for i, f := range e.failed {
		errs[i] = f.err
	}
	return errs
}

func (e *exports) export(ctx context.Context, n namedImage, doms []*domain) (nbd.Export, error) {
	src, err := doms[n.Domain].openImage(ctx, n.Image)
	if err != nil {
		return nbd.Export{}, err
	}
	return nbd.Export{Name: n.Name, Description: n.Image.Name, Source: src}, nil
}

func memory(*domain) listPolicy { return fromMemory }

// List implements nbd.Exports.
func (e *exports) List() []nbd.Export {
	ctx, cancel := context.WithTimeout(e.d.life, exportLookupTimeout)
	defer cancel()
	names, doms, _ := e.named(ctx, "", memory)
	out := make([]nbd.Export, 0, len(names))
	for _, n := range names {
		if ex, err := e.export(ctx, n, doms); err == nil {
			out = append(out, ex)
		}
	}
	return out
}

// Lookup implements nbd.Exports. It answers from the listings in memory; a
// miss lists Glance again (rate-limited by the catalogs) so an image
// uploaded a moment ago is exportable at once. A name <sdUUID>/<id> asks
// only that domain's Glance. A name not found while a domain that may hold
// it could not be listed is an unlistedError that says so, not "unknown".
func (e *exports) Lookup(name string) (nbd.Export, error) {
	ctx, cancel := context.WithTimeout(e.d.life, exportLookupTimeout)
	defer cancel()
	only, _, qualified := strings.Cut(name, "/")
	if !qualified {
		only = ""
	}
	again := func(*domain) listPolicy { return forced }
	var failed []listFailure
	for _, policy := range []func(*domain) listPolicy{memory, again} {
		if ctx.Err() != nil {
			break // no time left to ask again; what failed stays the answer
		}
		names, doms, fails := e.named(ctx, only, policy)
		for _, n := range names {
			if n.Name == name {
				return e.export(ctx, n, doms)
			}
		}
		failed = fails
	}
	if len(failed) == 0 {
		return nbd.Export{}, nbd.ErrUnknownExport
	}
	err := &unlistedError{failed: failed}
	e.d.log.Info("NBD export not resolved: a domain that may hold it could not be listed", "export", name, "err", err)
	return nbd.Export{}, err
}

// exportURIs gives the NBD URIs of an export: over the unix socket, and over
// TCP when tcpAddr is set.
func exportURIs(name, socket, tcpAddr string) (unixURI, tcpURI string) {
	u := url.URL{Scheme: "nbd+unix", Path: "/" + name, RawQuery: "socket=" + queryEscapePath(socket)}
	unixURI = u.String()
	if tcpAddr != "" {
		host, port, err := net.SplitHostPort(tcpAddr)
		if err == nil {
			if ip := net.ParseIP(host); host == "" || ip != nil && ip.IsUnspecified() {
				host = "localhost" // listening everywhere; any of the host's names works
			}
			t := url.URL{Scheme: "nbd", Host: net.JoinHostPort(host, port), Path: "/" + name}
			tcpURI = t.String()
		}
	}
	return unixURI, tcpURI
}

// queryEscapePath escapes a path for a query value but keeps its slashes
// readable, as nbd URIs are usually written.
func queryEscapePath(p string) string {
	return strings.ReplaceAll(url.QueryEscape(p), "%2F", "/")
}

// Exports lists the NBD exports with their URIs, for the API.
func (d *Daemon) Exports(ctx context.Context) []Export {
	e := &exports{d: d}
	names, _, _ := e.named(ctx, "", func(*domain) listPolicy { return byTTL })
	d.mu.RLock()
	tcp := d.nbdTCP
	d.mu.RUnlock()
	out := make([]Export, 0, len(names))
	for _, n := range names {
		u, t := exportURIs(n.Name, d.cfg.NBDSocket, tcp)
		out = append(out, Export{Name: n.Name, Description: n.Image.Name, Size: n.Image.Size, URI: u, TCPURI: t})
	}
	return out
}
