package hostd

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// lockName is the file in the state directory whose flock marks it as a
// running daemon's. The kernel drops a flock when its process dies, so a
// kill -9 leaves nothing to clean up.
const lockName = "lock"

// lockStateDir takes the state directory for this process, or fails with
// ErrAlreadyRunning naming the holder's pid.
func lockStateDir(dir string) (unlock func(), err error) {
	path := filepath.Join(dir, lockName)
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0o600)
	if err != nil {
		return nil, fmt.Errorf("hostd: open lock %s: %w", path, err)
	}
	return flock(f, dir)
}

// lockRepo takes the repository for this process by a flock on the
// directory itself: the repository holds volumes only, no file of ours.
func lockRepo(dir string) (unlock func(), err error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("hostd: repository %s: %w", dir, err)
	}
	f, err := os.Open(dir)
	if err != nil {
		return nil, fmt.Errorf("hostd: open repository %s: %w", dir, err)
	}
	return flock(f, dir)
}

// flock takes f's lock without waiting and keeps f open while it is held;
// when another process holds it, the error names that process's pid.
func flock(f *os.File, dir string) (unlock func(), err error) {
	err = unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB)
	if err == nil {
		return func() { f.Close() }, nil
	}
	defer f.Close()
	if errors.Is(err, unix.EWOULDBLOCK) {
		holder := "another daemon"
		if pid := flockHolder(f); pid > 0 {
			holder = fmt.Sprintf("another daemon (pid %d)", pid)
		}
		return nil, fmt.Errorf("hostd: %s is in use by %s; one daemon per state directory and repository: %w", dir, holder, ErrAlreadyRunning)
	}
	return nil, fmt.Errorf("hostd: lock %s: %w", dir, err)
}

// flockHolder finds the pid holding a flock on f's inode in /proc/locks
// ("1: FLOCK ADVISORY WRITE 1234 fd:01:5678 0 EOF"), or 0.
func flockHolder(f *os.File) int {
	var st unix.Stat_t
	if err := unix.Fstat(int(f.Fd()), &st); err != nil {
		return 0
	}
	want := fmt.Sprintf("%02x:%02x:%d", unix.Major(st.Dev), unix.Minor(st.Dev), st.Ino)
	b, err := os.ReadFile("/proc/locks")
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		col := strings.Fields(line)
		if len(col) >= 6 && col[1] == "FLOCK" && col[5] == want {
			if pid, err := strconv.Atoi(col[4]); err == nil {
				return pid
			}
		}
	}
	return 0
}
