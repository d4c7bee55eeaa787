package e2e

import (
	"context"
	"encoding/json"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/glancegw/glancegw/test/harness"
)

// TestCLI: output shapes and the documented exit codes (0 ok, 1 error,
// 2 usage, 3 daemon unreachable, 4 not found, 5 conflict, 6 backend
// unavailable).
func TestCLI(t *testing.T) {
	t.Parallel()
	e := sharedEnv(t)

	t.Run("version", func(t *testing.T) {
		if out := strings.TrimSpace(mustCLI(t, e.D, "version")); out == "" {
			t.Fatal("version printed nothing")
		}
	})
	t.Run("status", func(t *testing.T) {
		var st map[string]any
		out := mustCLI(t, e.D, "status", "--json")
		if err := json.Unmarshal([]byte(out), &st); err != nil {
			t.Fatalf("status --json: %v\n%s", err, out)
		}
		if pid, _ := st["pid"].(float64); int(pid) != e.D.Pid() {
			t.Fatalf("status pid %v, want %d", st["pid"], e.D.Pid())
		}
	})
	t.Run("domain-json", func(t *testing.T) {
		list, err := jsonList(mustCLI(t, e.D, "domain", "list", "--json"))
		if err != nil {
			t.Fatal(err)
		}
		m := ids(list, "name")[e.Name]
		if m == nil || m["uuid"] != e.SD || m["url"] != e.G.URL || m["auth"] != "none" || m["mounted"] != true {
			t.Fatalf("domain list --json entry: %v; want uuid %s url %s auth none mounted true", m, e.SD, e.G.URL)
		}
		for _, key := range []string{e.Name, e.SD} {
			var one map[string]any
			out := mustCLI(t, e.D, "domain", "show", key, "--json")
			if err := json.Unmarshal([]byte(out), &one); err != nil || one["uuid"] != e.SD {
				t.Fatalf("domain show %s --json: %v\n%s", key, err, out)
			}
		}
	})
	t.Run("image-list", func(t *testing.T) {
		list, err := jsonList(mustCLI(t, e.D, "image", "list", e.Name, "--json"))
		if err != nil {
			t.Fatal(err)
		}
		got := ids(list, "id")
		for _, f := range e.Fixtures {
			m := got[f.Img.ID]
			if m == nil || m["name"] != f.Name {
				t.Fatalf("image list lacks %s (%s): %v", f.Name, f.Img.ID, m)
			}
			if size, _ := m["size"].(float64); int64(size) != int64(len(f.Data)) {
				t.Fatalf("image list size of %s = %v, want %d", f.Name, m["size"], len(f.Data))
			}
		}
		if table := mustCLI(t, e.D, "image", "list", e.Name); !strings.Contains(table, e.Fixtures[1].Img.ID) {
			t.Fatalf("image list table lacks %s:\n%s", e.Fixtures[1].Img.ID, table)
		}
	})

	codes := []struct {
		name string
		args []string
		want int
	}{
		{"not-found", []string{"domain", "show", "no-such-domain"}, 4},
		{"image-list-not-found", []string{"image", "list", "no-such-domain"}, 4},
		{"conflict", []string{"domain", "add", e.Name, "--url", e.G.URL}, 5},
		{"bad-uuid", []string{"domain", "add", "baduuid", "--url", e.G.URL, "--uuid", "not-a-uuid"}, 2},
		{"unknown-flag", []string{"status", "--no-such-flag"}, 2},
		{"missing-arg", []string{"domain", "show"}, 2},
	}
	for _, c := range codes {
		t.Run("exit-"+c.name, func(t *testing.T) {
			r := cli(t, e.D, c.args...)
			if r.Code != c.want {
				t.Fatalf("want exit %d\n%s", c.want, r)
			}
			if !strings.HasPrefix(r.Stderr, "glancegw: ") && c.want != 2 {
				t.Errorf("error not reported as one `glancegw: ...` line on stderr:\n%s", r.Stderr)
			}
		})
	}
	t.Run("exit-unreachable", func(t *testing.T) {
		r := harness.RunCLI(context.Background(), time.Minute, env.bin,
			[]string{"GLANCEGW_SOCKET=" + filepath.Join(env.tmp, "no-daemon.sock")}, "status")
		if r.Err != nil || r.Code != 3 {
			t.Fatalf("want exit 3\n%s", r)
		}
	})
	t.Run("exit-backend-unavailable", func(t *testing.T) {
		// Nothing listens on port 1: adding works, using it fails.
		mustCLI(t, e.D, "domain", "add", "down", "--url", "http://127.0.0.1:1")
		defer mustCLI(t, e.D, "domain", "remove", "down")
		if r := cli(t, e.D, "image", "list", "down"); r.Code != 6 {
			t.Fatalf("want exit 6\n%s", r)
		}
	})
}
