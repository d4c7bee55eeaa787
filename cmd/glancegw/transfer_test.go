package main

import (
	"bytes"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/glancegw/glancegw/hostd"
)

const (
	cSP  = "11111111-2222-4333-8444-555555555555"
	cSD  = "aaaaaaaa-bbbb-4ccc-8ddd-eeeeeeeeeeee"
	cImg = "01234567-89ab-4cde-8f01-23456789abcd"
	cVol = "fedcba98-7654-4321-8fed-cba987654321"
)

func volArgs(cmd string, more ...string) []string {
	return append([]string{cmd, "--sp", cSP, "--sd", cSD, "--img", cImg, "--vol", cVol}, more...)
}

func TestImportFlagsToRequest(t *testing.T) {
	hf := filepath.Join(t.TempDir(), "h")
	os.WriteFile(hf, []byte("# token\nX-Auth-Token: file-secret\n\n"), 0o600)
	tc := newTestCLI()
	tc.api.answer = func(method, path string) (int, any) {
		if path == "/v1/domains/iso" {
			return 200, hostd.Domain{DomainRecord: hostd.DomainRecord{Name: "iso", URL: "http://glance:9292/"}}
		}
		return 202, hostd.JobAnswer{Job: hostd.Job{ID: "j1", Kind: "import", State: "queued"}}
	}
	if code := tc.run(volArgs("import", "--image", "iso/abc-1", "--overwrite")...); code != 0 {
		t.Fatalf("exit %d: %s", code, tc.err.String())
	}
	req := tc.api.last(t)
	info := req.Body["importInfo"].(map[string]any)
	if req.Path != "/v1/importImage" || req.Body["spUUID"] != cSP || req.Body["volUUID"] != cVol || req.Body["overwrite"] != true ||
		info["method"] != "http" || info["url"] != "http://glance:9292/v2/images/abc-1/file" {
		t.Errorf("request %+v", req)
	}
	if !strings.Contains(tc.out.String(), "j1") {
		t.Errorf("output %q", tc.out.String())
	}

	if code := tc.run(volArgs("import", "--url", "http://h/x", "--header", "X-A: 1", "--header-file", hf)...); code != 0 {
		t.Fatalf("exit %d: %s", code, tc.err.String())
	}
	h := tc.api.last(t).Body["importInfo"].(map[string]any)["headers"].(map[string]any)
	if h["X-A"] != "1" || h["X-Auth-Token"] != "file-secret" {
		t.Errorf("headers %v", h)
	}

	for name, a := range map[string][]string{
		"both sources":     volArgs("import", "--url", "http://h/x", "--image", "iso/x"),
		"no source":        volArgs("import"),
		"bad image":        volArgs("import", "--image", "nodomain"),
		"header w/ image":  volArgs("import", "--image", "iso/x", "--header", "A: b"),
		"bad header":       volArgs("import", "--url", "http://h/x", "--header", "novalue-secret"),
		"missing vol flag": {"import", "--sp", cSP, "--url", "http://h/x"},
	} {
		if code := tc.run(a...); code != exitUsage {
			t.Errorf("%s: exit %d, want %d (%s)", name, code, exitUsage, tc.err.String())
		}
		if strings.Contains(tc.err.String(), "novalue-secret") && name != "bad header" {
			t.Errorf("%s: echoed a header", name)
		}
	}
}

func TestExportFlagsToRequest(t *testing.T) {
	tc := newTestCLI()
	tc.api.answer = func(method, path string) (int, any) {
		return 202, hostd.JobAnswer{Job: hostd.Job{ID: "j2", Kind: "export", State: "queued"}}
	}
	if code := tc.run(append(volArgs("export", "--to", "iso", "--name", "backup"), "--json")...); code != 0 {
		t.Fatalf("exit %d: %s", code, tc.err.String())
	}
	req := tc.api.last(t)
	info := req.Body["exportInfo"].(map[string]any)
	if req.Path != "/v1/exportImage" || info["domain"] != "iso" || info["name"] != "backup" || info["url"] != nil {
		t.Errorf("request %+v", req)
	}
	if !strings.Contains(tc.out.String(), `"job"`) {
		t.Errorf("json output %q", tc.out.String())
	}
	if code := tc.run(volArgs("export", "--url", "http://g/v2/images/x/file", "--header", "X-Auth-Token: t")...); code != 0 {
		t.Fatalf("exit %d: %s", code, tc.err.String())
	}
	info = tc.api.last(t).Body["exportInfo"].(map[string]any)
	if info["method"] != "http" || info["url"] != "http://g/v2/images/x/file" {
		t.Errorf("exportInfo %v", info)
	}
	for name, a := range map[string][]string{
		"to without name": volArgs("export", "--to", "iso"),
		"both":            volArgs("export", "--to", "iso", "--name", "n", "--url", "http://h/x"),
		"none":            volArgs("export"),
	} {
		if code := tc.run(a...); code != exitUsage {
			t.Errorf("%s: exit %d", name, code)
		}
	}
}

