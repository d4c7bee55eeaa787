package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net/url"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/glancegw/glancegw/hostd"
	"github.com/urfave/cli/v2"
)

const transferExitHelp = `With --wait the exit code is the job's: 0 succeeded, 1 failed or
interrupted, 130 cancelled. Ctrl-C stops the waiting, not the job (exit 130;
glancegw job cancel ID stops the job). Without --wait it is 0 once the job is
queued.`

func volumeFlags() []cli.Flag {
	return []cli.Flag{
		&cli.StringFlag{Name: "sp", Usage: "storage pool `SPUUID` of the local volume (required)"},
		&cli.StringFlag{Name: "sd", Usage: "storage domain `SDUUID` of the local volume (required)"},
		&cli.StringFlag{Name: "img", Usage: "image `IMGUUID` of the local volume (required)"},
		&cli.StringFlag{Name: "vol", Usage: "volume `VOLUUID` of the local volume (required)"},
	}
}

func headerFlags() []cli.Flag {
	return []cli.Flag{
		&cli.StringSliceFlag{Name: "header", Usage: "HTTP header `'K: V'` sent with --url (repeatable; the value is visible on argv: use --header-file for secrets)"},
		&cli.StringFlag{Name: "header-file", Usage: "`FILE` of 'K: V' lines sent with --url (keeps tokens off argv)"},
	}
}

func waitFlags() []cli.Flag {
	return []cli.Flag{
		&cli.BoolFlag{Name: "wait", Usage: "wait for the job and show its progress; exit with its result"},
		&cli.BoolFlag{Name: "json", Usage: "machine output (JSON)"},
	}
}

func (e *env) importCommand() *cli.Command {
	return &cli.Command{
		Name:  "import",
		Usage: "copy a Glance image (or any http(s) URL) into a local volume (importImage)",
		Description: `Starts an importImage job: the bytes of --image D/IMAGE_ID (an image of an
attached domain, read with the domain's credentials through the shared cache)
or of --url (any http or https URL, with --header/--header-file) are copied to
<repo-root>/<sp>/<sd>/images/<img>/<vol>, with <vol>.meta beside it.

The copy is checked before any byte moves (canonical UUIDs, no symlink in the
repository, no existing volume unless --overwrite, enough free space, a safe
image format: a qcow2 with a backing file is refused) and verified while it
copies against the checksum Glance reports; a failed or cancelled import
leaves no volume. All-zero blocks become holes.

` + transferExitHelp + `

Examples:
   glancegw import --sp $SP --sd $SD --img $IMG --vol $VOL --image iso/6f1c...e2 --wait
   glancegw import --sp $SP --sd $SD --img $IMG --vol $VOL \
       --url http://glance:9292/v2/images/6f1c...e2/file --header-file /run/secrets/glance-token-header
   glancegw import --sp $SP --sd $SD --img $IMG --vol $VOL --url https://example.org/disk.qcow2 --overwrite --json`,
		Flags: append(append(append(volumeFlags(),
			&cli.StringFlag{Name: "image", Usage: "`D/IMAGE_ID`: an image of attached domain D"},
			&cli.StringFlag{Name: "url", Usage: "source `URL` (http or https)"},
			&cli.BoolFlag{Name: "overwrite", Usage: "replace an existing volume"},
		), headerFlags()...), waitFlags()...),
		Action: func(c *cli.Context) error {
			if _, err := args(c); err != nil {
				return err
			}
			req, err := e.importRequest(c)
			if err != nil {
				return err
			}
			j, err := e.clientOf(c).Import(c.Context, req)
			if err != nil {
				return err
			}
			return e.started(c, j)
		},
	}
}

// requireVolume reports a missing volume flag as a usage error (urfave's
// Required would make it a plain error).
func requireVolume(c *cli.Context) error {
	var missing []string
	for _, f := range []string{"sp", "sd", "img", "vol"} {
		if c.String(f) == "" {
			missing = append(missing, "--"+f)
		}
	}
	if len(missing) > 0 {
		return usageError{fmt.Errorf("%s: missing %s", c.Command.Name, strings.Join(missing, ", "))}
	}
	return nil
}

