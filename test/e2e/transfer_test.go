package e2e

import (
	"bytes"
	"context"
	"crypto/md5"
	"crypto/sha512"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/glancegw/glancegw/test/harness"
)

// The transfer tests run their own Glance on ports of their own, so they do
// not wait for or disturb the shared one.
const transferGlancePort = 9720

// job is the part of a job's JSON the tests look at.
type job struct {
	ID         string `json:"id"`
	State      string `json:"state"`
	BytesDone  int64  `json:"bytes_done"`
	BytesTotal int64  `json:"bytes_total"`
	Error      string `json:"error"`
	Verified   bool   `json:"verified"`
	ImageID    string `json:"image_id"`
	Format     string `json:"format"`
	Note       string `json:"note"`
	Source     string `json:"source"`
}

type volume struct{ sp, sd, img, vol string }

func newVolume() volume { return volume{uuidString(), uuidString(), uuidString(), uuidString()} }

func (v volume) args() []string {
	return []string{"--sp", v.sp, "--sd", v.sd, "--img", v.img, "--vol", v.vol}
}

func (v volume) path(d *harness.Daemon) string {
	return filepath.Join(d.RepoRoot, v.sp, v.sd, "images", v.img, v.vol)
}

// runJob runs an import/export with --wait --json and decodes the job.
func runJob(t *testing.T, d *harness.Daemon, args ...string) (job, harness.Result) {
	t.Helper()
	r := cli(t, d, append(args, "--wait", "--json")...)
	var j job
	if err := json.Unmarshal([]byte(r.Stdout), &j); err != nil {
		t.Fatalf("%s: decode job: %v", r, err)
	}
	return j, r
}

func hexMD5(b []byte) string    { s := md5.Sum(b); return hex.EncodeToString(s[:]) }
func hexSHA512(b []byte) string { s := sha512.Sum512(b); return hex.EncodeToString(s[:]) }