// TestWaitExitCodes follows a job to each final state.
func TestWaitExitCodes(t *testing.T) {
	for state, want := range map[string]int{
		hostd.JobSucceeded: 0, hostd.JobFailed: 1, hostd.JobInterrupted: 1, hostd.JobCancelled: exitCancelled,
	} {
		t.Run(state, func(t *testing.T) {
			tc := newTestCLI()
			var polls atomic.Int32
			tc.api.answer = func(method, path string) (int, any) {
				j := hostd.Job{ID: "j1", Kind: "import", State: "running", BytesDone: 50, BytesTotal: 200, Rate: 25}
				if strings.HasSuffix(path, "/wait") && polls.Add(1) >= 2 {
					j.State, j.BytesDone = state, 200
					if state != hostd.JobSucceeded {
						j.Error = "boom"
					}
				}
				return 200, j
			}
			code := tc.run("job", "wait", "j1")
			if code != want {
				t.Fatalf("exit %d, want %d (stderr %q)", code, want, tc.err.String())
			}
			if !strings.Contains(tc.out.String(), "state:") || !strings.Contains(tc.out.String(), state) {
				t.Errorf("stdout %q", tc.out.String())
			}
			// Not a terminal: plain progress lines, no carriage returns.
			if strings.Contains(tc.err.String(), "\r") || !strings.Contains(tc.err.String(), "25.0%") {
				t.Errorf("stderr %q", tc.err.String())
			}
		})
	}
}

func TestProgressBarOnTerminal(t *testing.T) {
	tc := newTestCLI()
	var polls atomic.Int32
	tc.api.answer = func(method, path string) (int, any) {
		j := hostd.Job{ID: "j1", State: "running", BytesDone: 1 << 30, BytesTotal: 4 << 30, Rate: 100 << 20}
		if polls.Add(1) >= 3 {
			j.State, j.BytesDone = hostd.JobSucceeded, 4<<30
		}
		return 200, j
	}
	var out, errb bytes.Buffer
	e := &env{stdout: &out, stderr: &errb, getenv: func(string) string { return "" },
		client:   func(s string) *hostd.Client { c := hostd.NewClient(s); c.Transport = tc.api; return c },
		terminal: func(io.Writer) bool { return true },
	}
	if code := run([]string{"glancegw", "job", "wait", "j1"}, e); code != 0 {
		t.Fatalf("exit %d: %s", code, errb.String())
	}
	if n := strings.Count(errb.String(), "\r["); n < 2 || !strings.Contains(errb.String(), "\x1b[K") {
		t.Errorf("bar not redrawn in place (%d redraws): %q", n, errb.String())
	}
	bar := progressBar(hostd.Job{State: "running", BytesDone: 1 << 30, BytesTotal: 4 << 30, Rate: 100 << 20}, 20)
	for _, want := range []string{"[#####...............]", "25.0%", "1.0 GiB / 4.0 GiB", "100.0 MiB/s", "ETA 0:30"} {
		if !strings.Contains(bar, want) {
			t.Errorf("bar %q lacks %q", bar, want)
		}
	}
}

func TestJobListAndCancel(t *testing.T) {
	tc := newTestCLI()
	tc.api.answer = func(method, path string) (int, any) {
		switch {
		case path == "/v1/jobs":
			return 200, []hostd.Job{{ID: "j1", Kind: "import", State: "running", BytesDone: 1, BytesTotal: 4, Volume: "/repo/v"}}
		case strings.HasSuffix(path, "/cancel"):
			return 409, map[string]string{"error": "job j1 already succeeded", "code": "conflict"}
		}
		return 404, map[string]string{"error": "job x not found", "code": "not_found"}
	}
	if code := tc.run("job", "list"); code != 0 || !strings.Contains(tc.out.String(), "25%") || !strings.Contains(tc.out.String(), "/repo/v") {
		t.Errorf("list: %d %q", code, tc.out.String())
	}
	if code := tc.run("job", "cancel", "j1"); code != exitConflict {
		t.Errorf("cancel of a finished job: exit %d", code)
	}
	if code := tc.run("job", "show", "x"); code != exitNotFound {
		t.Errorf("show unknown: exit %d", code)
	}
	if code := tc.run("job", "show"); code != exitUsage {
		t.Errorf("show without id: exit %d", code)
	}
}

const retryMsg = "source read at 1.4 GiB failed (attempt 2, 3.2s in; retrying in 2s, for up to 30s): glance: read image x: GET: connection refused"