// importRequest maps the import flags to the API request.
func (e *env) importRequest(c *cli.Context) (hostd.ImportRequest, error) {
	if err := requireVolume(c); err != nil {
		return hostd.ImportRequest{}, err
	}
	req := hostd.ImportRequest{SPUUID: c.String("sp"), SDUUID: c.String("sd"), ImgUUID: c.String("img"),
		VolUUID: c.String("vol"), Overwrite: c.Bool("overwrite")}
	img, u := c.String("image"), c.String("url")
	headers, err := e.headers(c)
	if err != nil {
		return req, err
	}
	switch {
	case (img == "") == (u == ""):
		return req, usageError{errors.New("import: give exactly one of --image D/IMAGE_ID and --url URL")}
	case img != "":
		if len(headers) > 0 {
			return req, usageError{errors.New("import: --header/--header-file go with --url (--image uses the domain's credentials)")}
		}
		d, id, ok := strings.Cut(img, "/")
		if !ok || d == "" || id == "" || strings.Contains(id, "/") {
			return req, usageError{fmt.Errorf("import: --image %q: want D/IMAGE_ID", img)}
		}
		dom, err := e.clientOf(c).Domain(c.Context, d)
		if err != nil {
			return req, err
		}
		u = strings.TrimRight(dom.URL, "/") + "/v2/images/" + url.PathEscape(id) + "/file"
	}
	req.ImportInfo = hostd.TransferInfo{Method: "http", URL: u, Headers: headers}
	return req, nil
}

func (e *env) exportCommand() *cli.Command {
	return &cli.Command{
		Name:  "export",
		Usage: "upload a local volume to Glance (exportImage)",
		Description: `Starts an exportImage job: the volume <repo-root>/<sp>/<sd>/images/<img>/<vol>
is uploaded as a new image NAME of attached domain D (--to D --name NAME; its
disk_format comes from inspecting the volume, container_format bare), or to an
existing image's file URL (--url, with --header/--header-file). md5 and sha512
are computed on the way and compared with what Glance reports; an image the
export created is deleted when anything fails.

` + transferExitHelp + `

Examples:
   glancegw export --sp $SP --sd $SD --img $IMG --vol $VOL --to iso --name backup-2024 --wait
   glancegw export --sp $SP --sd $SD --img $IMG --vol $VOL \
       --url http://glance:9292/v2/images/6f1c...e2/file --header-file /run/secrets/glance-token-header`,
		Flags: append(append(append(volumeFlags(),
			&cli.StringFlag{Name: "to", Usage: "attached domain `D` to create the image in"},
			&cli.StringFlag{Name: "name", Usage: "`NAME` of the new image (with --to)"},
			&cli.StringFlag{Name: "url", Usage: "image file `URL` to upload to (http or https)"},
		), headerFlags()...), waitFlags()...),
		Action: func(c *cli.Context) error {
			if _, err := args(c); err != nil {
				return err
			}
			req, err := e.exportRequest(c)
			if err != nil {
				return err
			}
			j, err := e.clientOf(c).Export(c.Context, req)
			if err != nil {
				return err
			}
			return e.started(c, j)
		},
	}
}

// exportRequest maps the export flags to the API request.
func (e *env) exportRequest(c *cli.Context) (hostd.ExportRequest, error) {
	if err := requireVolume(c); err != nil {
		return hostd.ExportRequest{}, err
	}
	req := hostd.ExportRequest{SPUUID: c.String("sp"), SDUUID: c.String("sd"), ImgUUID: c.String("img"), VolUUID: c.String("vol")}
	to, name, u := c.String("to"), c.String("name"), c.String("url")
	headers, err := e.headers(c)
	if err != nil {
		return req, err
	}
	switch {
	case to != "" && u == "":
		if name == "" {
			return req, usageError{errors.New("export: --to D needs --name NAME")}
		}
		if len(headers) > 0 {
			return req, usageError{errors.New("export: --header/--header-file go with --url")}
		}
		req.ExportInfo = hostd.TransferInfo{Domain: to, Name: name}
	case u != "" && to == "" && name == "":
		req.ExportInfo = hostd.TransferInfo{Method: "http", URL: u, Headers: headers}
	default:
		return req, usageError{errors.New("export: give either --to D --name NAME or --url URL")}
	}
	return req, nil
}

