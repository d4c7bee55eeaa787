package hostd

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/glancegw/glancegw/hostd/transfer"
)

// Causes of a job's context ending, told apart for its final state.
var (
	errJobCancelled = errors.New("cancelled")
	errShutdown     = errors.New("daemon shutting down")
)

const (
	jobsVersion  = 1
	keepFinished = 100
	// maxWait bounds one long-poll of GET /v1/jobs/{id}/wait.
	maxWait = 60 * time.Second
	// stallAfter is how long a running job may move no byte before it
	// shows as stalled (the Glance client gives up on a silent body after
	// as long).
	stallAfter = 10 * time.Second
	// rateWindow is what a running job's rate is measured over: a job
	// that moved nothing for as long shows 0.
	rateWindow = 10 * time.Second
)

type jobsFile struct {
	Version int   `json:"version"`
	Jobs    []Job `json:"jobs"`
}

// jobRun is a job with its run-time state.
type jobRun struct {
	job      Job // guarded by jobManager.mu
	done     atomic.Int64
	total    atomic.Int64
	cancel   context.CancelCauseFunc
	finished chan struct{}
	started  time.Time
	now      func() time.Time

	// What the transfer reports as it goes, without the manager's lock
	// (it may be taken inside it).
	mu       sync.Mutex
	moved    time.Time // when a byte last moved; the start until one did
	samples  []sample  // bytes done about once a second, the last rateWindow and one before
	retrying string    // the retry the engine waits for, if any
}

// sample is a job's bytes done at a moment.
type sample struct {
	at   time.Time
	done int64
}

// jobManager runs import and export jobs, at most MaxJobs at once, and
// keeps them (the last keepFinished finished ones) in StateDir/jobs.json.
type jobManager struct {
	path  string
	log   *slog.Logger
	now   func() time.Time
	slots chan struct{}

	saveMu sync.Mutex // orders writes of jobs.json
	mu     sync.Mutex // guards the fields below and every jobRun.job
	jobs   []*jobRun  // oldest first
	busy   map[string]string
	wg     sync.WaitGroup
	life   context.Context
	stop   context.CancelCauseFunc

	// ended, when set, is called with every job that ends, after it is
	// saved. Set before begin.
	ended func(Job)
}

func newJobManager(path string, maxJobs int, log *slog.Logger, now func() time.Time) *jobManager {
	return &jobManager{path: path, log: log, now: now, slots: make(chan struct{}, maxJobs), busy: map[string]string{}}
}

// load reads the recorded jobs. Those that were queued or running when the
// daemon stopped become interrupted; it reports whether any did.
func (m *jobManager) load() (bool, error) {
	b, err := os.ReadFile(m.path)
	if errors.Is(err, fs.ErrNotExist) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("hostd: read jobs: %w", err)
	}
	var jf jobsFile
	if err := json.Unmarshal(b, &jf); err != nil {
		return false, fmt.Errorf("hostd: parse %s: %w", m.path, err)
	}
	if jf.Version != jobsVersion {
		return false, fmt.Errorf("hostd: %s: unknown version %d", m.path, jf.Version)
	}
	changed := false
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, j := range jf.Jobs {
		j.Retrying, j.StalledSeconds = "", 0 // live state of a run that is over
		if !j.Done() {
			now := m.now().UTC()
			j.State, j.Ended, changed = JobInterrupted, &now, true
			j.Error = "the daemon stopped during the job; its temporary files are removed"
			if j.CleanupImage != "" {
				j.Error = "the daemon stopped during the job" + cleanupNote(j.CleanupImage, "is being removed from Glance")
			}
		}
		r := &jobRun{job: j, finished: make(chan struct{})}
		r.done.Store(j.BytesDone)
		close(r.finished)
		m.jobs = append(m.jobs, r)
	}
	return changed, nil
}

// begin starts accepting jobs under ctx (the daemon's lifetime).
func (m *jobManager) begin(ctx context.Context) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.life, m.stop = context.WithCancelCause(ctx)
}

// shutdown interrupts every job and waits for them (bounded by ctx).
func (m *jobManager) shutdown(ctx context.Context) {
	m.mu.Lock()
	stop := m.stop
	m.mu.Unlock()
	if stop == nil {
		return
	}
	stop(errShutdown)
	done := make(chan struct{})
	go func() { m.wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-ctx.Done():
		m.log.Warn("jobs did not stop in time")
	}
}

// save writes jobs.json atomically (0600); a failure is logged.
func (m *jobManager) save() { _ = m.write() }

// write writes jobs.json atomically (0600). Headers are not part of a Job.
// The snapshot is taken under saveMu, so the last write holds the latest
// state.
func (m *jobManager) write() error {
	m.saveMu.Lock()
	defer m.saveMu.Unlock()
	jobs := m.list()
	b, err := json.MarshalIndent(jobsFile{Version: jobsVersion, Jobs: jobs}, "", "  ")
	if err == nil {
		err = writeFileAtomic(m.path, append(b, '\n'), 0o600)
	}
	if err != nil {
		m.log.Error("could not save jobs", "path", m.path, "err", err)
		return fmt.Errorf("hostd: save jobs: %w", err)
	}
	return nil
}

