package transfer

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"strings"

	"golang.org/x/sys/unix"
)

// Volume names a local volume beneath a repository root.
type Volume struct {
	Root                    string // absolute repository root
	SP, SD, Image, VolumeID string // canonical lower-case UUIDs
}

// ParseVolume checks the four ids and returns the volume they name beneath
// root. Upper-case hex is accepted and lower-cased.
func ParseVolume(root, spUUID, sdUUID, imgUUID, volUUID string) (Volume, error) {
	if !filepath.IsAbs(root) {
		return Volume{}, fmt.Errorf("transfer: repository root %q is not absolute: %w", root, ErrInvalid)
	}
	v := Volume{Root: filepath.Clean(root)}
	for _, f := range []struct {
		name string
		in   string
		out  *string
	}{{"spUUID", spUUID, &v.SP}, {"sdUUID", sdUUID, &v.SD}, {"imgUUID", imgUUID, &v.Image}, {"volUUID", volUUID, &v.VolumeID}} {
		u, err := CanonicalUUID(f.in)
		if err != nil {
			return Volume{}, fmt.Errorf("transfer: %s: %w", f.name, err)
		}
		*f.out = u
	}
	return v, nil
}

// CanonicalUUID returns s in lower case when it is a UUID in the 8-4-4-4-12
// hex form (either case), else an ErrInvalid error.
func CanonicalUUID(s string) (string, error) {
	bad := fmt.Errorf("%q is not a canonical UUID (xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx): %w", s, ErrInvalid)
	if len(s) != 36 {
		return "", bad
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if i == 8 || i == 13 || i == 18 || i == 23 {
			if c != '-' {
				return "", bad
			}
			continue
		}
		if !('0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F') {
			return "", bad
		}
	}
	return strings.ToLower(s), nil
}

// dirs are the directory components below the root.
func (v Volume) dirs() []string { return []string{v.SP, v.SD, "images", v.Image} }

// Dir is the directory holding the volume.
func (v Volume) Dir() string { return filepath.Join(append([]string{v.Root}, v.dirs()...)...) }

// Path is the volume file.
func (v Volume) Path() string { return filepath.Join(v.Dir(), v.VolumeID) }

// MetaPath is the volume's metadata file.
func (v Volume) MetaPath() string { return v.Path() + ".meta" }

// openDir opens the volume's directory walking one component at a time with
// O_NOFOLLOW, creating missing ones when create is set; created lists the
// directories it made, outermost first (see removeDirs). The caller closes
// the descriptor.
func (v Volume) openDir(create bool) (fd int, created []string, err error) {
	if create {
		if err := os.MkdirAll(v.Root, 0o755); err != nil {
			return -1, created, fmt.Errorf("transfer: create repository root: %w", err)
		}
	}
	fd, err = unix.Open(v.Root, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		if errors.Is(err, unix.ENOENT) && !create {
			return -1, created, fmt.Errorf("transfer: repository root %s: %w", v.Root, ErrNoVolume)
		}
		return -1, created, fmt.Errorf("transfer: open repository root %s: %w", v.Root, err)
	}
	path := v.Root
	for _, c := range v.dirs() {
		path = filepath.Join(path, c)
		next, err := unix.Openat(fd, c, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
		if errors.Is(err, unix.ENOENT) && create {
			if err = unix.Mkdirat(fd, c, 0o755); err == nil {
				created = append(created, path)
			}
			if err == nil || errors.Is(err, unix.EEXIST) {
				next, err = unix.Openat(fd, c, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
			}
		}
		unix.Close(fd)
		switch {
		case err == nil:
			fd = next
		case errors.Is(err, unix.ELOOP), errors.Is(err, unix.ENOTDIR):
			return -1, created, fmt.Errorf("transfer: %s is a symlink or not a directory (refused: it could lead outside the repository): %w", path, ErrInvalid)
		case errors.Is(err, unix.ENOENT):
			return -1, created, fmt.Errorf("transfer: %s: directory %s does not exist: %w", v.Path(), path, ErrNoVolume)
		default:
			return -1, created, fmt.Errorf("transfer: open %s: %w", path, err)
		}
	}
	return fd, created, nil
}

// removeDirs removes the directories openDir created, innermost first, as
// long as they are empty: a failed import leaves no trace, and a directory
// another volume has meanwhile moved into stays.
func removeDirs(created []string) {
	for i := len(created) - 1; i >= 0; i-- {
		if err := unix.Rmdir(created[i]); err != nil {
			return
		}
	}
}

// checkTarget refuses an existing volume unless overwrite, and anything
// that is not a regular file or symlink there in any case.
func (v Volume) checkTarget(dirfd int, overwrite bool) error {
	var st unix.Stat_t
	err := unix.Fstatat(dirfd, v.VolumeID, &st, unix.AT_SYMLINK_NOFOLLOW)
	if errors.Is(err, unix.ENOENT) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("transfer: stat %s: %w", v.Path(), err)
	}
	if st.Mode&unix.S_IFMT == unix.S_IFDIR {
		return fmt.Errorf("transfer: %s is a directory: %w", v.Path(), ErrExists)
	}
	if !overwrite {
		return fmt.Errorf("transfer: %s (overwrite replaces it: --overwrite, or \"overwrite\": true in the API): %w", v.Path(), ErrExists)
	}
	return nil
}

// Check validates the volume's path before a transfer: for an import its
// existing directories must not be symlinks and an existing volume is
// refused unless overwrite; for an export (wantExisting) the volume must
// exist as a regular file. It moves no byte and creates nothing.
func (v Volume) Check(wantExisting, overwrite bool) error {
	fd, _, err := v.openDir(false)
	if errors.Is(err, ErrNoVolume) && !wantExisting {
		return v.checkExistingPrefix()
	}
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	if wantExisting {
		f, err := v.openFile(fd)
		if err != nil {
			return err
		}
		return f.Close()
	}
	return v.checkTarget(fd, overwrite)
}

// checkExistingPrefix refuses a symlink among the directories that exist
// (the rest will be created).
func (v Volume) checkExistingPrefix() error {
	path := v.Root
	for _, c := range v.dirs() {
		path = filepath.Join(path, c)
		fi, err := os.Lstat(path)
		if errors.Is(err, fs.ErrNotExist) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("transfer: stat %s: %w", path, err)
		}
		if !fi.IsDir() {
			return fmt.Errorf("transfer: %s is a symlink or not a directory (refused: it could lead outside the repository): %w", path, ErrInvalid)
		}
	}
	return nil
}