// TestTransferRoundTrip exports a raw and a qcow2 volume to a real Glance,
// checks Glance's checksums, imports both back (through the attached domain
// and as a plain http URL) and compares bytes; the mostly-zero raw volume
// comes back sparse.
func TestTransferRoundTrip(t *testing.T) {
	t.Parallel()
	requireTools(t, "qemu-img", "qemu-io")
	g := startGlance(t, harness.GlanceConfig{Port: transferGlancePort, KeystonePort: transferGlancePort - 4000})
	d := startDaemon(t, newDir(t, "xfer"))
	mustCLI(t, d, "domain", "add", "g", "--url", g.URL)

	// A raw volume: 4 MiB of data, then 28 MiB of zeros, then a tail.
	raw := make([]byte, 32<<20+4096)
	copy(raw, harness.RandomBytes(11, 4<<20))
	copy(raw[32<<20:], harness.RandomBytes(12, 4096))
	rawVol := newVolume()
	writeVolume(t, d, rawVol, raw)

	// A qcow2 volume made by qemu-img.
	qdir := t.TempDir()
	qpath := filepath.Join(qdir, "q.qcow2")
	for _, c := range [][]string{{"qemu-img", "create", "-f", "qcow2", qpath, "256M"}, {"qemu-io", "-c", "write -P 0xab 1M 3M", qpath}} {
		if out, err := exec.Command(c[0], c[1:]...).CombinedOutput(); err != nil {
			t.Fatalf("%v: %v\n%s", c, err, out)
		}
	}
	qcow, err := os.ReadFile(qpath)
	if err != nil {
		t.Fatal(err)
	}
	qVol := newVolume()
	writeVolume(t, d, qVol, qcow)

	for _, tc := range []struct {
		name   string
		vol    volume
		data   []byte
		format string
	}{{"raw", rawVol, raw, "raw"}, {"qcow2", qVol, qcow, "qcow2"}} {
		t.Run(tc.name, func(t *testing.T) {
			ex, r := runJob(t, d, append([]string{"export"}, append(tc.vol.args(), "--to", "g", "--name", "rt-"+tc.name)...)...)
			if r.Code != 0 || ex.State != "succeeded" || !ex.Verified || ex.ImageID == "" || ex.Format != tc.format {
				t.Fatalf("export: %+v\n%s", ex, r)
			}
			img, err := g.Image(context.Background(), ex.ImageID)
			if err != nil {
				t.Fatal(err)
			}
			if img.Status != "active" || img.DiskFormat != tc.format || img.ContainerFormat != "bare" ||
				img.Checksum != hexMD5(tc.data) || img.OSHashAlgo != "sha512" || img.OSHashValue != hexSHA512(tc.data) {
				t.Fatalf("glance image %+v", img)
			}
			fileURL := strings.TrimRight(g.URL, "/") + "/v2/images/" + ex.ImageID + "/file"
			// Through the attached domain, and as a plain URL (another host
			// name for the same Glance, so no domain matches).
			for _, u := range []string{fileURL, strings.Replace(fileURL, "127.0.0.1", "localhost", 1)} {
				back := newVolume()
				im, r := runJob(t, d, append([]string{"import"}, append(back.args(), "--url", u, "--header", "X-Auth-Token: unused")...)...)
				if r.Code != 0 || im.State != "succeeded" || !im.Verified || im.Format != tc.format || im.BytesDone != int64(len(tc.data)) {
					t.Fatalf("import from %s: %+v\n%s", u, im, r)
				}
				if viaDomain := strings.Contains(im.Note, "read through domain g"); viaDomain != (u == fileURL) {
					t.Errorf("import from %s: note %q: the wrong path was taken", u, im.Note)
				}
				got, err := os.ReadFile(back.path(d))
				if err != nil || !bytes.Equal(got, tc.data) {
					t.Fatalf("imported volume differs from the exported one (err %v)", err)
				}
				var meta struct {
					Format   string `json:"format"`
					Verified bool   `json:"verified"`
					Checksum struct{ Algo, Value string }
				}
				b, _ := os.ReadFile(back.path(d) + ".meta")
				if err := json.Unmarshal(b, &meta); err != nil || meta.Format != tc.format || !meta.Verified || meta.Checksum.Value != img.OSHashValue {
					t.Errorf(".meta %s (%v)", b, err)
				}
				if tc.name == "raw" {
					var st syscall.Stat_t
					syscall.Stat(back.path(d), &st)
					if st.Blocks*512 > 8<<20 {
						t.Errorf("mostly-zero volume allocates %d bytes of %d: not sparse", st.Blocks*512, len(tc.data))
					}
				}
			}
		})
	}
}

func writeVolume(t *testing.T, d *harness.Daemon, v volume, data []byte) {
	t.Helper()
	p := v.path(d)
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, data, 0o640); err != nil {
		t.Fatal(err)
	}
}

