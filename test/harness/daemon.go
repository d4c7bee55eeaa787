package harness

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// DaemonConfig says how to run `glancegw serve`. Zero values take defaults.
type DaemonConfig struct {
	Bin string // the built glancegw (required)
	// Dir holds state/, mnt/, repo/, api.sock, nbd.sock and daemon.log. Keep
	// it short (unix socket paths are limited to 107 bytes). Starting again
	// with the same Dir is a daemon restart with its state.
	Dir          string
	Args         []string      // extra serve flags, e.g. "--refresh", "2s"
	Env          []string      // extra environment
	StartTimeout time.Duration // until `glancegw status` answers (default 30 s)
	Reaper       *Reaper       // optional safety net
}

// Daemon is a running `glancegw serve`.
type Daemon struct {
	cfg       DaemonConfig
	Socket    string // API socket (GLANCEGW_SOCKET)
	NBDSocket string
	StateDir  string
	MountRoot string
	RepoRoot  string
	LogPath   string
	cmd       *exec.Cmd
	done      chan struct{}
	waitErr   error
}

// Result is what one CLI run produced.
type Result struct {
	Args           []string
	Stdout, Stderr string
	Code           int   // exit code; -1 when it did not run or was killed
	Err            error // set when the process could not run or timed out
}

func (r Result) String() string {
	return fmt.Sprintf("glancegw %s: exit %d (err %v)\nstdout:\n%s\nstderr:\n%s",
		strings.Join(r.Args, " "), r.Code, r.Err, tail(r.Stdout, 4000), tail(r.Stderr, 4000))
}

// DaemonPaths fills in the paths a daemon in dir uses, without starting it.
func DaemonPaths(dir string) (socket, nbdSocket, stateDir, mountRoot, repoRoot, logPath string) {
	return filepath.Join(dir, "api.sock"), filepath.Join(dir, "nbd.sock"), filepath.Join(dir, "state"),
		filepath.Join(dir, "mnt"), filepath.Join(dir, "repo"), filepath.Join(dir, "daemon.log")
}

