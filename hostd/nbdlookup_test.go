package hostd

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/glancegw/glancegw/nbd"
)

// An export name that is not found while a domain that may hold it could
// not be listed is not "unknown": the error names the domain and the cause.
// A name that is simply not there stays nbd.ErrUnknownExport.
func TestExportLookupSaysDomainNotListed(t *testing.T) {
	e := newTestEnv(t)
	e.net.glance("http://up").add("img-up", "up.raw", "active", []byte("up"))
	r := e.start()
	// http://down refuses connections (see fakeNet).
	for _, s := range []DomainSpec{{Name: "lab", URL: "http://down", UUID: uuidA}, {Name: "ok", URL: "http://up", UUID: uuidB}} {
		if _, err := r.c.AddDomain(ctx, s); err != nil {
			t.Fatal(err)
		}
	}
	ex := &exports{d: r.d}
	for _, name := range []string{uuidA + "/img-1", "img-1"} {
		_, err := ex.Lookup(name)
		if err == nil || errors.Is(err, nbd.ErrUnknownExport) {
			t.Fatalf("Lookup(%s) = %v; want why it could not be resolved", name, err)
		}
		msg := err.Error()
		if !strings.HasPrefix(msg, "domain lab could not be listed: ") || !strings.Contains(msg, "connection refused") ||
			strings.Contains(msg, "domain ok") || strings.Count(msg, "domain lab") != 1 {
			t.Errorf("Lookup(%s): %q; want domain lab named once, with the cause", name, msg)
		}
		if !errors.Is(err, ErrUnavailable) {
			t.Errorf("Lookup(%s): %v is not ErrUnavailable", name, err)
		}
	}
	// The healthy domain answers for itself.
	if _, err := ex.Lookup(uuidB + "/nope"); err != nbd.ErrUnknownExport {
		t.Errorf("Lookup of a name a listed domain lacks = %v, want nbd.ErrUnknownExport", err)
	}
	if exp, err := ex.Lookup("img-up"); err != nil || exp.Description != "up.raw" {
		t.Errorf("Lookup(img-up) = %+v, %v", exp, err)
	}
	if !strings.Contains(e.logs.String(), "NBD export not resolved") {
		t.Errorf("the daemon log does not say why the lookup failed:\n%s", e.logs.String())
	}
}

// A Glance that hangs, never listed, costs a lookup its bound and no more,
// also while another listing of that domain (the mount's, the API's) holds
// the catalog; the answer says the domain could not be listed. The time
// spent does not make the healthy domain fail: it is not asked again once
// the bound has passed.
func TestExportLookupHungDomainBounded(t *testing.T) {
	e := newTestEnv(t)
	e.net.glance("http://up").add("img-up", "up.raw", "active", []byte("up"))
	g := e.net.glance("http://hung")
	g.add("img-1", "a.raw", "active", []byte("aaaa"))
	hang := make(chan struct{})
	defer close(hang)
	g.mu.Lock()
	g.hang = hang
	g.mu.Unlock()
	r := e.start()
	for _, s := range []DomainSpec{{Name: "lab", URL: "http://hung", UUID: uuidA}, {Name: "ok", URL: "http://up", UUID: uuidB}} {
		if _, err := r.c.AddDomain(ctx, s); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := r.c.Images(ctx, "ok", false); err != nil {
		t.Fatal(err)
	}
	dom, err := r.d.find("lab")
	if err != nil {
		t.Fatal(err)
	}
	// A listing bound only by the Glance timeout (30 s) starts first.
	go dom.images(context.Background(), false)
	sleep(50)
	ex := &exports{d: r.d}
	start := time.Now()
	_, err = ex.Lookup("img-1") // ok's listing is in memory, lab's is asked
	el := time.Since(start)
	if el > exportLookupTimeout+2*time.Second {
		t.Errorf("lookup took %v with a hung Glance, want at most its bound %v", el, exportLookupTimeout)
	}
	if err == nil || errors.Is(err, nbd.ErrUnknownExport) || !strings.HasPrefix(err.Error(), "domain lab could not be listed: ") {
		t.Errorf("lookup with a hung Glance: %v; want that domain lab could not be listed", err)
	}
	t.Logf("after %v: %v", el.Round(time.Millisecond), err)
	if err != nil && strings.Contains(err.Error(), "domain ok") {
		t.Errorf("the healthy domain is named: %v", err)
	}
	if d, err := r.c.Domain(ctx, "ok"); err != nil || d.Error != "" {
		t.Errorf("healthy domain after the lookup: error %q, %v", d.Error, err)
	}
}