// headers reads --header and --header-file into a map.
func (e *env) headers(c *cli.Context) (map[string]string, error) {
	lines := c.StringSlice("header")
	if f := c.String("header-file"); f != "" {
		b, err := os.ReadFile(f)
		if err != nil {
			return nil, usageError{fmt.Errorf("--header-file: %w", err)}
		}
		sc := bufio.NewScanner(strings.NewReader(string(b)))
		for sc.Scan() {
			l := strings.TrimSpace(sc.Text())
			if l != "" && !strings.HasPrefix(l, "#") {
				lines = append(lines, l)
			}
		}
	}
	if len(lines) == 0 {
		return nil, nil
	}
	h := map[string]string{}
	for _, l := range lines {
		k, v, ok := strings.Cut(l, ":")
		k = strings.TrimSpace(k)
		if !ok || k == "" || strings.ContainsAny(k, " \t") {
			// Never echo the value: it may be a token.
			return nil, usageError{fmt.Errorf("invalid header %q: want 'Key: value'", k)}
		}
		h[k] = strings.TrimSpace(v)
	}
	return h, nil
}

// started reports a new job, and with --wait follows it to its end.
func (e *env) started(c *cli.Context, j hostd.Job) error {
	if c.Bool("wait") {
		return e.follow(c, j)
	}
	if jsonOut(c) {
		return e.printJSON(hostd.JobAnswer{Job: j})
	}
	_, err := fmt.Fprintf(e.stdout, "%s job %s %s (glancegw job wait %s)\n", j.Kind, j.ID, j.State, j.ID)
	return err
}

// follow waits for job j, drawing progress on stderr (a bar redrawn in place
// on a terminal, a line every 10 s otherwise), then prints the job and
// returns its result as an error for the exit code.
// SIGINT or SIGTERM stops the waiting, not the job.
func (e *env) follow(c *cli.Context, j hostd.Job) error {
	cl := e.clientOf(c)
	tty := !jsonOut(c) && e.isTerminal(e.stderr)
	poll := 10 * time.Second
	if tty {
		poll = time.Second
	}
	ctx, stop := signal.NotifyContext(c.Context, os.Interrupt, syscall.SIGTERM)
	defer stop()
	lastRetry := ""
	for !j.Done() {
		next, err := cl.WaitJob(ctx, j.ID, poll)
		if err != nil {
			if tty {
				fmt.Fprintln(e.stderr)
			}
			if ctx.Err() != nil && c.Context.Err() == nil {
				// The last poll may be 10 s old: say where the job is now.
				qctx, cancel := context.WithTimeout(c.Context, 2*time.Second)
				if now, err := cl.Job(qctx, j.ID); err == nil {
					j = now
				}
				cancel()
				return stoppedWaiting{j}
			}
			if errors.Is(err, hostd.ErrDaemonUnreachable) || errors.Is(err, io.EOF) ||
				errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, syscall.ECONNRESET) {
				return fmt.Errorf("the daemon went away while job %s was %s (stopped or killed); once it runs again, "+
					"glancegw job show %s tells what became of the job (one the daemon stopped in is interrupted): %w",
					j.ID, j.State, j.ID, hostd.ErrDaemonUnreachable)
			}
			return err
		}
		j = next
		switch {
		case jsonOut(c):
		case tty:
			// The bar stays one line; each new retry gets a line above it.
			if j.Retrying != "" && j.Retrying != lastRetry {
				fmt.Fprintf(e.stderr, "\r\x1b[Kjob %s: %s\n", j.ID, j.Retrying)
			}
			fmt.Fprintf(e.stderr, "\r%s\x1b[K", progressBar(j, 30))
		case !j.Done():
			fmt.Fprintf(e.stderr, "job %s: %s\n", j.ID, progressLine(j))
		}
		lastRetry = j.Retrying
	}
	if tty {
		fmt.Fprintln(e.stderr)
	}
	if jsonOut(c) {
		if err := e.printJSON(j); err != nil {
			return err
		}
	} else if err := e.showJob(j); err != nil {
		return err
	}
	return jobResult(j)
}

// stoppedWaiting is a wait the user interrupted; the job goes on. Its
// exit code is 130, as for any command stopped by SIGINT.
type stoppedWaiting struct{ job hostd.Job }

func (e stoppedWaiting) Error() string {
	return fmt.Sprintf("stopped waiting; job %s is %s at %.1f%% (glancegw job wait %s follows it, glancegw job cancel %s stops it)",
		e.job.ID, e.job.State, percent(e.job), e.job.ID, e.job.ID)
}

// jobError is a job that ended without success; its exit code is 1, or 130
// when it was cancelled.
type jobError struct{ job hostd.Job }