// openFile opens the volume read-only without following a symlink.
func (v Volume) openFile(dirfd int) (*os.File, error) {
	fd, err := unix.Openat(dirfd, v.VolumeID, unix.O_RDONLY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	switch {
	case errors.Is(err, unix.ENOENT):
		return nil, fmt.Errorf("transfer: %s: %w", v.Path(), ErrNoVolume)
	case errors.Is(err, unix.ELOOP):
		return nil, fmt.Errorf("transfer: %s is a symlink (refused): %w", v.Path(), ErrInvalid)
	case err != nil:
		return nil, fmt.Errorf("transfer: open %s: %w", v.Path(), err)
	}
	f := os.NewFile(uintptr(fd), v.Path())
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("transfer: stat %s: %w", v.Path(), err)
	}
	if !fi.Mode().IsRegular() {
		f.Close()
		return nil, fmt.Errorf("transfer: %s is not a regular file: %w", v.Path(), ErrInvalid)
	}
	return f, nil
}

// Open opens the volume for reading (export).
func (v Volume) Open() (*os.File, error) {
	fd, _, err := v.openDir(false)
	if err != nil {
		return nil, err
	}
	defer unix.Close(fd)
	return v.openFile(fd)
}

// tempMarker is in the name of every temporary file of this package.
const tempMarker = ".glancegw-tmp-"

var tempRE = regexp.MustCompile(`^\..+\.glancegw-tmp-[0-9a-f]{16}$`)

// tempName returns a new temporary name for the file base.
func tempName(base string) string {
	var b [8]byte
	rand.Read(b[:])
	return "." + base + tempMarker + hex.EncodeToString(b[:])
}

// createTemp creates a temporary file for base in dirfd.
func createTemp(dirfd int, dir, base string, mode uint32) (*os.File, string, error) {
	for range 3 {
		name := tempName(base)
		fd, err := unix.Openat(dirfd, name, unix.O_RDWR|unix.O_CREAT|unix.O_EXCL|unix.O_NOFOLLOW|unix.O_CLOEXEC, mode)
		if errors.Is(err, unix.EEXIST) {
			continue
		}
		if err != nil {
			return nil, "", fmt.Errorf("transfer: create temporary file in %s: %w", dir, err)
		}
		// The umask may have narrowed mode.
		if err := unix.Fchmod(fd, mode); err != nil {
			unix.Close(fd)
			unix.Unlinkat(dirfd, name, 0)
			return nil, "", fmt.Errorf("transfer: chmod temporary file in %s: %w", dir, err)
		}
		return os.NewFile(uintptr(fd), filepath.Join(dir, name)), name, nil
	}
	return nil, "", fmt.Errorf("transfer: create temporary file in %s: names taken", dir)
}

// RemoveTemps deletes the temporary files of this package found in the
// volume directories beneath root (what a killed daemon left). It follows no
// symlink and returns the paths it removed.
func RemoveTemps(root string) ([]string, error) {
	var removed []string
	// <root>/<sp>/<sd>/images/<img>/<file>: depth 5.
	pattern := filepath.Join(root, "*", "*", "images", "*", "."+"*"+tempMarker+"*")
	matches, err := filepath.Glob(pattern)
	if err != nil {
		return nil, fmt.Errorf("transfer: scan %s: %w", root, err)
	}
	var errs []error
	for _, m := range matches {
		if !tempRE.MatchString(filepath.Base(m)) {
			continue
		}
		// Every directory on the way must be a real directory.
		rel, _ := filepath.Rel(root, filepath.Dir(m))
		if symlinkOnPath(root, rel) {
			continue
		}
		fi, err := os.Lstat(m)
		if err != nil || !fi.Mode().IsRegular() {
			continue
		}
		if err := os.Remove(m); err != nil && !errors.Is(err, fs.ErrNotExist) {
			errs = append(errs, fmt.Errorf("transfer: remove %s: %w", m, err))
			continue
		}
		removed = append(removed, m)
	}
	return removed, errors.Join(errs...)
}

func symlinkOnPath(root, rel string) bool {
	p := root
	for _, c := range strings.Split(rel, string(filepath.Separator)) {
		p = filepath.Join(p, c)
		fi, err := os.Lstat(p)
		if err != nil || !fi.IsDir() {
			return true
		}
	}
	return false
}