// StartDaemon starts `glancegw serve` in its own process group and waits,
// bounded, until `glancegw status` answers.
func StartDaemon(ctx context.Context, cfg DaemonConfig) (*Daemon, error) {
	if cfg.Bin == "" || cfg.Dir == "" {
		return nil, errors.New("harness: DaemonConfig.Bin and Dir are required")
	}
	if cfg.StartTimeout == 0 {
		cfg.StartTimeout = 30 * time.Second
	}
	d := &Daemon{cfg: cfg, done: make(chan struct{})}
	d.Socket, d.NBDSocket, d.StateDir, d.MountRoot, d.RepoRoot, d.LogPath = DaemonPaths(cfg.Dir)
	if len(d.Socket) > 100 {
		return nil, fmt.Errorf("harness: socket path %s too long for a unix socket", d.Socket)
	}
	// The daemon makes state/, mnt/ and repo/ itself (with its own modes).
	if err := os.MkdirAll(cfg.Dir, 0o755); err != nil {
		return nil, fmt.Errorf("harness: daemon dir: %w", err)
	}
	logf, err := os.OpenFile(d.LogPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return nil, fmt.Errorf("harness: daemon log: %w", err)
	}
	defer logf.Close() // the child has its own copy
	fmt.Fprintf(logf, "=== harness: start %s at %s\n", cfg.Bin, time.Now().Format(time.RFC3339Nano))

	args := append([]string{"serve",
		"--state-dir", d.StateDir, "--mount-root", d.MountRoot, "--repo-root", d.RepoRoot,
		"--nbd-socket", d.NBDSocket}, cfg.Args...)
	cmd := exec.Command(cfg.Bin, args...)
	cmd.Env = append(append(os.Environ(), "GLANCEGW_SOCKET="+d.Socket), cfg.Env...)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("harness: start daemon: %w", err)
	}
	d.cmd = cmd
	cfg.Reaper.Add(ReapGroup, strconv.Itoa(cmd.Process.Pid))
	cfg.Reaper.Add(ReapMounts, d.MountRoot)
	go func() {
		d.waitErr = cmd.Wait()
		cfg.Reaper.Forget(ReapGroup, strconv.Itoa(cmd.Process.Pid))
		close(d.done)
	}()

	deadline := time.Now().Add(cfg.StartTimeout)
	var last Result
	for {
		select {
		case <-d.done:
			return nil, fmt.Errorf("harness: daemon exited during startup (%v); log:\n%s", d.waitErr, tail(d.Log(), 3000))
		case <-ctx.Done():
			_ = d.Kill()
			return nil, ctx.Err()
		default:
		}
		last = d.CLI(ctx, 5*time.Second, "status")
		if last.Code == 0 {
			return d, nil
		}
		if time.Now().After(deadline) {
			_ = d.Kill()
			return nil, fmt.Errorf("harness: daemon not ready within %v; last status: %s\nlog:\n%s", cfg.StartTimeout, last, tail(d.Log(), 3000))
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// Pid is the daemon's process id (also its process group id).
func (d *Daemon) Pid() int { return d.cmd.Process.Pid }

// Exited reports whether the daemon process has ended.
func (d *Daemon) Exited() bool {
	select {
	case <-d.done:
		return true
	default:
		return false
	}
}

// Log returns the daemon's stdout+stderr so far (all runs in this Dir).
func (d *Daemon) Log() string {
	b, _ := os.ReadFile(d.LogPath)
	return string(b)
}

// CLI runs `glancegw ARGS...` against this daemon, bounded by timeout.
func (d *Daemon) CLI(ctx context.Context, timeout time.Duration, args ...string) Result {
	return RunCLI(ctx, timeout, d.cfg.Bin, append([]string{"GLANCEGW_SOCKET=" + d.Socket}, d.cfg.Env...), args...)
}

// RunCLI runs bin with args and extra env, bounded by timeout.
func RunCLI(ctx context.Context, timeout time.Duration, bin string, env []string, args ...string) Result {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.Env = append(os.Environ(), env...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	cmd.WaitDelay = 2 * time.Second
	err := cmd.Run()
	r := Result{Args: args, Stdout: stdout.String(), Stderr: stderr.String(), Code: -1}
	var ee *exec.ExitError
	switch {
	case err == nil:
		r.Code = 0
	case ctx.Err() != nil:
		r.Err = fmt.Errorf("timed out after %v: %w", timeout, ctx.Err())
	case errors.As(err, &ee) && ee.Exited():
		r.Code = ee.ExitCode()
	default:
		r.Err = err
	}
	return r
}

// Signal sends sig to the daemon process.
func (d *Daemon) Signal(sig syscall.Signal) error {
	if err := d.cmd.Process.Signal(sig); err != nil {
		return fmt.Errorf("harness: signal %v to daemon: %w", sig, err)
	}
	return nil
}

// Wait waits, bounded, for the daemon to exit and returns its exit code
// (-1 when killed by a signal).
func (d *Daemon) Wait(timeout time.Duration) (int, error) {
	select {
	case <-d.done:
	case <-time.After(timeout):
		return -1, fmt.Errorf("harness: daemon pid %d still running after %v", d.Pid(), timeout)
	}
	var ee *exec.ExitError
	switch {
	case d.waitErr == nil:
		return 0, nil
	case errors.As(d.waitErr, &ee):
		return ee.ExitCode(), nil
	default:
		return -1, d.waitErr
	}
}

// Stop sends SIGTERM and waits up to timeout; then it kills the group.
// It returns the exit code of a clean stop.
func (d *Daemon) Stop(timeout time.Duration) (int, error) {
	if d.Exited() {
		return d.Wait(0)
	}
	_ = d.Signal(syscall.SIGTERM)
	code, err := d.Wait(timeout)
	if err != nil {
		_ = d.Kill()
	}
	return code, err
}

// Kill SIGKILLs the daemon's process group and waits for it.
func (d *Daemon) Kill() error {
	if d.Exited() {
		return nil
	}
	if err := syscall.Kill(-d.Pid(), syscall.SIGKILL); err != nil && !errors.Is(err, syscall.ESRCH) {
		return fmt.Errorf("harness: kill daemon group %d: %w", d.Pid(), err)
	}
	_, err := d.Wait(10 * time.Second)
	return err
}

// CleanupMounts lazily unmounts whatever is still mounted below the mount
// root (after a kill -9 the FUSE mounts stay, disconnected).
func (d *Daemon) CleanupMounts() error {
	ms, err := MountsBelow(d.MountRoot)
	if err != nil {
		return err
	}
	var errs []error
	for i := len(ms) - 1; i >= 0; i-- {
		if err := syscall.Unmount(ms[i], syscall.MNT_DETACH); err != nil {
			errs = append(errs, fmt.Errorf("harness: unmount %s: %w", ms[i], err))
		}
	}
	return errors.Join(errs...)
}