// TestTransferRefusals checks that bad input fails before any byte moves,
// with the documented exit codes.
func TestTransferRefusals(t *testing.T) {
	t.Parallel()
	requireTools(t, "qemu-img")
	g := startGlance(t, harness.GlanceConfig{Port: transferGlancePort + 1, KeystonePort: transferGlancePort - 3999})
	d := startDaemon(t, newDir(t, "xref"))
	mustCLI(t, d, "domain", "add", "g", "--url", g.URL)
	ctx := context.Background()
	queued, err := g.CreateRecord(ctx, map[string]any{"name": "q", "disk_format": "raw", "container_format": "bare"})
	if err != nil {
		t.Fatal(err)
	}
	// A qcow2 with a backing file.
	dir := t.TempDir()
	for _, c := range [][]string{{"create", "-f", "qcow2", "base.qcow2", "16M"}, {"create", "-f", "qcow2", "-b", "base.qcow2", "-F", "qcow2", "top.qcow2"}} {
		cmd := exec.Command("qemu-img", c...)
		cmd.Dir = dir
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("qemu-img %v: %v\n%s", c, err, out)
		}
	}
	top, _ := os.ReadFile(filepath.Join(dir, "top.qcow2"))
	unsafe, err := g.CreateImage(ctx, "top", "qcow2", top)
	if err != nil {
		t.Fatal(err)
	}
	existing := newVolume()
	writeVolume(t, d, existing, []byte("old"))

	v := newVolume()
	for _, tc := range []struct {
		name string
		args []string
		code int
		msg  string
	}{
		{"bad uuid", []string{"import", "--sp", "../../etc", "--sd", v.sd, "--img", v.img, "--vol", v.vol, "--url", g.URL + "/x"}, 2, "canonical UUID"},
		{"file url", append(append([]string{"import"}, v.args()...), "--url", "file:///etc/passwd"), 2, "only http and https"},
		{"existing volume", append(append([]string{"import"}, existing.args()...), "--image", "g/"+queued), 5, "volume exists"},
		{"queued image", append(append([]string{"import"}, v.args()...), "--image", "g/"+queued), 5, "is queued, not active"},
		{"unknown domain", append(append([]string{"import"}, v.args()...), "--image", "nope/"+queued), 4, "not found"},
		{"missing volume", append(append([]string{"export"}, v.args()...), "--to", "g", "--name", "x"), 4, "volume not found"},
	} {
		r := cli(t, d, tc.args...)
		if r.Code != tc.code || !strings.Contains(r.Stderr, tc.msg) {
			t.Errorf("%s: want exit %d with %q\n%s", tc.name, tc.code, tc.msg, r)
		}
	}
	if b, _ := os.ReadFile(existing.path(d)); string(b) != "old" {
		t.Errorf("existing volume changed: %q", b)
	}
	// The unsafe image is refused by the job, which leaves nothing behind.
	j, r := runJob(t, d, append(append([]string{"import"}, v.args()...), "--image", "g/"+unsafe.ID)...)
	if r.Code != 1 || j.State != "failed" || !strings.Contains(j.Error, "backing file") || strings.Contains(j.Error, "\n") {
		t.Errorf("unsafe qcow2: %+v\n%s", j, r)
	}
	if ents, _ := os.ReadDir(filepath.Dir(v.path(d))); len(ents) != 0 {
		t.Errorf("refused import left %v", ents)
	}

	// An export into an existing image checks its record first: a qcow2
	// volume does not go into an image declared raw, nor anything into an
	// active image; neither image changes.
	base, err := os.ReadFile(filepath.Join(dir, "base.qcow2"))
	if err != nil {
		t.Fatal(err)
	}
	qv := newVolume()
	writeVolume(t, d, qv, base)
	active, err := g.CreateImage(ctx, "active", "qcow2", base)
	if err != nil {
		t.Fatal(err)
	}
	for target, msg := range map[string]string{
		queued:    "the volume is qcow2 but image " + queued + " declares disk_format raw",
		active.ID: "image " + active.ID + " is active: Glance takes data only into a queued image",
	} {
		u := g.URL + "/v2/images/" + target + "/file"
		for _, via := range []string{u, strings.Replace(u, "127.0.0.1", "localhost", 1)} { // domain g, plain URL
			j, r := runJob(t, d, append(append([]string{"export"}, qv.args()...), "--url", via)...)
			if r.Code != 1 || j.State != "failed" || !strings.Contains(j.Error, msg) || j.BytesDone != 0 {
				t.Errorf("export into %s: want a failed job saying %q before any byte: %+v\n%s", via, msg, j, r)
			}
		}
		img, err := g.Image(ctx, target)
		if err != nil || (target == queued) != (img.Status == "queued") {
			t.Errorf("image %s after refused exports: %+v (%v)", target, img, err)
		}
	}

	// A source whose bytes do not match the record's sha512: the record is
	// the real Glance's, the file is served with one byte flipped.
	good := harness.RandomBytes(21, 24<<20+512)
	img, err := g.CreateImage(ctx, "to-corrupt", "raw", good)
	if err != nil {
		t.Fatal(err)
	}
	bad := bytes.Clone(good)
	bad[17<<20] ^= 0x40
	srv := httptest.NewServer(corruptingGlance(g.URL, img.ID, bad))
	defer srv.Close()
	hdr := filepath.Join(t.TempDir(), "headers")
	if err := os.WriteFile(hdr, []byte("X-Auth-Token: not-a-real-token\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cv := newVolume()
	j, r = runJob(t, d, append(append([]string{"import"}, cv.args()...), "--url", srv.URL+"/v2/images/"+img.ID+"/file", "--header-file", hdr)...)
	if r.Code != 1 || j.State != "failed" || !strings.Contains(j.Error, "sha512 of the copy is") || !strings.Contains(j.Error, img.OSHashValue) {
		t.Errorf("corrupted source: want a failed job naming both sha512s: %+v\n%s", j, r)
	}
	if _, err := os.Stat(filepath.Join(d.RepoRoot, cv.sp)); !os.IsNotExist(err) {
		t.Errorf("a failed verification left its directories: %v (files %v)", err, filesBelow(t, d.RepoRoot))
	}
	if strings.Contains(d.Log(), "not-a-real-token") {
		t.Errorf("the header's token is in the daemon's log")
	}
}

// corruptingGlance answers like Glance for one image: its record comes from
// the real Glance at upstream, its file is data (Range requests work).
func corruptingGlance(upstream, id string, data []byte) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/v2/images/" + id:
			resp, err := http.Get(upstream + r.URL.Path)
			if err != nil {
				http.Error(w, err.Error(), http.StatusBadGateway)
				return
			}
			defer resp.Body.Close()
			w.Header().Set("Content-Type", resp.Header.Get("Content-Type"))
			w.WriteHeader(resp.StatusCode)
			_, _ = io.Copy(w, resp.Body)
		case "/v2/images/" + id + "/file":
			w.Header().Set("Content-Type", "application/octet-stream")
			http.ServeContent(w, r, "", time.Time{}, bytes.NewReader(data))
		default:
			http.NotFound(w, r)
		}
	})
}