func (e jobError) Error() string {
	msg := fmt.Sprintf("job %s %s", e.job.ID, e.job.State)
	if e.job.Error != "" {
		msg += ": " + e.job.Error
	}
	return msg
}

func (e jobError) exitCode() int {
	if e.job.State == hostd.JobCancelled {
		return exitCancelled
	}
	return exitError
}

func jobResult(j hostd.Job) error {
	if j.State == hostd.JobSucceeded {
		return nil
	}
	return jobError{j}
}

func percent(j hostd.Job) float64 {
	if j.BytesTotal <= 0 {
		if j.State == hostd.JobSucceeded {
			return 100
		}
		return 0
	}
	return 100 * float64(j.BytesDone) / float64(j.BytesTotal)
}

func eta(j hostd.Job) string {
	if j.Rate <= 0 || j.BytesTotal <= 0 || j.Done() {
		return "--:--"
	}
	s := int64(float64(j.BytesTotal-j.BytesDone) / j.Rate)
	return fmt.Sprintf("%d:%02d", s/60, s%60)
}

// progressBar is one line: bar, percent, bytes, rate, ETA, state, and
// whether the source stalls or a read is being retried.
func progressBar(j hostd.Job, width int) string {
	p := percent(j)
	fill := int(p / 100 * float64(width))
	fill = min(max(fill, 0), width)
	state := j.State
	if j.StalledSeconds > 0 {
		state += ", " + stalled(j)
	}
	if j.Retrying != "" {
		state += ", retrying"
	}
	return fmt.Sprintf("[%s%s] %5.1f%%  %s / %s  %s/s  ETA %s  %s", strings.Repeat("#", fill), strings.Repeat(".", width-fill),
		p, humanSize(j.BytesDone), humanSize(j.BytesTotal), humanSize(int64(j.Rate)), eta(j), state)
}

// progressLine is the plain line: progressBar's facts and the retry in
// full.
func progressLine(j hostd.Job) string {
	line := fmt.Sprintf("%s %.1f%% %s of %s, %s/s, ETA %s", j.State, percent(j), humanSize(j.BytesDone),
		humanSize(j.BytesTotal), humanSize(int64(j.Rate)), eta(j))
	if j.StalledSeconds > 0 {
		line += ", " + stalled(j)
	}
	if j.Retrying != "" {
		line += "; " + j.Retrying
	}
	return line
}

// stalled says for how long no byte moved.
func stalled(j hostd.Job) string {
	return "stalled " + (time.Duration(j.StalledSeconds) * time.Second).String()
}

// isTerminal reports whether w is a terminal (tests set e.terminal).
func (e *env) isTerminal(w io.Writer) bool {
	if e.terminal != nil {
		return e.terminal(w)
	}
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	fi, err := f.Stat()
	return err == nil && fi.Mode()&os.ModeCharDevice != 0
}

func (e *env) showJob(j hostd.Job) error {
	tm := func(t *time.Time) string {
		if t == nil {
			return "-"
		}
		return t.Local().Format(time.DateTime)
	}
	kv := [][2]string{
		{"id", j.ID}, {"kind", j.Kind}, {"state", j.State},
		{"progress", fmt.Sprintf("%.1f%% (%s of %s)", percent(j), humanSize(j.BytesDone), humanSize(j.BytesTotal))},
		{"rate", humanSize(int64(j.Rate)) + "/s"},
	}
	if j.StalledSeconds > 0 {
		kv = append(kv, [2]string{"stalled", fmt.Sprintf("no byte moved for %s", time.Duration(j.StalledSeconds)*time.Second)})
	}
	if j.Retrying != "" {
		kv = append(kv, [2]string{"retrying", j.Retrying})
	}
	kv = append(kv, [2]string{"volume", j.Volume})
	if j.Source != "" {
		kv = append(kv, [2]string{"source", j.Source})
	}
	if j.Target != "" {
		kv = append(kv, [2]string{"target", j.Target})
	}
	if j.ImageID != "" {
		kv = append(kv, [2]string{"image", j.ImageID})
	}
	kv = append(kv, [2]string{"format", orDash(j.Format)}, [2]string{"checksum", orDash(j.Checksum)},
		[2]string{"verified", yesNo(j.Verified)})
	if j.Note != "" {
		kv = append(kv, [2]string{"note", j.Note})
	}
	if j.Error != "" {
		kv = append(kv, [2]string{"error", j.Error})
	}
	kv = append(kv, [2]string{"created", tm(&j.Created)}, [2]string{"started", tm(j.Started)}, [2]string{"ended", tm(j.Ended)})
	return e.fields(kv)
}

