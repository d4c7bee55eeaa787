package bench

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/glancegw/glancegw/test/harness"
)

const xferRuns = 3

// benchTransfer: an import of a 2 GiB random image through glancegw (hash
// verified) against what users do today, curl piped to dd with fsync (what
// VDSM did) and `openstack image save`; and an export of a 2 GiB local
// volume against a curl -T upload into a new image record. Volumes, files
// and images are removed after each run, so the disk holds at most one
// copy of each side at a time.
func benchTransfer(e *env) []row {
	const size = 2 * gib
	id, local := e.image("bench-xfer", size)
	defer os.Remove(local)
	url := e.glance.URL + "/v2/images/" + id + "/file"
	d := e.daemon(filepath.Join(e.dir, "dx"))
	defer e.stop(d)
	out := filepath.Join(e.dir, "xfer-out.raw")

	imp := row{name: "import 2 GiB vs curl | dd conv=fsync", target: 1.0,
		ours: "glancegw import --image bench/ID --wait (sha512 verified)", theirs: "curl -s URL | dd of=FILE bs=1M conv=fsync"}
	osc := row{name: "import 2 GiB vs openstack image save",
		ours: imp.ours, theirs: "openstack image save --file FILE ID"}
	haveOSC := len(harness.Missing("openstack")) == 0
	for i := 0; i < xferRuns; i++ {
		ours := func() {
			v := volumeArgs()
			rate, _ := e.job(d, size, append(append([]string{"import"}, v...), "--image", "bench/"+id)...)
			imp.our = append(imp.our, rate)
			osc.our = append(osc.our, imp.our[len(imp.our)-1])
			removeAll(e, d.RepoRoot)
		}
		curl := func() {
			imp.their = append(imp.their, e.timed(size, "sh", "-c",
				fmt.Sprintf("curl -sf %q | dd of=%q bs=1M conv=fsync status=none", url, out)))
			removeAll(e, out)
		}
		openstack := func() {
			if !haveOSC {
				return
			}
			osc.their = append(osc.their, e.timedEnv(size, []string{"OS_AUTH_TYPE=none", "OS_ENDPOINT=" + e.glance.URL},
				"openstack", "image", "save", "--file", out, id))
			removeAll(e, out)
		}
		for _, f := range rotate([]func(){ours, curl, openstack}, i) {
			f()
		}
	}

	exp := row{name: "export 2 GiB vs curl -T upload", target: 0.9,
		ours: "glancegw export --to bench --name N --wait (md5+sha512 checked)", theirs: "curl -T FILE PUT /v2/images/ID/file (new record)"}
	for i := 0; i < xferRuns; i++ {
		ours := func() {
			v := volumeArgs()
			vol := filepath.Join(append([]string{d.RepoRoot}, v[1], v[3], "images", v[5], v[7])...)
			if err := os.MkdirAll(filepath.Dir(vol), 0o755); err != nil {
				e.t.Fatal(err)
			}
			if err := os.Link(local, vol); err != nil { // the same bytes, no copy
				e.t.Fatal(err)
			}
			var j struct {
				ImageID string `json:"image_id"`
			}
			rate, answer := e.job(d, size, append(append([]string{"export"}, v...), "--to", "bench", "--name", fmt.Sprintf("bench-exp-%d", i))...)
			exp.our = append(exp.our, rate)
			if err := json.Unmarshal([]byte(answer), &j); err != nil || j.ImageID == "" {
				e.t.Fatalf("export job %q: %v", answer, err)
			}
			if err := e.glance.DeleteImage(e.ctx, j.ImageID); err != nil {
				e.t.Fatal(err)
			}
			removeAll(e, d.RepoRoot)
		}
		curl := func() {
			rid, err := e.glance.CreateRecord(e.ctx, map[string]any{"name": fmt.Sprintf("bench-curl-%d", i), "disk_format": "raw", "container_format": "bare"})
			if err != nil {
				e.t.Fatal(err)
			}
			exp.their = append(exp.their, e.timed(size, "curl", "-sf", "-X", "PUT", "-H", "Content-Type: application/octet-stream",
				"-T", local, e.glance.URL+"/v2/images/"+rid+"/file"))
			if err := e.glance.DeleteImage(e.ctx, rid); err != nil {
				e.t.Fatal(err)
			}
		}
		for _, f := range rotate([]func(){ours, curl}, i) {
			f()
		}
	}
	rows := []row{imp}
	if haveOSC {
		osc.target = 0 // printed, no target
		rows = append(rows, osc)
	} else {
		rows = append(rows, row{name: osc.name, extra: "openstack not installed: not measured"})
	}
	return append(rows, exp)
}

// job runs an import or export with --wait --json against d and returns
// bytes/second over the whole command (job start to verified end) and the
// job's JSON.
func (e *env) job(d *harness.Daemon, size int64, args ...string) (float64, string) {
	e.t.Helper()
	start := time.Now()
	r := d.CLI(e.ctx, 10*time.Minute, append(args, "--wait", "--json")...)
	el := time.Since(start)
	if r.Code != 0 || !strings.Contains(r.Stdout, `"verified": true`) && !strings.Contains(r.Stdout, `"verified":true`) {
		e.t.Fatalf("%s", r)
	}
	return float64(size) / el.Seconds(), r.Stdout
}

// timedEnv is timed with extra environment.
func (e *env) timedEnv(size int64, extra []string, name string, args ...string) float64 {
	e.t.Helper()
	ctx, cancel := context.WithTimeout(e.ctx, 10*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Env = append(os.Environ(), extra...)
	start := time.Now()
	out, err := cmd.CombinedOutput()
	el := time.Since(start)
	if err != nil {
		e.t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return float64(size) / el.Seconds()
}

// volumeArgs names a fresh local volume: --sp X --sd X --img X --vol X.
func volumeArgs() []string {
	var a []string
	for _, f := range []string{"--sp", "--sd", "--img", "--vol"} {
		a = append(a, f, uuid4())
	}
	return a
}

func uuid4() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	return fmt.Sprintf("%x-%x-%x-%x-%x", b[0:4], b[4:6], b[6:8], b[8:10], b[10:])
}

// removeAll removes path, or everything below a directory.
func removeAll(e *env, path string) {
	e.t.Helper()
	if st, err := os.Stat(path); err == nil && st.IsDir() {
		ents, err := os.ReadDir(path)
		if err != nil {
			e.t.Fatal(err)
		}
		for _, ent := range ents {
			if err := os.RemoveAll(filepath.Join(path, ent.Name())); err != nil {
				e.t.Fatal(err)
			}
		}
		return
	}
	if err := os.RemoveAll(path); err != nil {
		e.t.Fatal(err)
	}
}

// rotate starts fs at i, so each side goes first in turn.
func rotate(fs []func(), i int) []func() {
	i %= len(fs)
	return append(append([]func(){}, fs[i:]...), fs[:i]...)
}
