package harness

import (
	"fmt"
	"io"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"time"
)

// Kinds of things a Reaper cleans up.
const (
	ReapGroup  = "pg"     // a process group id: SIGKILL to the group
	ReapMounts = "mounts" // a directory: lazily unmount everything mounted at or below it
	ReapGlance = "glance" // a start.sh state dir: test/glance/stop.sh on it
	ReapDir    = "rmdir"  // a directory: rm -rf --one-file-system after the unmounts
)

// reaperScript reads "KIND ARG" lines (and "-KIND ARG" to forget one) until
// EOF, which happens when the test process dies for whatever reason, and then
// cleans up what is still registered.
const reaperScript = `
declare -A pg=() mnt=() gl=() rd=()
while IFS= read -r line; do
	kind=${line%% *}; arg=${line#* }
	case $kind in
	pg) pg[$arg]=1 ;; -pg) unset "pg[$arg]" ;;
	mounts) mnt[$arg]=1 ;; -mounts) unset "mnt[$arg]" ;;
	glance) gl[$arg]=1 ;; -glance) unset "gl[$arg]" ;;
	rmdir) rd[$arg]=1 ;; -rmdir) unset "rd[$arg]" ;;
	esac
done
for p in "${!pg[@]}"; do kill -KILL -- "-$p" 2>/dev/null; done
[ ${#pg[@]} -gt 0 ] && sleep 0.3
for d in "${!mnt[@]}"; do
	awk -v d="$d" '{ if ($5 == d || index($5, d "/") == 1) print $5 }' /proc/self/mountinfo |
		sort -r | while read -r m; do umount -l "$m" 2>/dev/null || fusermount3 -u -z "$m" 2>/dev/null; done
done
for s in "${!gl[@]}"; do bash "$STOP_SH" "$s" >/dev/null 2>&1; done
for d in "${!rd[@]}"; do rm -rf --one-file-system -- "$d" 2>/dev/null; done
exit 0
`

// Reaper is a helper process that outlives a crashed test binary: it holds
// the read end of a pipe whose write end only this process has, so it sees
// EOF exactly when we exit (normally, by panic, or by SIGKILL), and then
// kills, unmounts and stops whatever is still registered with it.
type Reaper struct {
	mu  sync.Mutex
	w   io.WriteCloser
	cmd *exec.Cmd
}

// StartReaper starts the reaper. stopScript is test/glance/stop.sh.
func StartReaper(stopScript string) (*Reaper, error) {
	cmd := exec.Command("bash", "-c", reaperScript)
	cmd.Env = append(cmd.Environ(), "STOP_SH="+stopScript)
	// Own process group: a ^C to the test run must not kill the reaper
	// before it has cleaned up.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	w, err := cmd.StdinPipe()
	if err != nil {
		return nil, fmt.Errorf("harness: reaper pipe: %w", err)
	}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("harness: start reaper: %w", err)
	}
	return &Reaper{w: w, cmd: cmd}, nil
}

func (r *Reaper) send(line string) {
	if r == nil || strings.ContainsAny(line, "\n") {
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.w != nil {
		_, _ = io.WriteString(r.w, line+"\n") // best effort: the reaper is a safety net
	}
}

// Add registers arg of the given kind for cleanup. A nil Reaper ignores it.
func (r *Reaper) Add(kind, arg string) { r.send(kind + " " + arg) }

// Forget removes a registration once the caller has cleaned up itself.
func (r *Reaper) Forget(kind, arg string) { r.send("-" + kind + " " + arg) }

// Close makes the reaper clean up what is still registered and waits for it
// (bounded).
func (r *Reaper) Close() error {
	if r == nil {
		return nil
	}
	r.mu.Lock()
	w := r.w
	r.w = nil
	r.mu.Unlock()
	if w == nil {
		return nil
	}
	_ = w.Close()
	done := make(chan error, 1)
	go func() { done <- r.cmd.Wait() }()
	select {
	case err := <-done:
		return err
	case <-time.After(60 * time.Second):
		_ = r.cmd.Process.Kill()
		return fmt.Errorf("harness: reaper did not finish within 60s")
	}
}
