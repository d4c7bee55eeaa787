package nbd

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"
)

// These tests drive the server with real NBD clients (libnbd-bin: nbdinfo,
// nbdcopy; qemu-utils: qemu-img, qemu-nbd). A missing tool skips its test
// with a loud message, never silently.

func requireTool(t testing.TB, name, pkg string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err != nil {
		msg := fmt.Sprintf("SKIPPING %s: %s not installed (apt-get install %s); real-client coverage is MISSING", t.Name(), name, pkg)
		fmt.Fprintln(os.Stderr, "!!! "+msg)
		t.Skip(msg)
	}
	return p
}

// run runs a command with a bound and returns stdout; stderr goes into
// the failure message.
func run(t testing.TB, timeout time.Duration, name string, args ...string) ([]byte, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return out, fmt.Errorf("%s %v: %w: %s", name, args, err, stderr.String())
	}
	return out, nil
}

func mustRun(t testing.TB, timeout time.Duration, name string, args ...string) []byte {
	t.Helper()
	out, err := run(t, timeout, name, args...)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func uri(sock, export string) string {
	return "nbd+unix:///" + export + "?socket=" + sock
}

func TestRealNbdinfoList(t *testing.T) {
	requireTool(t, "nbdinfo", "libnbd-bin")
	ex := newExports(
		Export{Name: "sd1/11111111-aaaa", Description: "Fedora 40 Server", Source: &memSource{data: make([]byte, 1000)}},
		Export{Name: "11111111-bbbb", Description: "Debian 12 netinst", Source: &memSource{data: make([]byte, 3<<20)}},
	)
	ts := startServer(t, Config{}, ex)
	out := mustRun(t, 30*time.Second, "nbdinfo", "--list", "--json", uri(ts.sock, ""))
	var got struct {
		Exports []struct {
			Name        string `json:"export-name"`
			Description string `json:"description"`
			Size        int64  `json:"export-size"`
			ReadOnly    bool   `json:"is_read_only"`
			MultiConn   bool   `json:"can_multi_conn"`
		} `json:"exports"`
	}
	if err := json.Unmarshal(out, &got); err != nil {
		t.Fatalf("nbdinfo output: %v\n%s", err, out)
	}
	sort.Slice(got.Exports, func(i, j int) bool { return got.Exports[i].Name < got.Exports[j].Name })
	if len(got.Exports) != 2 {
		t.Fatalf("exports: %s", out)
	}
	want := []struct {
		name, desc string
		size       int64
	}{{"11111111-bbbb", "Debian 12 netinst", 3 << 20}, {"sd1/11111111-aaaa", "Fedora 40 Server", 1000}}
	for i, w := range want {
		e := got.Exports[i]
		if e.Name != w.name || e.Description != w.desc || e.Size != w.size || !e.ReadOnly || !e.MultiConn {
			t.Errorf("export %d = %+v, want %+v read-only multi-conn", i, e, w)
		}
	}
}

type mapEntry struct {
	Offset int64  `json:"offset"`
	Length int64  `json:"length"`
	Type   int    `json:"type"`
	Desc   string `json:"description"`
}

func nbdinfoMap(t *testing.T, u string) []mapEntry {
	t.Helper()
	out := mustRun(t, 30*time.Second, "nbdinfo", "--map", "--json", u)
	var m []mapEntry
	if err := json.Unmarshal(out, &m); err != nil {
		t.Fatalf("nbdinfo --map: %v\n%s", err, out)
	}
	return m
}

func TestRealNbdinfoMap(t *testing.T) {
	requireTool(t, "nbdinfo", "libnbd-bin")
	ex, _ := transmissionExports()
	ts := startServer(t, Config{}, ex)

	m := nbdinfoMap(t, uri(ts.sock, "sparse"))
	want := []mapEntry{
		{0, sparseBlock, 0, "data"},
		{sparseBlock, 2 * sparseBlock, 3, "hole,zero"},
		{3 * sparseBlock, sparseBlock, 0, "data"},
		{4 * sparseBlock, 12 * sparseBlock, 3, "hole,zero"},
		{1 << 20, 100, 0, "data"},
	}
	if fmt.Sprint(m) != fmt.Sprint(want) {
		t.Fatalf("map\n got %v\nwant %v", m, want)
	}

	m = nbdinfoMap(t, uri(ts.sock, "plain"))
	if len(m) != 1 || m[0] != (mapEntry{0, 1000, 0, "data"}) {
		t.Fatalf("plain map %v", m)
	}
}

func TestRealNbdcopy(t *testing.T) {
	requireTool(t, "nbdcopy", "libnbd-bin")
	data := patterned(48<<20+12345, 11)
	clear(data[8<<20 : 20<<20]) // a zero run for the sparse path
	ex := newExports(
		Export{Name: "dense", Source: &memSource{data: data}},
		Export{Name: "sparse", Source: &mapSource{memSource: &memSource{data: data}, block: sparseBlock}},
		Export{Name: "tiny", Source: &memSource{data: patterned(1000, 12)}},
	)
	ts := startServer(t, Config{}, ex)
	dir := t.TempDir()
	for _, tc := range []struct {
		export string
		want   []byte
	}{{"dense", data}, {"sparse", data}, {"tiny", patterned(1000, 12)}} {
		t.Run(tc.export, func(t *testing.T) {
			dst := filepath.Join(dir, tc.export+".raw")
			mustRun(t, 60*time.Second, "nbdcopy", "--connections=4", uri(ts.sock, tc.export), dst)
			got, err := os.ReadFile(dst)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, tc.want) {
				t.Fatalf("copy differs: %d bytes, want %d", len(got), len(tc.want))
			}
		})
	}
}