// gatedProxy forwards TCP to a target, passing bytes on in each direction
// (the target's answers, and request bodies such as an upload) at most rate
// bytes/s and not at all while held, so a test can stop a transfer mid-way
// at a moment of its choosing.
type gatedProxy struct {
	ln     net.Listener
	target string
	rate   int64 // bytes/s each way

	mu   sync.Mutex
	open chan struct{} // closed while the gate is open
	done chan struct{}
}

func startProxy(t *testing.T, target string, rate int64) *gatedProxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &gatedProxy{ln: ln, target: target, rate: rate, open: make(chan struct{}), done: make(chan struct{})}
	close(p.open)
	go p.serve()
	t.Cleanup(func() { close(p.done); p.release(); ln.Close() })
	return p
}

func (p *gatedProxy) URL() string { return "http://" + p.ln.Addr().String() }

func (p *gatedProxy) hold() {
	p.mu.Lock()
	defer p.mu.Unlock()
	select {
	case <-p.open:
		p.open = make(chan struct{})
	default:
	}
}

func (p *gatedProxy) release() {
	p.mu.Lock()
	defer p.mu.Unlock()
	select {
	case <-p.open:
	default:
		close(p.open)
	}
}

func (p *gatedProxy) wait() {
	p.mu.Lock()
	ch := p.open
	p.mu.Unlock()
	select {
	case <-ch:
	case <-p.done:
	}
}

func (p *gatedProxy) serve() {
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		go func() {
			defer c.Close()
			u, err := net.DialTimeout("tcp", p.target, 5*time.Second)
			if err != nil {
				return
			}
			defer u.Close()
			go func() { p.pipe(u, c); u.(*net.TCPConn).CloseWrite() }()
			p.pipe(c, u)
		}()
	}
}

// pipe copies from src to dst until either fails, at most p.rate bytes/s
// and not while held.
func (p *gatedProxy) pipe(dst, src net.Conn) {
	buf := make([]byte, 64<<10)
	start, sent := time.Now(), int64(0)
	for {
		n, err := src.Read(buf)
		if n > 0 {
			p.wait()
			if _, werr := dst.Write(buf[:n]); werr != nil {
				return
			}
			sent += int64(n)
			if due := time.Duration(float64(sent) / float64(p.rate) * float64(time.Second)); due > time.Since(start) {
				time.Sleep(due - time.Since(start))
			}
		}
		if err != nil {
			return
		}
	}
}

