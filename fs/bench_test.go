package fs

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"syscall"
	"testing"
)

// TestThroughput measures sequential reads of a 1 GiB in-memory image
// through a real mount with dd, for several read-ahead settings. It is slow
// and machine-dependent, so it runs only with GLANCEGW_FS_BENCH=1.
func TestThroughput(t *testing.T) {
	if os.Getenv("GLANCEGW_FS_BENCH") == "" {
		t.Skip("set GLANCEGW_FS_BENCH=1 to measure read throughput")
	}
	needFUSE(t)
	d := newFakeDomain()
	img := d.add(Image{ID: "bench0000-0000-4000-8000-000000000000", Name: "big", DiskFormat: "raw"}, 1<<30, 1)
	for _, ra := range benchReadAheads() {
		for _, maxRead := range benchMaxReads() {
			cfg := suiteConfig()
			cfg.MaxReadAhead, cfg.MaxRead = ra, maxRead
			cfg.DirectIO = os.Getenv("GLANCEGW_FS_BENCH_DIRECTIO") != ""
			s, dir := mountTest(t, d, cfg)
			if kb := os.Getenv("GLANCEGW_FS_BENCH_BDI_KIB"); kb != "" {
				setBDI(t, dir, kb)
			}
			file := filepath.Join(dir, "by-id", img.ID)
			mbps := ddRead(t, file)
			t.Logf("direct I/O %v, MaxReadAhead %4d KiB, MaxRead %4d KiB, bdi read_ahead_kb %s: %6.0f MB/s",
				cfg.DirectIO, ra>>10, maxRead>>10, bdiReadAhead(dir), mbps)
			if err := s.Unmount(); err != nil {
				t.Fatal(err)
			}
		}
	}
}

var ddRate = regexp.MustCompile(`copied, ([0-9.]+) s`)

// ddRead reads file with dd bs=1M and returns MB/s (10^6 bytes).
func ddRead(t *testing.T, file string) float64 {
	t.Helper()
	bs := os.Getenv("GLANCEGW_FS_BENCH_BS")
	if bs == "" {
		bs = "1M"
	}
	out, err := exec.Command("dd", "if="+file, "of=/dev/null", "bs="+bs).CombinedOutput()
	if err != nil {
		t.Fatalf("dd: %v: %s", err, out)
	}
	m := ddRate.FindSubmatch(out)
	if m == nil {
		t.Fatalf("dd output: %s", out)
	}
	secs, _ := strconv.ParseFloat(string(m[1]), 64)
	return float64(1<<30) / secs / 1e6
}

// bdiReadAhead reports the kernel's read-ahead window for the mount.
func bdiReadAhead(dir string) string {
	var st syscall.Stat_t
	if err := syscall.Stat(dir, &st); err != nil {
		return "?"
	}
	b, err := os.ReadFile(fmt.Sprintf("/sys/class/bdi/%d:%d/read_ahead_kb", unix_major(st.Dev), unix_minor(st.Dev)))
	if err != nil {
		return "?"
	}
	return string(b[:len(b)-1])
}

func unix_major(dev uint64) uint64 { return (dev >> 8) & 0xfff }
func unix_minor(dev uint64) uint64 { return (dev & 0xff) | ((dev >> 12) & 0xfff00) }

func envSizes(name string, def []int) []int {
	v := os.Getenv(name)
	if v == "" {
		return def
	}
	var out []int
	for _, f := range regexp.MustCompile(`[ ,]+`).Split(v, -1) {
		if k, err := strconv.Atoi(f); err == nil {
			out = append(out, k<<10)
		}
	}
	return out
}

func benchReadAheads() []int {
	return envSizes("GLANCEGW_FS_BENCH_RA_KIB", []int{128 << 10, 512 << 10, 1 << 20, 4 << 20})
}
func benchMaxReads() []int {
	return envSizes("GLANCEGW_FS_BENCH_MAXREAD_KIB", []int{128 << 10, 1 << 20})
}

func setBDI(t *testing.T, dir, kb string) {
	var st syscall.Stat_t
	if err := syscall.Stat(dir, &st); err != nil {
		t.Fatal(err)
	}
	p := fmt.Sprintf("/sys/class/bdi/%d:%d/read_ahead_kb", unix_major(st.Dev), unix_minor(st.Dev))
	if err := os.WriteFile(p, []byte(kb), 0o644); err != nil {
		t.Fatal(err)
	}
}
