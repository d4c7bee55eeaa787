package fs

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// CleanStale lazily unmounts FUSE mounts at mountpoint, such as the one a
// killed daemon leaves behind (every access then fails with ENOTCONN), so a
// new Mount can take its place. Call it only when no live Server owns the
// mountpoint. It is a no-op when nothing is mounted there.
func CleanStale(mountpoint string) error {
	abs, err := filepath.Abs(mountpoint)
	if err != nil {
		return fmt.Errorf("fs: clean stale mount %s: %w", mountpoint, err)
	}
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return fmt.Errorf("fs: clean stale mount %s: %w", abs, err)
	}
	mounts, err := fuseMountsAt(f, abs)
	f.Close()
	if err != nil {
		return fmt.Errorf("fs: clean stale mount %s: %w", abs, err)
	}
	if len(mounts) == 0 {
		// Not listed here, but a dead FUSE mount answers ENOTCONN; then
		// stat cannot hang, and detaching is right.
		var st syscall.Stat_t
		if err := syscall.Stat(abs, &st); errors.Is(err, syscall.ENOTCONN) {
			mounts = []string{"fuse"}
		}
	}
	// Mounts may be stacked; each detach uncovers the next.
	for range mounts {
		if err := detach(abs); err != nil {
			return fmt.Errorf("fs: clean stale mount %s: %w", abs, err)
		}
	}
	return nil
}

// detach unmounts path lazily, with fusermount3 as the fallback for when
// we may not unmount ourselves.
func detach(path string) error {
	err := syscall.Unmount(path, syscall.MNT_DETACH)
	if err == nil || errors.Is(err, syscall.EINVAL) { // EINVAL: not mounted any more
		return nil
	}
	bin, lerr := exec.LookPath("fusermount3")
	if lerr != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if out, xerr := exec.CommandContext(ctx, bin, "-uz", path).CombinedOutput(); xerr != nil {
		return fmt.Errorf("%w; fusermount3: %v: %s", err, xerr, strings.TrimSpace(string(out)))
	}
	return nil
}

// fuseMountsAt returns the FUSE filesystem types mounted at path, one per
// mount, from a /proc/self/mountinfo document. It never touches the
// mountpoint itself, which could hang on a live but stuck server.
func fuseMountsAt(r io.Reader, path string) ([]string, error) {
	mounts, err := mountsAt(r, path)
	var types []string
	for _, m := range mounts {
		if isFUSE(m.fstype) {
			types = append(types, m.fstype)
		}
	}
	return types, err
}

// mountEntry is one line of mountinfo.
type mountEntry struct {
	dev    string // major:minor
	fstype string
}

// mountsAt returns the mounts at path, in mountinfo's order, from a
// /proc/self/mountinfo document.
func mountsAt(r io.Reader, path string) ([]mountEntry, error) {
	var out []mountEntry
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		// id parent major:minor root mountpoint opts [optional...] - fstype source superopts
		fields := strings.Fields(sc.Text())
		sep := -1
		for i, f := range fields {
			if f == "-" && i >= 6 {
				sep = i
				break
			}
		}
		if len(fields) < 5 || sep < 0 || sep+1 >= len(fields) {
			continue
		}
		if unescapeMountinfo(fields[4]) != path {
			continue
		}
		out = append(out, mountEntry{dev: fields[2], fstype: fields[sep+1]})
	}
	return out, sc.Err()
}

func isFUSE(fstype string) bool {
	return fstype == "fuse" || strings.HasPrefix(fstype, "fuse.") || fstype == "fuseblk"
}

// unescapeMountinfo undoes the kernel's octal escapes (\040 for space, ...).
func unescapeMountinfo(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+4 <= len(s) {
			if v, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(v))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}
