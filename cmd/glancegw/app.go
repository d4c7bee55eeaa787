package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"
	"text/tabwriter"

	"github.com/glancegw/glancegw/hostd"
	"github.com/urfave/cli/v2"
)

// env is what the commands touch outside themselves; tests replace parts.
type env struct {
	stdout, stderr io.Writer
	getenv         func(string) string
	// serve runs the daemon (glancegw serve).
	serve func(ctx context.Context, cfg hostd.Config, log *slog.Logger) error
	// client reaches the daemon at socket.
	client func(socket string) *hostd.Client
	// terminal reports whether w is a terminal (nil: check the file).
	terminal func(w io.Writer) bool
}

func defaultEnv() *env {
	return &env{
		stdout: os.Stdout,
		stderr: os.Stderr,
		getenv: os.Getenv,
		serve: func(ctx context.Context, cfg hostd.Config, log *slog.Logger) error {
			d, err := hostd.New(cfg, log)
			if err != nil {
				return err
			}
			return d.Run(ctx)
		},
		client: hostd.NewClient,
	}
}

// Main runs the command line args (args[0] is the program name).
func Main(args []string) error { return defaultEnv().main(args) }

// run runs args and turns the outcome into an exit code, printing an error
// as one line on stderr.
func run(args []string, e *env) int {
	err := e.main(args)
	if err != nil {
		msg := strings.Join(strings.Fields(err.Error()), " ")
		fmt.Fprintf(e.stderr, "glancegw: %s\n", msg)
	}
	return exitCode(err)
}

func (e *env) main(args []string) error {
	app := e.app()
	return app.RunContext(context.Background(), intersperse(app, args))
}

func (e *env) app() *cli.App {
	app := &cli.App{
		Name:    "glancegw",
		Usage:   "serve OpenStack Glance storage domains as FUSE mounts and NBD exports",
		Version: hostd.Version,
		Description: `glancegw serve runs the host daemon. Every other command talks to it over
its local socket (--socket, env GLANCEGW_SOCKET).

Secrets never go on the command line: use --password-file / --token-file, or
the environment (GLANCEGW_PASSWORD, GLANCEGW_TOKEN).

` + exitCodesHelp,
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "socket", Value: hostd.DefaultSocket, EnvVars: []string{"GLANCEGW_SOCKET"},
				Usage: "the daemon's API `PATH` (where serve listens and the other commands connect)"},
			&cli.BoolFlag{Name: "json", Usage: "machine output (JSON)"},
			&cli.BoolFlag{Name: "debug", Usage: "log at debug level (same as --log-level debug)"},
			&cli.StringFlag{Name: "log-level", Value: "info", Usage: "`LEVEL` of log output: debug, info, warn or error"},
		},
		Commands: []*cli.Command{
			e.serveCommand(),
			e.domainCommand(),
			e.imageCommand(),
			e.importCommand(),
			e.exportCommand(),
			e.jobCommand(),
			e.mountCommand(),
			e.unmountCommand(),
			e.nbdCommand(),
			e.statusCommand(),
			e.versionCommand(),
		},
		Action:          groupAction,
		Writer:          e.stdout,
		ErrWriter:       e.stderr,
		HideVersion:     true,                         // the version command says more
		ExitErrHandler:  func(*cli.Context, error) {}, // run maps errors to exit codes
		OnUsageError:    onUsageError,
		HideHelpCommand: true,
	}
	setUsageHandlers(app.Commands)
	return app
}

func onUsageError(_ *cli.Context, err error, _ bool) error { return usageError{err} }

func setUsageHandlers(cmds []*cli.Command) {
	for _, c := range cmds {
		c.OnUsageError = onUsageError
		setUsageHandlers(c.Subcommands)
	}
}

// groupAction runs for the app or a command group without a known
// subcommand: help without arguments, a usage error with them.
func groupAction(c *cli.Context) error {
	if c.Args().Present() {
		return usageError{fmt.Errorf("unknown command %q (see --help)", c.Args().First())}
	}
	if c.Command != nil && c.Command.Name != "" && len(c.Command.Subcommands) > 0 {
		return cli.ShowSubcommandHelp(c)
	}
	return cli.ShowAppHelp(c)
}

// args checks the count of positional arguments and returns them.
func args(c *cli.Context, names ...string) ([]string, error) {
	got := c.Args().Slice()
	if len(got) != len(names) {
		return nil, usageError{fmt.Errorf("%s: want %d argument(s) (%s), got %d",
			c.Command.FullName(), len(names), strings.Join(names, " "), len(got))}
	}
	return got, nil
}

// lookupString returns flag name from the innermost command that sets it,
// else from the innermost that defines it: serve repeats some global flags
// so they also work after the command name.
func lookupString(c *cli.Context, name string) string {
	for _, cc := range c.Lineage() {
		if cc.IsSet(name) {
			return cc.String(name)
		}
	}
	return c.String(name)
}

func lookupBool(c *cli.Context, name string) bool {
	for _, cc := range c.Lineage() {
		if cc.IsSet(name) {
			return cc.Bool(name)
		}
	}
	return false
}

// jsonOut reports whether --json is set on the command or globally.
func jsonOut(c *cli.Context) bool { return lookupBool(c, "json") }

func (e *env) clientOf(c *cli.Context) *hostd.Client { return e.client(lookupString(c, "socket")) }

func (e *env) printJSON(v any) error {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return err
	}
	_, err = fmt.Fprintf(e.stdout, "%s\n", b)
	return err
}

// table prints rows under a header, aligned.
func (e *env) table(header []string, rows [][]string) error {
	tw := tabwriter.NewWriter(e.stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, strings.Join(header, "\t"))
	for _, r := range rows {
		fmt.Fprintln(tw, strings.Join(r, "\t"))
	}
	return tw.Flush()
}

// fields prints key: value lines, aligned.
func (e *env) fields(kv [][2]string) error {
	tw := tabwriter.NewWriter(e.stdout, 0, 4, 1, ' ', 0)
	for _, p := range kv {
		// One field, one line: a value with line breaks would misalign
		// the rest.
		fmt.Fprintf(tw, "%s:\t%s\n", p[0], strings.Join(strings.Fields(p[1]), " "))
	}
	return tw.Flush()
}

// logger builds the daemon's logger from --debug, --log-level and
// --log-format.
func (e *env) logger(c *cli.Context) (*slog.Logger, error) {
	var level slog.Level
	if err := level.UnmarshalText([]byte(lookupString(c, "log-level"))); err != nil {
		return nil, usageError{fmt.Errorf("invalid --log-level %q: want debug, info, warn or error", lookupString(c, "log-level"))}
	}
	if lookupBool(c, "debug") {
		level = slog.LevelDebug
	}
	opts := &slog.HandlerOptions{Level: level}
	switch f := c.String("log-format"); f {
	case "", "text":
		return slog.New(slog.NewTextHandler(e.stderr, opts)), nil
	case "json":
		return slog.New(slog.NewJSONHandler(e.stderr, opts)), nil
	default:
		return nil, usageError{fmt.Errorf("invalid --log-format %q: want text or json", f)}
	}
}

func yesNo(b bool) string {
	if b {
		return "yes"
	}
	return "no"
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}