// startImport starts an import without waiting and returns its job id.
func startImport(t *testing.T, d *harness.Daemon, v volume, image string) string {
	t.Helper()
	var a struct{ Job job }
	out := mustCLI(t, d, append(append([]string{"import"}, v.args()...), "--image", image, "--json")...)
	if err := json.Unmarshal([]byte(out), &a); err != nil || a.Job.ID == "" {
		t.Fatalf("import answer %q: %v", out, err)
	}
	return a.Job.ID
}

func showJob(t *testing.T, d *harness.Daemon, id string) job {
	t.Helper()
	var j job
	out := mustCLI(t, d, "job", "show", id, "--json")
	if err := json.Unmarshal([]byte(out), &j); err != nil {
		t.Fatalf("job show %q: %v", out, err)
	}
	return j
}

// waitMoving polls the job until it has moved some bytes (and not all).
func waitMoving(t *testing.T, d *harness.Daemon, id string) job {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for {
		j := showJob(t, d, id)
		if j.BytesDone > 0 && j.State == "running" {
			if j.BytesDone >= j.BytesTotal {
				t.Fatalf("job finished before the test could stop it: %+v", j)
			}
			return j
		}
		if j.State != "queued" && j.State != "running" || time.Now().After(deadline) {
			t.Fatalf("job never moved a byte: %+v", j)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// waiting is a `glancegw job wait` running in the background.
type waiting struct {
	cmd    *exec.Cmd
	stderr bytes.Buffer
	done   chan struct{}
}

// startWaiting starts `glancegw job wait id` and returns once it is in its
// wait.
func startWaiting(t *testing.T, d *harness.Daemon, id string) *waiting {
	t.Helper()
	w := &waiting{cmd: exec.Command(env.bin, "job", "wait", id), done: make(chan struct{})}
	w.cmd.Env = append(os.Environ(), "GLANCEGW_SOCKET="+d.Socket)
	w.cmd.Stderr = &w.stderr
	if err := w.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { _ = w.cmd.Wait(); close(w.done) }()
	time.Sleep(time.Second) // started, connected, waiting
	return w
}

// end waits up to 15 s for the CLI to exit after what and returns its
// exit code and stderr.
func (w *waiting) end(t *testing.T, what string) (int, string) {
	t.Helper()
	select {
	case <-w.done:
	case <-time.After(15 * time.Second):
		w.cmd.Process.Kill()
		<-w.done
		t.Fatalf("job wait did not end 15 s after %s", what)
	}
	return w.cmd.ProcessState.ExitCode(), w.stderr.String()
}

// filesBelow lists the regular files below dir (the repository root).
func filesBelow(t *testing.T, dir string) []string {
	t.Helper()
	var files []string
	err := filepath.WalkDir(dir, func(path string, de os.DirEntry, err error) error {
		if err != nil {
			if os.IsNotExist(err) {
				return nil
			}
			return err
		}
		if !de.IsDir() {
			files = append(files, path)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return files
}

// TestTransferInterrupted stops imports of a 512 MiB image mid-transfer:
// a cancel ends the job as cancelled, a kill -9 of the daemon leaves a job
// that the restarted daemon shows as interrupted; neither leaves a file
// behind. The domain reads Glance through a throttled proxy that the test
// holds shut once bytes have moved, so the moment is certain.
func TestTransferInterrupted(t *testing.T) {
	t.Parallel()
	g := startGlance(t, harness.GlanceConfig{Port: transferGlancePort + 2, KeystonePort: transferGlancePort - 3998})
	ctx := context.Background()
	const size = 512 << 20
	id, err := g.CreateRecord(ctx, map[string]any{"name": "big", "disk_format": "raw", "container_format": "bare"})
	if err != nil {
		t.Fatal(err)
	}
	if err := g.Upload(ctx, id, io.LimitReader(rand.NewChaCha8([32]byte{7}), size), size); err != nil {
		t.Fatal(err)
	}
	p := startProxy(t, strings.TrimPrefix(g.URL, "http://"), 256<<20)
	dir := newDir(t, "xint")
	d := startDaemon(t, dir)
	mustCLI(t, d, "domain", "add", "g", "--url", p.URL())

	t.Run("cancel", func(t *testing.T) {
		v := newVolume()
		jid := startImport(t, d, v, "g/"+id)
		waitMoving(t, d, jid)
		p.hold() // the source stalls: cancel must not wait for it
		defer p.release()

		// Ctrl-C on a waiting CLI stops the waiting, not the job.
		w := startWaiting(t, d, jid)
		if err := w.cmd.Process.Signal(os.Interrupt); err != nil {
			t.Fatal(err)
		}
		if code, stderr := w.end(t, "SIGINT"); code != 130 || !strings.Contains(stderr, "stopped waiting") ||
			!strings.Contains(stderr, "glancegw job cancel "+jid) {
			t.Errorf("job wait after SIGINT: exit %d, stderr %q; want 130 naming job cancel", code, stderr)
		}
		if j := showJob(t, d, jid); j.State != "running" {
			t.Errorf("after SIGINT to job wait the job is %s, want still running", j.State)
		}

		start := time.Now()
		mustCLI(t, d, "job", "cancel", jid)
		var j job
		r := cli(t, d, "job", "wait", jid, "--json")
		if err := json.Unmarshal([]byte(r.Stdout), &j); err != nil {
			t.Fatalf("%s: %v", r, err)
		}
		if r.Code != 130 || j.State != "cancelled" {
			t.Fatalf("cancelled job: %+v\n%s", j, r)
		}
		if took := time.Since(start); took > 10*time.Second {
			t.Errorf("cancel took %v with a stalled source", took)
		}
		if files := filesBelow(t, d.RepoRoot); len(files) != 0 {
			t.Errorf("cancelled import left %v", files)
		}
		if _, err := os.Stat(filepath.Join(d.RepoRoot, v.sp)); !os.IsNotExist(err) {
			t.Errorf("cancelled import left its directories: %v", err)
		}
	})

	t.Run("kill -9", func(t *testing.T) {
		v := newVolume()
		jid := startImport(t, d, v, "g/"+id)
		moving := waitMoving(t, d, jid)
		p.hold() // keeps the temp file half-written until the kill
		defer p.release()
		if tmps, _ := filepath.Glob(filepath.Join(filepath.Dir(v.path(d)), ".*glancegw-tmp*")); len(tmps) != 1 {
			t.Fatalf("mid-import there are temp files %v, want one (the pattern changed?)", tmps)
		}
		// A CLI waiting on the job says what happened when the daemon dies.
		w := startWaiting(t, d, jid)
		if err := d.Kill(); err != nil {
			t.Fatal(err)
		}
		if code, stderr := w.end(t, "the daemon was killed"); code != 3 || !strings.Contains(stderr, "the daemon went away while job "+jid) {
			t.Errorf("job wait when the daemon was killed: exit %d, stderr %q; want 3 saying the daemon went away", code, stderr)
		}
		d2 := startDaemon(t, dir)
		j := showJob(t, d2, jid)
		if j.State != "interrupted" || j.Error == "" {
			t.Errorf("after kill -9 and restart the job is %+v, want interrupted with a reason", j)
		}
		t.Logf("killed at %d of %d bytes; after restart: %s (%s)", moving.BytesDone, moving.BytesTotal, j.State, j.Error)
		if files := filesBelow(t, d2.RepoRoot); len(files) != 0 {
			t.Errorf("after kill -9 and restart the repository holds %v", files)
		}
		if _, err := os.Stat(v.path(d2) + ".meta"); !os.IsNotExist(err) {
			t.Errorf(".meta of the interrupted volume: %v", err)
		}
	})

	// The same Glance with 60 images: the first listing of a new domain
	// inspects them all (bounded), later ones answer from memory.
	t.Run("catalog", func(t *testing.T) {
		qcow, err := os.ReadFile(filepath.Join(env.root, "testdata/inspect/C12-qcow2-versions-virtual-size/v3-5GiB.qcow2"))
		if err != nil {
			t.Fatal(err)
		}
		want := map[string]string{id: "raw"}
		for i := range 59 {
			data, format := harness.RandomBytes(uint64(100+i), 1<<20), "raw"
			if i%2 == 0 {
				data, format = qcow, "qcow2"
			}
			img, err := g.CreateImage(ctx, fmt.Sprintf("cat-%02d", i), "raw", data) // Glance is told raw
			if err != nil {
				t.Fatal(err)
			}
			want[img.ID] = format
		}
		d := startDaemon(t, newDir(t, "xcat"))
		mustCLI(t, d, "domain", "add", "g2", "--url", g.URL)
		start := time.Now()
		out := mustCLI(t, d, "image", "list", "g2", "--json")
		first := time.Since(start)
		start = time.Now()
		mustCLI(t, d, "image", "list", "g2", "--json", "--refresh")
		again := time.Since(start)
		t.Logf("image list of %d images: first (inspecting) %v, refresh %v", len(want), first.Round(time.Millisecond), again.Round(time.Millisecond))
		var imgs []struct {
			ID          string `json:"id"`
			DiskFormat  string `json:"disk_format"`
			Format      string `json:"detected_format"`
			VirtualSize int64  `json:"detected_virtual_size"`
		}
		if err := json.Unmarshal([]byte(out), &imgs); err != nil || len(imgs) != len(want) {
			t.Fatalf("image list: %d images, want %d (%v)", len(imgs), len(want), err)
		}
		for _, im := range imgs {
			if im.Format != want[im.ID] || (im.Format == "qcow2" && im.VirtualSize != 5<<30) {
				t.Errorf("image %s (Glance says %s): detected %s %d, want %s", im.ID, im.DiskFormat, im.Format, im.VirtualSize, want[im.ID])
			}
		}
		if table := mustCLI(t, d, "image", "list", "g2"); !strings.Contains(table, "DETECTED") || !strings.Contains(table, "qcow2 5.0 GiB") {
			t.Errorf("image list table lacks the DETECTED column:\n%s", table)
		}
	})
}

// TestTransferExportKilled kills the daemon with -9 in the middle of an
// export's upload and checks that the restarted daemon deletes the image
// the export created (Glance leaves a broken upload queued) and shows the
// job as interrupted. The domain reaches Glance through a throttled proxy
// that the test holds shut once bytes have moved, so the moment is certain.
func TestTransferExportKilled(t *testing.T) {
	t.Parallel()
	g := startGlance(t, harness.GlanceConfig{Port: transferGlancePort + 5, KeystonePort: transferGlancePort - 3995})
	ctx := context.Background()
	p := startProxy(t, strings.TrimPrefix(g.URL, "http://"), 64<<20)
	dir := newDir(t, "xkill")
	d := startDaemon(t, dir)
	mustCLI(t, d, "domain", "add", "g", "--url", p.URL())
	v := newVolume()
	writeVolume(t, d, v, harness.RandomBytes(41, 256<<20))

	var a struct{ Job job }
	out := mustCLI(t, d, append(append([]string{"export"}, v.args()...), "--to", "g", "--name", "killed-mid-upload", "--json")...)
	if err := json.Unmarshal([]byte(out), &a); err != nil || a.Job.ID == "" {
		t.Fatalf("export answer %q: %v", out, err)
	}
	jid := a.Job.ID
	moving := waitMoving(t, d, jid)
	p.hold() // the upload stalls half-way until the kill
	if moving.ImageID == "" {
		p.release()
		t.Fatalf("the running export does not show the image it created: %+v", moving)
	}
	img, err := g.Image(ctx, moving.ImageID)
	if err != nil || (img.Status != "saving" && img.Status != "queued") {
		t.Fatalf("mid-upload the image is %+v (%v), want saving", img, err)
	}
	if err := d.Kill(); err != nil {
		t.Fatal(err)
	}
	p.release() // Glance sees the upload end short; the new daemon reaches it
	start := time.Now()
	d2 := startDaemon(t, dir)
	if took := time.Since(start); took > 30*time.Second {
		t.Errorf("the restart took %v", took)
	}
	took, err := eventually(60*time.Second, 250*time.Millisecond, func() error {
		img, err := g.Image(ctx, moving.ImageID)
		var he *harness.HTTPError
		if errors.As(err, &he) && he.Status == 404 {
			return nil
		}
		if err != nil {
			return err
		}
		return fmt.Errorf("image %s is still in Glance (%s)", img.ID, img.Status)
	})
	if err != nil {
		t.Fatalf("%v after %v", err, took)
	}
	j := showJob(t, d2, jid)
	if j.State != "interrupted" || !strings.Contains(j.Error, "partial image "+moving.ImageID+" was removed from Glance") {
		t.Errorf("after kill -9 and restart the job is %+v, want interrupted, saying the image was removed", j)
	}
	list, err := jsonList(mustCLI(t, d2, "image", "list", "g", "--json"))
	if err != nil {
		t.Fatal(err)
	}
	for _, im := range list {
		if im["name"] == "killed-mid-upload" {
			t.Errorf("image list still shows %v", im)
		}
	}
	if !strings.Contains(d2.Log(), "deleted the partial image") {
		t.Errorf("the restarted daemon logged no deletion")
	}
	t.Logf("killed at %d of %d bytes; image %s gone %v after the restart; job: %s",
		moving.BytesDone, moving.BytesTotal, moving.ImageID, took.Round(time.Millisecond), j.Error)
}

// TestTransferKeystoneTokenExpiry exports to a Keystone-mode Glance one
// volume whose upload, held to 256 KiB/s by --transfer-rate-limit, lasts
// longer than a token (60 s): the token the upload started with expires
// while the body is still streaming, and the record is read back with a
// new one. The image is active with our size and checksums, and the job is
// verified. It runs in parallel with the other tests.
func TestTransferKeystoneTokenExpiry(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	g := startGlance(t, harness.GlanceConfig{Mode: "keystone", Port: transferGlancePort + 3,
		KeystonePort: transferGlancePort - 3997, TokenExpiration: tokenLifetime})
	dir := newDir(t, "xks")
	pw := filepath.Join(dir, "password")
	if err := os.WriteFile(pw, []byte(harness.DefaultKeystoneAdminPassword+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	const rate = 256 << 10
	d := startDaemon(t, dir, "--transfer-rate-limit", "256K")
	mustCLI(t, d, "domain", "add", "ks", "--url", g.URL, "--auth", "keystone", "--auth-url", g.KeystoneURL+"/v3",
		"--username", harness.KeystoneAdminUser, "--password-file", pw, "--project", harness.KeystoneAdminProject,
		"--user-domain", harness.KeystoneDomain, "--project-domain", harness.KeystoneDomain)
	// 75 s of body at the limit.
	data := harness.RandomBytes(31, 75*rate+11)
	v := newVolume()
	writeVolume(t, d, v, data)

	start := time.Now()
	j, r := runJob(t, d, append(append([]string{"export"}, v.args()...), "--to", "ks", "--name", "ks-long")...)
	took := time.Since(start)
	if r.Code != 0 || j.State != "succeeded" || !j.Verified || j.ImageID == "" {
		t.Fatalf("export: %+v\n%s", j, r)
	}
	if took < tokenLifetime+10*time.Second {
		t.Fatalf("the export took %v, not longer than a token's %v: the rate limit did not hold it", took, tokenLifetime)
	}
	img, err := g.Image(ctx, j.ImageID)
	if err != nil {
		t.Fatal(err)
	}
	if img.Status != "active" || img.Size == nil || *img.Size != int64(len(data)) ||
		img.Checksum != hexMD5(data) || img.OSHashValue != hexSHA512(data) {
		t.Fatalf("glance image after the long upload: %+v", img)
	}
	t.Logf("one upload of %d bytes took %v with %v tokens: image %s active, checksums match", len(data), took.Round(time.Second), tokenLifetime, img.ID)
}
