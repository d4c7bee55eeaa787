package bench

import (
	"bufio"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/glancegw/glancegw/test/harness"
)

const gib = int64(1) << 30

// benchMount: a 1 GiB image read sequentially through the mount, cold (a
// fresh daemon) against curl from the same Glance, then warm against dd of a
// page-cached local copy; and the daemon's peak RSS over a 4 GiB read with a
// 256 MiB cache.
func benchMount(e *env) []row {
	id, local := e.image("bench-1g", gib)
	url := e.glance.URL + "/v2/images/" + id + "/file"
	cold := row{name: "FUSE cold read 1 GiB vs curl -o /dev/null", target: 0.8,
		ours: "dd bs=1M of the mounted file, fresh daemon", theirs: "curl -o /dev/null from Glance"}
	warm := row{name: "FUSE second read 1 GiB vs dd of local copy", target: 0.5,
		ours: "dd bs=1M of the mounted file again", theirs: "dd bs=1M of a page-cached local copy"}
	_ = e.timed(gib, "dd", dd(local)...) // page-cache the local copy
	dir := filepath.Join(e.dir, "dm")
	for i := 0; i < runs; i++ {
		d := e.daemon(dir, "--cache-size", "1536M")
		path := filepath.Join(d.MountRoot, "bench", "by-id", id)
		curl := func() { cold.their = append(cold.their, e.timed(gib, "curl", "-sf", "-o", "/dev/null", url)) }
		mnt := func() { cold.our = append(cold.our, e.timed(gib, "dd", dd(path)...)) }
		if i%2 == 0 {
			curl()
			mnt()
		} else {
			mnt()
			curl()
		}
		for j := 0; j < 2; j++ {
			if (i+j)%2 == 0 {
				warm.our = append(warm.our, e.timed(gib, "dd", dd(path)...))
			} else {
				warm.their = append(warm.their, e.timed(gib, "dd", dd(local)...))
			}
		}
		e.stop(d)
	}

	big, _ := e.image("bench-4g", 4*gib)
	d := e.daemon(filepath.Join(e.dir, "dr"), "--cache-size", "256M")
	_ = e.timed(4*gib, "dd", dd(filepath.Join(d.MountRoot, "bench", "by-id", big))...)
	hwm := peakRSS(e, d.Pid())
	e.stop(d)
	rss := row{name: "daemon peak RSS, 4 GiB read, 256 MiB cache",
		extra: fmt.Sprintf("%d MiB (target < %d MiB)", hwm>>20, 256+100)}
	if hwm>>20 >= 356 {
		rss.extra += "  ABOVE TARGET"
	}
	return []row{cold, warm, rss}
}

// benchNBD: nbdcopy of the 1 GiB image from our export, cold and warm,
// against qemu-nbd -r serving a local copy (the local ceiling), and against
// nbdkit's curl plugin reading the same bytes from a local nginx.
func benchNBD(e *env) []row {
	id, local := e.image("bench-nbd", gib)
	qsock := filepath.Join(e.dir, "q.sock")
	stopQ := e.background("qemu-nbd", "-r", "-t", "-e", "8", "-k", qsock, "-f", "raw", local)
	defer stopQ()
	ksock := filepath.Join(e.dir, "k.sock")
	nginxURL, stopN := e.nginx(filepath.Dir(local))
	defer stopN()
	stopK := e.background("nbdkit", "-r", "-f", "-U", ksock, "curl", nginxURL+"/"+filepath.Base(local))
	defer stopK()
	waitSocket(e, qsock)
	waitSocket(e, ksock)
	_ = e.timed(gib, "dd", dd(local)...)

	coldQ := row{name: "NBD cold nbdcopy vs qemu-nbd -r local file", target: 0.7,
		ours: "nbdcopy from our export, fresh daemon", theirs: "nbdcopy from qemu-nbd -r -t -e 8"}
	warmQ := row{name: "NBD warm nbdcopy vs qemu-nbd -r local file", target: 0.9,
		ours: "nbdcopy from our export, cache holds the image", theirs: coldQ.theirs}
	coldK := row{name: "NBD cold nbdcopy vs nbdkit curl (local nginx)",
		ours: coldQ.ours, theirs: "nbdcopy from nbdkit -r curl of nginx"}
	dir := filepath.Join(e.dir, "dn")
	for i := 0; i < runs; i++ {
		d := e.daemon(dir, "--cache-size", "1536M")
		ours := "nbd+unix:///" + id + "?socket=" + d.NBDSocket
		copyFrom := func(uri string) float64 { return e.timed(gib, "nbdcopy", uri, "null:") }
		q := "nbd+unix:///?socket=" + qsock
		k := "nbd+unix:///?socket=" + ksock
		if i%2 == 0 {
			coldQ.their = append(coldQ.their, copyFrom(q))
			coldK.their = append(coldK.their, copyFrom(k))
			coldQ.our = append(coldQ.our, copyFrom(ours))
		} else {
			coldQ.our = append(coldQ.our, copyFrom(ours))
			coldQ.their = append(coldQ.their, copyFrom(q))
			coldK.their = append(coldK.their, copyFrom(k))
		}
		coldK.our = append(coldK.our, coldQ.our[len(coldQ.our)-1])
		warmQ.our = append(warmQ.our, copyFrom(ours))
		warmQ.their = append(warmQ.their, copyFrom(q))
		e.stop(d)
	}
	coldK.target = 0 // no target given: printed for comparison
	return []row{coldQ, warmQ, coldK}
}

