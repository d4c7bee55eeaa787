package hostd

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"

	"github.com/glancegw/glancegw/hostd/transfer"
)

// Defaults of the cleaner: an attempt every 30 s for 10 minutes; a later
// start tries again.
const (
	cleanupEvery  = 30 * time.Second
	cleanupGiveUp = 10 * time.Minute
)

// cleanupMarker starts the part of a job's error that says what became of
// the image the export created.
const cleanupMarker = "; partial image "

func cleanupNote(id, what string) string { return cleanupMarker + id + " " + what }

// withCleanupNote replaces the cleanup note of msg (or appends one).
func withCleanupNote(msg, id, what string) string {
	base, _, _ := strings.Cut(msg, cleanupMarker)
	return base + cleanupNote(id, what)
}

// cleaner deletes the images that exports created and that did not end up
// active: those of jobs a killed daemon left behind (on start), and those
// of failed or cancelled exports whose own delete did not go through. It
// works in the background, each attempt bounded, so a hung Glance delays
// nothing; the image id stays recorded in the job until it is gone.
type cleaner struct {
	jobs   *jobManager
	glance func(ctx context.Context, sdUUID string) (transfer.Glance, error)
	log    *slog.Logger
	try    time.Duration // bound on one attempt
	every  time.Duration // between attempts
	giveUp time.Duration // stop after this long; the next start tries again

	mu     sync.Mutex
	life   context.Context
	closed bool
	busy   map[string]bool // job ids being cleaned up
	wg     sync.WaitGroup
}

func newCleaner(jobs *jobManager, g func(context.Context, string) (transfer.Glance, error), log *slog.Logger,
	try, every, giveUp time.Duration) *cleaner {
	return &cleaner{jobs: jobs, glance: g, log: log, try: try, every: every, giveUp: giveUp, busy: map[string]bool{}}
}

// begin starts cleaning up, under ctx (the daemon's lifetime), after every
// recorded job that left an image to delete.
func (c *cleaner) begin(ctx context.Context) {
	c.mu.Lock()
	c.life = ctx
	c.mu.Unlock()
	for _, j := range c.jobs.list() {
		c.jobEnded(j)
	}
}

// jobEnded cleans up after j if it is an export that did not succeed and
// still records an image it created.
func (c *cleaner) jobEnded(j Job) {
	if j.Kind != JobExport || !j.Done() || j.State == JobSucceeded || j.CleanupImage == "" {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.life == nil || c.life.Err() != nil || c.closed || c.busy[j.ID] {
		return
	}
	c.busy[j.ID] = true
	c.wg.Add(1)
	go func() {
		defer c.wg.Done()
		c.run(c.life, j)
		c.mu.Lock()
		delete(c.busy, j.ID)
		c.mu.Unlock()
	}()
}

// wait stops new clean-ups and waits for the running ones, which end once
// the context given to begin is done.
func (c *cleaner) wait() {
	c.mu.Lock()
	c.closed = true
	c.mu.Unlock()
	c.wg.Wait()
}

// cleanupOutcome is what one successful attempt found.
type cleanupOutcome int

const (
	cleanupDeleted cleanupOutcome = iota // we deleted it
	cleanupGone                          // it was gone already
	cleanupActive                        // it is active: never deleted
)

func (c *cleaner) run(ctx context.Context, j Job) {
	id := j.CleanupImage
	log := c.log.With("job", j.ID, "image", id, "sd_uuid", j.Domain)
	deadline := time.Now().Add(c.giveUp)
	for attempt := 1; ; attempt++ {
		out, err := c.once(ctx, j.Domain, id)
		if ctx.Err() != nil {
			return // shutting down: the id stays recorded for the next start
		}
		if err == nil {
			what := "was removed from Glance"
			switch out {
			case cleanupDeleted:
				log.Info("deleted the partial image of an export that did not succeed")
			case cleanupGone:
				log.Debug("the partial image of an export is gone already")
			case cleanupActive:
				what = "is active in Glance and was kept"
				log.Warn("the image of an export that did not succeed is active: kept, not deleted")
			}
			c.note(j.ID, id, what, true)
			return
		}
		last := !time.Now().Add(c.every).Before(deadline)
		if last {
			log.Warn("could not delete the partial image of an export; the next start tries again",
				"attempts", attempt, "err", err)
			c.note(j.ID, id, fmt.Sprintf("could not be removed (the next start tries again): %v", err), false)
			return
		}
		log.Warn("could not delete the partial image of an export yet", "attempt", attempt, "retry_in", c.every, "err", err)
		c.note(j.ID, id, fmt.Sprintf("could not be removed yet: %v", err), false)
		t := time.NewTimer(c.every)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			return
		}
	}
}

// once makes one bounded attempt to delete image id of domain sdUUID.
func (c *cleaner) once(ctx context.Context, sdUUID, id string) (cleanupOutcome, error) {
	ctx, cancel := context.WithTimeout(ctx, c.try)
	defer cancel()
	g, err := c.glance(ctx, sdUUID)
	if err != nil {
		return 0, err
	}
	im, err := g.Get(ctx, id)
	switch {
	case isNotFound(err):
		return cleanupGone, nil
	case err != nil:
		return 0, fmt.Errorf("get image %s: %w", id, err)
	case im.Status == "active":
		return cleanupActive, nil
	case im.Status == "deleted" || im.Status == "pending_delete":
		return cleanupGone, nil
	}
	if err := g.Delete(ctx, id); err != nil {
		if isNotFound(err) {
			return cleanupGone, nil
		}
		return 0, fmt.Errorf("delete image %s (%s): %w", id, im.Status, err)
	}
	return cleanupDeleted, nil
}

// note records in job jobID what became of image id; done clears the id.
func (c *cleaner) note(jobID, id, what string, done bool) {
	_, err := c.jobs.update(jobID, func(j *Job) {
		if j.CleanupImage != id {
			return
		}
		j.Error = withCleanupNote(j.Error, id, what)
		if done {
			j.CleanupImage = ""
		}
	})
	if err != nil {
		c.log.Warn("could not record the outcome of an image clean-up", "job", jobID, "image", id, "err", err)
	}
}

func isNotFound(err error) bool {
	var nf interface{ NotFound() bool }
	return errors.As(err, &nf) && nf.NotFound()
}

// domainGlance is the Glance client of the domain sdUUID, as export uses it.
func (d *Daemon) domainGlance(ctx context.Context, sdUUID string) (transfer.Glance, error) {
	dom, err := d.find(sdUUID)
	if err != nil {
		return nil, err
	}
	return d.uploader(ctx, dom)
}
