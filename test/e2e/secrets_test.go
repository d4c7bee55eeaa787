package e2e

import (
	"bytes"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/glancegw/glancegw/test/harness"
)

// checkSecrets asserts that secret appears in no process's argv, not in the
// daemon's log, not in `domain show/list --json`, and that every state file
// is 0600 (or stricter) and the secret is stored somewhere in them.
func checkSecrets(t *testing.T, d *harness.Daemon, domain, secret string) {
	t.Helper()
	procs, _ := filepath.Glob("/proc/[0-9]*/cmdline")
	for _, p := range procs {
		b, err := os.ReadFile(p)
		if err == nil && bytes.Contains(b, []byte(secret)) {
			t.Errorf("secret in the argv of %s: %q", p, bytes.ReplaceAll(b, []byte{0}, []byte{' '}))
		}
	}
	if strings.Contains(d.Log(), secret) {
		t.Errorf("secret in the daemon log %s", d.LogPath)
	}
	// Fernet tokens start with gAAAAA: none may be logged either.
	if strings.Contains(d.Log(), "gAAAAA") {
		t.Errorf("a Keystone token appears in the daemon log %s", d.LogPath)
	}
	for _, args := range [][]string{{"domain", "show", domain, "--json"}, {"domain", "list", "--json"}, {"status", "--json"}} {
		out := mustCLI(t, d, args...)
		if strings.Contains(out, secret) {
			t.Errorf("`glancegw %s` shows the secret", strings.Join(args, " "))
		}
	}
	stored := false
	err := filepath.WalkDir(d.StateDir, func(p string, de fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		info, err := de.Info()
		if err != nil {
			return err
		}
		switch {
		case info.Mode().IsRegular():
			if info.Mode().Perm()&0o077 != 0 {
				t.Errorf("state file %s has mode %v, want 0600", p, info.Mode().Perm())
			}
			if b, err := os.ReadFile(p); err == nil && bytes.Contains(b, []byte(secret)) {
				stored = true
			}
		case de.IsDir() && p != d.StateDir && info.Mode().Perm()&0o077 != 0:
			t.Errorf("state dir %s has mode %v, want 0700", p, info.Mode().Perm())
		}
		return nil
	})
	if err != nil {
		t.Fatalf("walk state dir: %v", err)
	}
	if !stored {
		t.Errorf("the secret is stored in no file under %s (so where does the daemon keep it?)", d.StateDir)
	}
}