// background starts a helper server in its own process group.
func (e *env) background(name string, args ...string) (stop func()) {
	e.t.Helper()
	cmd := exec.Command(name, args...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	logf, err := os.Create(filepath.Join(e.dir, name+".log"))
	if err != nil {
		e.t.Fatal(err)
	}
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		e.t.Fatal(err)
	}
	e.reaper.Add(harness.ReapGroup, strconv.Itoa(cmd.Process.Pid))
	return func() {
		_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGTERM)
		done := make(chan struct{})
		go func() { _ = cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
			<-done
		}
		logf.Close()
	}
}

// nginx serves root on a loopback port with its own config and pid file.
func (e *env) nginx(root string) (url string, stop func()) {
	e.t.Helper()
	conf := filepath.Join(e.dir, "nginx.conf")
	const port = 9495
	text := fmt.Sprintf(`daemon off;
pid %[1]s/nginx.pid;
error_log %[1]s/nginx-error.log;
worker_processes 1;
events { worker_connections 64; }
http {
  access_log off;
  sendfile on;
  client_body_temp_path %[1]s/nginx-tmp;
  proxy_temp_path %[1]s/nginx-tmp;
  fastcgi_temp_path %[1]s/nginx-tmp;
  uwsgi_temp_path %[1]s/nginx-tmp;
  scgi_temp_path %[1]s/nginx-tmp;
  server { listen 127.0.0.1:%[2]d; root %[3]s; }
}
`, e.dir, port, root)
	if err := os.WriteFile(conf, []byte(text), 0o644); err != nil {
		e.t.Fatal(err)
	}
	stop = e.background("nginx", "-c", conf, "-e", filepath.Join(e.dir, "nginx-error.log"))
	url = fmt.Sprintf("http://127.0.0.1:%d", port)
	deadline := time.Now().Add(10 * time.Second)
	for exec.Command("curl", "-sf", "-o", "/dev/null", "-r", "0-0", url+"/").Run() != nil && time.Now().Before(deadline) {
		time.Sleep(100 * time.Millisecond)
	}
	return url, stop
}

func waitSocket(e *env, path string) {
	e.t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for time.Now().Before(deadline) {
		if _, err := os.Stat(path); err == nil {
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
	e.t.Fatalf("%s did not appear", path)
}

// peakRSS reads VmHWM (the peak resident set) of pid.
func peakRSS(e *env, pid int) int64 {
	e.t.Helper()
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		e.t.Fatal(err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "VmHWM:"); ok {
			kb, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			if err != nil {
				e.t.Fatal(err)
			}
			return kb << 10
		}
	}
	e.t.Fatal("no VmHWM")
	return 0
}