// update applies f to job id's record under the lock and saves it,
// returning the job and the error of the save. A running job's function
// must apply f to its own copy too (run keeps that copy at the end).
func (m *jobManager) update(id string, f func(j *Job)) (Job, error) {
	r, err := m.find(id)
	if err != nil {
		return Job{}, err
	}
	m.mu.Lock()
	f(&r.job)
	j := m.snapshotLocked(r)
	m.mu.Unlock()
	return j, m.write()
}

// snapshotLocked is the job with live progress. A running job's rate is
// that of the last rateWindow, it names the retry its source waits for,
// and says for how long no byte moved once that is stallAfter or more.
func (m *jobManager) snapshotLocked(r *jobRun) Job {
	j := r.job
	if !j.Done() || j.State == JobSucceeded {
		j.BytesDone = r.done.Load()
	}
	if t := r.total.Load(); t > 0 {
		j.BytesTotal = t
	}
	if j.State == JobRunning && !r.started.IsZero() {
		now := m.now()
		r.mu.Lock()
		j.Rate = r.rateLocked(now, j.BytesDone)
		j.Retrying = r.retrying
		if idle := now.Sub(r.moved); idle >= stallAfter && (j.BytesTotal <= 0 || j.BytesDone < j.BytesTotal) {
			j.StalledSeconds = int64(idle / time.Second)
		}
		r.mu.Unlock()
	}
	return j
}

func (m *jobManager) list() []Job {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := make([]Job, len(m.jobs))
	for i, r := range m.jobs {
		out[i] = m.snapshotLocked(r)
	}
	return out
}

func (m *jobManager) find(id string) (*jobRun, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, r := range m.jobs {
		if r.job.ID == id {
			return r, nil
		}
	}
	return nil, notFound("job %q not found", id)
}

