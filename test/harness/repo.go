package harness

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
)

// ErrNoRepo means no go.mod was found above the working directory.
var ErrNoRepo = errors.New("harness: repository root not found")

// RepoRoot returns the directory holding go.mod, searching upwards from the
// working directory (go test runs in the package directory).
func RepoRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", fmt.Errorf("harness: getwd: %w", err)
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", ErrNoRepo
		}
		dir = parent
	}
}

// Missing returns the tools that are not available. A name starting with "/"
// is a path that must exist (e.g. /dev/fuse); anything else is looked up in
// PATH.
func Missing(tools ...string) []string {
	var out []string
	for _, t := range tools {
		if filepath.IsAbs(t) {
			if _, err := os.Stat(t); err != nil {
				out = append(out, t)
			}
			continue
		}
		if _, err := exec.LookPath(t); err != nil {
			out = append(out, t)
		}
	}
	return out
}