// troubleAPI answers job j1 as running at 50% with its source in trouble
// for the first polls (retrying and stalled 25 s, at rate 0), then moving
// again, then succeeded.
func troubleAPI(tc *testCLI) {
	var polls atomic.Int32
	tc.api.answer = func(method, path string) (int, any) {
		j := hostd.Job{ID: "j1", Kind: "import", State: "running", BytesDone: 1 << 30, BytesTotal: 2 << 30,
			Retrying: retryMsg, StalledSeconds: 25}
		n := polls.Add(1)
		switch {
		case n >= 5:
			j.State, j.BytesDone, j.Retrying, j.StalledSeconds, j.Rate = hostd.JobSucceeded, 2<<30, "", 0, 100<<20
		case n >= 4:
			j.Retrying, j.StalledSeconds, j.Rate = "", 0, 100<<20
		}
		return 200, j
	}
}

// TestWaitShowsSourceTrouble: the plain progress line every 10 s says the
// job is stalled, claims no rate or ETA, and gives the retry in full; once
// bytes move again it says neither.
func TestWaitShowsSourceTrouble(t *testing.T) {
	tc := newTestCLI()
	troubleAPI(tc)
	if code := tc.run("job", "wait", "j1"); code != 0 {
		t.Fatalf("exit %d: %s", code, tc.err.String())
	}
	lines := strings.Split(strings.TrimSpace(tc.err.String()), "\n")
	want := "job j1: running 50.0% 1.0 GiB of 2.0 GiB, 0 B/s, ETA --:--, stalled 25s; " + retryMsg
	if len(lines) < 3 || lines[0] != want {
		t.Fatalf("progress lines:\n%s\nwant the first to be\n%s", tc.err.String(), want)
	}
	if l := lines[len(lines)-1]; strings.Contains(l, "stalled") || strings.Contains(l, "retrying") || !strings.Contains(l, "100.0 MiB/s") {
		t.Errorf("moving again: %q, want a rate and no trouble", l)
	}
}

// TestProgressBarShowsSourceTrouble: on a terminal the bar stays one line
// saying stalled and retrying; the retry itself is printed once on a line
// of its own above it, however many redraws it lasts.
func TestProgressBarShowsSourceTrouble(t *testing.T) {
	tc := newTestCLI()
	troubleAPI(tc)
	var out, errb bytes.Buffer
	e := &env{stdout: &out, stderr: &errb, getenv: func(string) string { return "" },
		client:   func(s string) *hostd.Client { c := hostd.NewClient(s); c.Transport = tc.api; return c },
		terminal: func(io.Writer) bool { return true },
	}
	if code := run([]string{"glancegw", "job", "wait", "j1"}, e); code != 0 {
		t.Fatalf("exit %d: %s", code, errb.String())
	}
	s := errb.String()
	if n := strings.Count(s, "\r\x1b[Kjob j1: "+retryMsg+"\n"); n != 1 {
		t.Errorf("the retry was printed %d times on its own line, want once: %q", n, s)
	}
	if !strings.Contains(s, "0 B/s  ETA --:--  running, stalled 25s, retrying\x1b[K") {
		t.Errorf("bar does not say stalled and retrying: %q", s)
	}
	for _, redraw := range strings.Split(s, "\r") {
		if strings.HasPrefix(redraw, "[") && strings.Contains(redraw, "\n") && !strings.HasSuffix(redraw, "\n") {
			t.Errorf("a bar spans lines: %q", redraw)
		}
	}
}

func TestJobShowSourceTrouble(t *testing.T) {
	tc := newTestCLI()
	tc.api.answer = func(method, path string) (int, any) {
		return 200, hostd.Job{ID: "j1", Kind: "import", State: "running", BytesDone: 1 << 30, BytesTotal: 2 << 30,
			Retrying: retryMsg, StalledSeconds: 65}
	}
	if code := tc.run("job", "show", "j1"); code != 0 {
		t.Fatalf("exit %d: %s", code, tc.err.String())
	}
	for _, want := range []string{"stalled:  no byte moved for 1m5s\n", "retrying: " + retryMsg + "\n"} {
		if !strings.Contains(tc.out.String(), want) {
			t.Errorf("job show lacks %q:\n%s", want, tc.out.String())
		}
	}
	tc.api.answer = func(method, path string) (int, any) {
		return 200, hostd.Job{ID: "j1", Kind: "import", State: "running", BytesDone: 1 << 30, BytesTotal: 2 << 30}
	}
	tc.run("job", "show", "j1")
	if strings.Contains(tc.out.String(), "stalled") || strings.Contains(tc.out.String(), "retrying") {
		t.Errorf("a job without trouble shows some:\n%s", tc.out.String())
	}
}