func (m *jobManager) get(id string) (Job, error) {
	r, err := m.find(id)
	if err != nil {
		return Job{}, err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.snapshotLocked(r), nil
}

// jobFunc does the work of a job. It reports progress through r and fills
// what it learned into j (under no lock: j is its own copy).
type jobFunc func(ctx context.Context, r *jobRun, j *Job) error

// free fails with a conflict when a job runs on volume: asked first, it
// names the real cause where the volume's state would mislead (an export
// of a volume still being imported finds no volume).
func (m *jobManager) free(volume string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.freeLocked(volume)
}

func (m *jobManager) freeLocked(volume string) error {
	if other, ok := m.busy[volume]; ok {
		return conflict("volume %s is in use by job %s", volume, other)
	}
	return nil
}

// start queues a job on volume (one job per volume at a time) and runs it.
func (m *jobManager) start(j Job, volume string, fn jobFunc) (Job, error) {
	m.mu.Lock()
	if m.life == nil {
		m.mu.Unlock()
		return Job{}, unavailable(errors.New("not serving"), "jobs")
	}
	if err := m.freeLocked(volume); err != nil {
		m.mu.Unlock()
		return Job{}, err
	}
	j.ID, j.State, j.Created = newUUID(), JobQueued, m.now().UTC()
	ctx, cancel := context.WithCancelCause(m.life)
	r := &jobRun{job: j, cancel: cancel, finished: make(chan struct{}), now: m.now}
	m.busy[volume] = j.ID
	m.jobs = append(m.jobs, r)
	m.wg.Add(1)
	snap := m.snapshotLocked(r)
	m.mu.Unlock()
	m.save()
	m.log.Info("job queued", "job", j.ID, "kind", j.Kind, "volume", j.Volume, "source", j.Source, "target", j.Target)

	go func() {
		defer m.wg.Done()
		defer cancel(nil)
		err := m.run(ctx, r, fn)
		m.finish(ctx, r, volume, err)
	}()
	return snap, nil
}

func (m *jobManager) run(ctx context.Context, r *jobRun, fn jobFunc) error {
	select {
	case m.slots <- struct{}{}:
		defer func() { <-m.slots }()
	case <-ctx.Done():
		return context.Cause(ctx)
	}
	if ctx.Err() != nil {
		return context.Cause(ctx)
	}
	m.mu.Lock()
	now := m.now().UTC()
	r.mu.Lock()
	r.moved = now
	r.mu.Unlock()
	r.job.State, r.job.Started, r.started = JobRunning, &now, now
	work := r.job
	m.mu.Unlock()
	m.save()
	err := fn(ctx, r, &work)
	m.mu.Lock()
	// Keep what the job learned; state and times stay the manager's.
	work.ID, work.State, work.Created, work.Started = r.job.ID, r.job.State, r.job.Created, r.job.Started
	r.job = work
	m.mu.Unlock()
	return err
}

func (m *jobManager) finish(ctx context.Context, r *jobRun, volume string, err error) {
	m.mu.Lock()
	now := m.now().UTC()
	j := &r.job
	j.Ended = &now
	j.BytesDone = r.done.Load()
	if t := r.total.Load(); t > 0 {
		j.BytesTotal = t
	}
	j.Retrying, j.StalledSeconds = "", 0
	if !r.started.IsZero() {
		if el := now.Sub(r.started).Seconds(); el > 0 {
			j.Rate = float64(j.BytesDone) / el
		}
	}
	cause := context.Cause(ctx)
	switch {
	case err == nil:
		j.State = JobSucceeded
	case errors.Is(cause, errJobCancelled):
		j.State, j.Error = JobCancelled, "cancelled by request"
	case errors.Is(cause, errShutdown):
		j.State, j.Error = JobInterrupted, "the daemon stopped during the job"
	default:
		j.State, j.Error = JobFailed, err.Error()
	}
	delete(m.busy, volume)
	m.pruneLocked()
	final := *j
	m.mu.Unlock()
	close(r.finished)
	m.save()
	if m.ended != nil {
		m.ended(final)
	}
	if final.State == JobFailed {
		m.log.Warn("job failed", "job", final.ID, "kind", final.Kind, "err", final.Error)
	} else {
		m.log.Info("job ended", "job", final.ID, "kind", final.Kind, "state", final.State,
			"bytes", final.BytesDone, "rate", final.Rate)
	}
}

// pruneLocked drops the oldest finished jobs beyond keepFinished. A job
// whose image still waits to be deleted stays: its record is the only
// trace of that image.
func (m *jobManager) pruneLocked() {
	prunable := func(j Job) bool { return j.Done() && j.CleanupImage == "" }
	finished := 0
	for _, r := range m.jobs {
		if prunable(r.job) {
			finished++
		}
	}
	if finished <= keepFinished {
		return
	}
	drop := finished - keepFinished
	kept := m.jobs[:0]
	for _, r := range m.jobs {
		if drop > 0 && prunable(r.job) {
			drop--
			continue
		}
		kept = append(kept, r)
	}
	m.jobs = kept
}

// cancel asks job id to stop and waits (bounded) until it has cleaned up.
func (m *jobManager) cancel(ctx context.Context, id string) (Job, error) {
	r, err := m.find(id)
	if err != nil {
		return Job{}, err
	}
	m.mu.Lock()
	j := m.snapshotLocked(r)
	m.mu.Unlock()
	if j.Done() {
		return j, conflict("job %s already %s", id, j.State)
	}
	r.cancel(errJobCancelled)
	t := time.NewTimer(10 * time.Second)
	defer t.Stop()
	select {
	case <-r.finished:
	case <-t.C:
	case <-ctx.Done():
	}
	return m.get(id)
}

// wait returns job id once it is done or after timeout, whichever is first.
func (m *jobManager) wait(ctx context.Context, id string, timeout time.Duration) (Job, error) {
	r, err := m.find(id)
	if err != nil {
		return Job{}, err
	}
	t := time.NewTimer(min(timeout, maxWait))
	defer t.Stop()
	select {
	case <-r.finished:
	case <-t.C:
	case <-ctx.Done():
	}
	return m.get(id)
}

// progress is what a job's transfer reports its bytes through.
func (r *jobRun) progress(n int64) {
	done := r.done.Add(n)
	now := r.now()
	r.mu.Lock()
	r.moved = now
	if k := len(r.samples); k == 0 || now.Sub(r.samples[k-1].at) >= time.Second {
		// Keep the last sample older than the window: the rate's base.
		drop := 0
		for drop+1 < k && now.Sub(r.samples[drop+1].at) >= rateWindow {
			drop++
		}
		r.samples = append(r.samples[drop:], sample{at: now, done: done})
	}
	r.mu.Unlock()
}

// retry is what a job's transfer reports a retried source read through
// (nil: the read went through).
func (r *jobRun) retry(rt *transfer.Retry) {
	msg := ""
	if rt != nil {
		msg = rt.String()
	}
	r.mu.Lock()
	r.retrying = msg
	r.mu.Unlock()
}

// rateLocked is the bytes per second of the last rateWindow (since the
// start, while the job is younger): 0 once nothing moved for as long.
// r.mu held.
func (r *jobRun) rateLocked(now time.Time, done int64) float64 {
	if now.Sub(r.moved) >= rateWindow {
		return 0
	}
	base := sample{at: r.started}
	for _, s := range r.samples {
		if now.Sub(s.at) < rateWindow {
			break
		}
		base = s
	}
	el := now.Sub(base.at).Seconds()
	if el <= 0 {
		return 0
	}
	return float64(done-base.done) / el
}

func jobsPath(stateDir string) string { return filepath.Join(stateDir, "jobs.json") }