func TestRealQemuImgQcow2(t *testing.T) {
	requireTool(t, "qemu-img", "qemu-utils")
	dir := t.TempDir()
	raw := filepath.Join(dir, "src.raw")
	content := make([]byte, 24<<20)
	copy(content, patterned(3<<20, 21))
	copy(content[17<<20:], patterned(1<<20+777, 22))
	if err := os.WriteFile(raw, content, 0o600); err != nil {
		t.Fatal(err)
	}
	q := filepath.Join(dir, "img.qcow2")
	mustRun(t, 60*time.Second, "qemu-img", "convert", "-f", "raw", "-O", "qcow2", raw, q)
	qbytes, err := os.ReadFile(q)
	if err != nil {
		t.Fatal(err)
	}
	ex := newExports(Export{Name: "sd1/qcow", Description: "qcow2 image", Source: &memSource{data: qbytes}})
	ts := startServer(t, Config{}, ex)
	u := uri(ts.sock, "sd1/qcow")

	out := mustRun(t, 30*time.Second, "qemu-img", "info", "--output=json", u)
	var info struct {
		Format      string `json:"format"`
		VirtualSize int64  `json:"virtual-size"`
	}
	if err := json.Unmarshal(out, &info); err != nil {
		t.Fatalf("qemu-img info: %v\n%s", err, out)
	}
	if info.Format != "qcow2" || info.VirtualSize != int64(len(content)) {
		t.Fatalf("qemu-img info: %s", out)
	}
	dst := filepath.Join(dir, "out.raw")
	mustRun(t, 60*time.Second, "qemu-img", "convert", "-f", "qcow2", "-O", "raw", u, dst)
	got, err := os.ReadFile(dst)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, content) {
		t.Fatalf("converted image differs from the source")
	}
	// The raw bytes as a raw export, read by qemu's own NBD client.
	dst2 := filepath.Join(dir, "out.qcow2")
	mustRun(t, 60*time.Second, "qemu-img", "convert", "-f", "raw", "-O", "raw", u, dst2)
	if got, _ := os.ReadFile(dst2); !bytes.Equal(got, qbytes) {
		t.Fatalf("raw read of the qcow2 export differs")
	}
}

// A failing source gives the real client an I/O error promptly; after the
// source recovers, the next copy succeeds on the same server.
func TestRealClientSeesIOError(t *testing.T) {
	requireTool(t, "nbdcopy", "libnbd-bin")
	ex, flaky := transmissionExports()
	ts := startServer(t, Config{}, ex)
	dst := filepath.Join(t.TempDir(), "out")
	flaky.failing.Store(true)
	start := time.Now()
	_, err := run(t, 30*time.Second, "nbdcopy", uri(ts.sock, "flaky"), dst)
	if err == nil {
		t.Fatalf("nbdcopy succeeded from a failing source")
	}
	if d := time.Since(start); d > 10*time.Second {
		t.Fatalf("error took %v", d)
	}
	t.Logf("nbdcopy failed as expected in %v: %v", time.Since(start).Round(time.Millisecond), err)
	flaky.failing.Store(false)
	mustRun(t, 30*time.Second, "nbdcopy", uri(ts.sock, "flaky"), dst)
	if got, _ := os.ReadFile(dst); !bytes.Equal(got, flaky.data) {
		t.Fatalf("copy after recovery differs")
	}
}

// TestRealClientsUnresolvedExport: the cause of a name that could not be
// resolved reaches the user of real clients, not only "no such export".
// qemu-img prints the server's message ("server reported: ..."); libnbd
// 1.14's nbdinfo shows it with LIBNBD_DEBUG=1 only ("server error message").
func TestRealClientsUnresolvedExport(t *testing.T) {
	requireTool(t, "qemu-img", "qemu-utils")
	requireTool(t, "nbdinfo", "libnbd-bin")
	const cause = "domain lab could not be listed: Glance did not answer within 8s"
	ex := newExports()
	ex.fail = map[string]error{"sd/img": errors.New(cause)}
	ts := startServer(t, Config{}, ex)
	want := `no export named "sd/img": ` + cause
	for _, tc := range []struct {
		env  string
		args []string
	}{
		{"", []string{"qemu-img", "info", uri(ts.sock, "sd/img")}},
		{"LIBNBD_DEBUG=1", []string{"nbdinfo", "--size", uri(ts.sock, "sd/img")}},
	} {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		cmd := exec.CommandContext(ctx, tc.args[0], tc.args[1:]...)
		cmd.Env = append(os.Environ(), tc.env)
		out, err := cmd.CombinedOutput()
		cancel()
		if err == nil || !strings.Contains(string(out), want) {
			t.Errorf("%s %v: %v; want a failure that shows %q:\n%s", tc.env, tc.args, err, want, out)
		}
	}
}
