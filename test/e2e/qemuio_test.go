package e2e

import (
	"context"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"
)

// qemuIO is an interactive qemu-io session on one NBD connection, so a test
// can connect while Glance is up and read after it went away.
type qemuIO struct {
	in   *os.File
	out  chan string
	cmd  *exec.Cmd
	done chan struct{}
}

const qemuIOPrompt = "qemu-io> "

func startQemuIO(t *testing.T, uri string) *qemuIO {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	cmd := exec.CommandContext(ctx, "qemu-io", "-r", "-f", "raw", uri)
	inR, inW, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	outR, outW, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stdin, cmd.Stdout, cmd.Stderr = inR, outW, outW
	if err := cmd.Start(); err != nil {
		t.Fatalf("qemu-io: %v", err)
	}
	inR.Close()
	outW.Close()
	q := &qemuIO{in: inW, out: make(chan string, 64), cmd: cmd, done: make(chan struct{})}
	go func() {
		defer close(q.out)
		buf := make([]byte, 4096)
		for {
			n, err := outR.Read(buf)
			if n > 0 {
				q.out <- string(buf[:n])
			}
			if err != nil {
				return
			}
		}
	}()
	t.Cleanup(func() {
		inW.Close()
		cancel()
		_ = cmd.Wait()
		outR.Close()
	})
	if out, _, hung := q.run(t, "", time.Minute); hung {
		t.Fatalf("qemu-io %s: no prompt within a minute: %q", uri, out)
	}
	return q
}

// run sends one command ("" only waits for the prompt) and returns the
// output up to the next prompt, how long that took, and whether the bound
// passed first.
func (q *qemuIO) run(t *testing.T, command string, bound time.Duration) (string, time.Duration, bool) {
	t.Helper()
	start := time.Now()
	if command != "" {
		if _, err := q.in.WriteString(command + "\n"); err != nil {
			t.Fatalf("qemu-io %q: %v", command, err)
		}
	}
	var acc strings.Builder
	timer := time.NewTimer(bound)
	defer timer.Stop()
	for {
		select {
		case s, ok := <-q.out:
			if !ok {
				t.Fatalf("qemu-io exited; output: %q", acc.String())
			}
			acc.WriteString(s)
			if strings.Contains(acc.String(), qemuIOPrompt) {
				return strings.TrimSpace(strings.ReplaceAll(acc.String(), qemuIOPrompt, "")), time.Since(start), false
			}
		case <-timer.C:
			return acc.String(), time.Since(start), true
		}
	}
}
