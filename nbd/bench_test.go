package nbd

import (
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"
)

// TestNbdcopyThroughput measures nbdcopy from a 1 GiB in-memory export to
// null:, side by side with qemu-nbd serving the same bytes from a local file,
// in alternating runs (qemu-nbd needs -t -e 8 to outlive one client and
// accept nbdcopy's 4 connections). Opt-in (GLANCEGW_NBD_BENCH=1): it needs ~2 GiB of RAM
// and a minute.
func TestNbdcopyThroughput(t *testing.T) {
	if os.Getenv("GLANCEGW_NBD_BENCH") == "" {
		t.Skip("set GLANCEGW_NBD_BENCH=1 to measure nbdcopy throughput against qemu-nbd")
	}
	requireTool(t, "nbdcopy", "libnbd-bin")
	requireTool(t, "qemu-nbd", "qemu-utils")
	const size = 1 << 30
	data := patterned(size, 42)
	ts := startServer(t, Config{}, newExports(Export{Name: "mem", Source: &memSource{data: data}}))

	dir := t.TempDir()
	file := filepath.Join(dir, "img.raw")
	if err := os.WriteFile(file, data, 0o600); err != nil {
		t.Fatal(err)
	}
	qsock := tempSock(t)
	q := exec.Command("qemu-nbd", "-r", "-t", "-e", "8", "-k", qsock, "-f", "raw", "-x", "mem", file)
	if err := q.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = q.Process.Kill(); _ = q.Wait() })
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		if _, err := os.Stat(qsock); err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("qemu-nbd did not create its socket")
		}
	}

	copyOnce := func(u string) float64 {
		start := time.Now()
		mustRun(t, 120*time.Second, "nbdcopy", "--connections=4", u, "null:")
		return float64(size) / time.Since(start).Seconds() / 1e6
	}
	copyOnce(uri(ts.sock, "mem")) // warm up both
	copyOnce(uri(qsock, "mem"))
	var ours, theirs []float64
	for range 4 {
		ours = append(ours, copyOnce(uri(ts.sock, "mem")))
		theirs = append(theirs, copyOnce(uri(qsock, "mem")))
	}
	med := func(v []float64) float64 {
		s := append([]float64(nil), v...)
		for i := range s {
			for j := i + 1; j < len(s); j++ {
				if s[j] < s[i] {
					s[i], s[j] = s[j], s[i]
				}
			}
		}
		return (s[len(s)/2-1] + s[len(s)/2]) / 2
	}
	t.Logf("glancegw nbd (memory) MB/s: %.0f", ours)
	t.Logf("qemu-nbd -r (file)     MB/s: %.0f", theirs)
	t.Logf("median %.0f vs %.0f MB/s, ratio %.2f", med(ours), med(theirs), med(ours)/med(theirs))
}