func (e *env) jobCommand() *cli.Command {
	idAction := func(fn func(c *cli.Context, cl *hostd.Client, id string) error) cli.ActionFunc {
		return func(c *cli.Context) error {
			a, err := args(c, "ID")
			if err != nil {
				return err
			}
			return fn(c, e.clientOf(c), a[0])
		}
	}
	jsonFlag := []cli.Flag{&cli.BoolFlag{Name: "json", Usage: "machine output (JSON)"}}
	return &cli.Command{
		Name:  "job",
		Usage: "list, show, cancel and wait for import/export jobs",
		Description: `The daemon keeps running jobs and the last 100 finished ones (across
restarts; a job the daemon was stopped in is reported "interrupted").

Examples:
   glancegw job list
   glancegw job show 3f0c2a9e-...
   glancegw job wait 3f0c2a9e-...      (exit code: 0 succeeded, 1 failed/interrupted, 130 cancelled)
   glancegw job cancel 3f0c2a9e-... --json`,
		Action: groupAction,
		Subcommands: []*cli.Command{
			{
				Name: "list", Usage: "list the jobs, oldest first", Flags: jsonFlag,
				Description: "Examples:\n   glancegw job list\n   glancegw job list --json",
				Action: func(c *cli.Context) error {
					if _, err := args(c); err != nil {
						return err
					}
					jobs, err := e.clientOf(c).Jobs(c.Context)
					if err != nil {
						return err
					}
					if jsonOut(c) {
						if jobs == nil {
							jobs = []hostd.Job{}
						}
						return e.printJSON(jobs)
					}
					rows := make([][]string, len(jobs))
					for i, j := range jobs {
						rows[i] = []string{j.ID, j.Kind, j.State, fmt.Sprintf("%.0f%%", percent(j)), humanSize(j.BytesTotal),
							j.Created.Local().Format(time.DateTime), j.Volume}
					}
					return e.table([]string{"ID", "KIND", "STATE", "DONE", "SIZE", "CREATED", "VOLUME"}, rows)
				},
			},
			{
				Name: "show", Usage: "show one job", ArgsUsage: "ID", Flags: jsonFlag,
				Description: "Examples:\n   glancegw job show 3f0c2a9e-...\n   glancegw job show 3f0c2a9e-... --json",
				Action: idAction(func(c *cli.Context, cl *hostd.Client, id string) error {
					j, err := cl.Job(c.Context, id)
					if err != nil {
						return err
					}
					if jsonOut(c) {
						return e.printJSON(j)
					}
					return e.showJob(j)
				}),
			},
			{
				Name: "cancel", Usage: "cancel a queued or running job", ArgsUsage: "ID", Flags: jsonFlag,
				Description: `Stops the job and removes its temporary files; answers once it stopped.
Cancelling a finished job is a conflict (exit 5).

Examples:
   glancegw job cancel 3f0c2a9e-...`,
				Action: idAction(func(c *cli.Context, cl *hostd.Client, id string) error {
					j, err := cl.CancelJob(c.Context, id)
					if err != nil {
						return err
					}
					if jsonOut(c) {
						return e.printJSON(j)
					}
					_, err = fmt.Fprintf(e.stdout, "job %s %s\n", j.ID, j.State)
					return err
				}),
			},
			{
				Name: "wait", Usage: "wait for a job, showing its progress", ArgsUsage: "ID", Flags: jsonFlag,
				Description: `Follows the job to its end: a progress bar (bytes, %, rate, ETA) on a
terminal, a line every 10 s otherwise. Both say when the source stalls (no byte
moved for 10 s; the rate is that of the last 10 s) and when a failed read is
being retried (the line, or a line above the bar, gives what failed, where and
when the next attempt is). The exit code is the job's: 0 succeeded,
1 failed or interrupted, 130 cancelled. Ctrl-C stops the waiting, not the job
(exit 130).

Examples:
   glancegw job wait 3f0c2a9e-...
   glancegw job wait 3f0c2a9e-... --json`,
				Action: idAction(func(c *cli.Context, cl *hostd.Client, id string) error {
					j, err := cl.Job(c.Context, id)
					if err != nil {
						return err
					}
					return e.follow(c, j)
				}),
			},
		},
	}
}
