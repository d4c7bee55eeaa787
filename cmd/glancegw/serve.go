package main

import (
	"fmt"
	"net"
	"os/signal"
	"syscall"

	"github.com/glancegw/glancegw/hostd"
	"github.com/urfave/cli/v2"
)

func (e *env) serveCommand() *cli.Command {
	return &cli.Command{
		Name:  "serve",
		Usage: "run the host daemon in the foreground",
		Description: `Runs the daemon: the local API on --socket, NBD on --nbd-socket (and on TCP
with --nbd-listen), and the FUSE mounts of the domains recorded as mounted.
SIGINT or SIGTERM unmounts everything and exits; the mounts come back on the
next start.

Examples:
   glancegw serve
   glancegw serve --cache-size 2G --nbd-listen 127.0.0.1:10809
   glancegw serve --transfer-rate-limit 100M
   glancegw --socket /tmp/ggw.sock serve --state-dir /tmp/ggw --mount-root /tmp/ggw/mnt --log-format json`,
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "state-dir", Value: hostd.DefaultStateDir, Usage: "`DIR` of domains.json and secrets/"},
			&cli.StringFlag{Name: "mount-root", Value: hostd.DefaultMountRoot, Usage: "`DIR` under which domains mount by default"},
			&cli.StringFlag{Name: "repo-root", Value: hostd.DefaultRepoRoot, Usage: "`DIR` of imported volumes"},
			&cli.StringFlag{Name: "cache-size", Value: "512M", Usage: "`SIZE` of the shared block cache (512M, 1G, 256MiB, bytes)"},
			&cli.StringFlag{Name: "nbd-socket", Value: hostd.DefaultNBDSocket, Usage: "NBD unix socket `PATH`"},
			&cli.StringFlag{Name: "nbd-listen", Usage: "also serve NBD on TCP `ADDR` (host:port; no authentication)"},
			&cli.StringFlag{Name: "refresh", Value: "30s", Usage: "image listing refresh `INTERVAL` (seconds or a duration)"},
			&cli.StringFlag{Name: "socket-group", Usage: "`GROUP` allowed to use the API socket (mode 0660)"},
			&cli.StringFlag{Name: "log-format", Value: "text", Usage: "`FORMAT` of the log on stderr: text or json"},
			&cli.BoolFlag{Name: "fuse-debug", Usage: "log every FUSE request"},
			&cli.StringFlag{Name: "transfer-rate-limit", Value: "0", Usage: "cap all imports and exports together at `SIZE` per second (100M, 1GiB; 0: no cap)"},
			&cli.BoolFlag{Name: "direct-io", Usage: "serve mounted files with direct I/O instead of through the kernel page cache (faster first reads, slower re-reads)"},
			// Repeated from the global flags so they work after "serve" too.
			// No EnvVars here: urfave/cli counts a flag set from the
			// environment as set, and lookupString would then prefer
			// GLANCEGW_SOCKET to a global --socket. The global flag reads it.
			&cli.StringFlag{Name: "socket", Value: hostd.DefaultSocket, Usage: "the API socket `PATH` (same as the global --socket; env GLANCEGW_SOCKET)"},
			&cli.BoolFlag{Name: "debug", Usage: "log at debug level"},
			&cli.StringFlag{Name: "log-level", Value: "info", Usage: "`LEVEL` of log output: debug, info, warn or error"},
		},
		Action: func(c *cli.Context) error {
			if _, err := args(c); err != nil {
				return err
			}
			cfg, err := serveConfig(c)
			if err != nil {
				return err
			}
			log, err := e.logger(c)
			if err != nil {
				return err
			}
			ctx, stop := signal.NotifyContext(c.Context, syscall.SIGINT, syscall.SIGTERM)
			defer stop()
			return e.serve(ctx, cfg, log)
		},
	}
}

// serveConfig maps serve's flags to the daemon's config.
func serveConfig(c *cli.Context) (hostd.Config, error) {
	size, err := parseSize(c.String("cache-size"))
	if err != nil {
		return hostd.Config{}, usageError{fmt.Errorf("--cache-size: %w", err)}
	}
	if size <= 0 {
		return hostd.Config{}, usageError{fmt.Errorf("--cache-size must be positive")}
	}
	refresh, err := parseRefresh(c.String("refresh"))
	if err != nil {
		return hostd.Config{}, usageError{fmt.Errorf("--refresh: %w", err)}
	}
	if refresh <= 0 {
		return hostd.Config{}, usageError{fmt.Errorf("--refresh must be positive")}
	}
	rate, err := parseSize(c.String("transfer-rate-limit"))
	if err != nil || rate < 0 {
		return hostd.Config{}, usageError{fmt.Errorf("--transfer-rate-limit: want a size per second such as 100M, not %q", c.String("transfer-rate-limit"))}
	}
	if l := c.String("nbd-listen"); l != "" {
		if _, _, err := net.SplitHostPort(l); err != nil {
			return hostd.Config{}, usageError{fmt.Errorf("--nbd-listen: want HOST:PORT such as 127.0.0.1:10809, not %q", l)}
		}
	}
	return hostd.Config{
		TransferRateLimit: rate,
		StateDir:          c.String("state-dir"),
		MountRoot:         c.String("mount-root"),
		RepoRoot:          c.String("repo-root"),
		Socket:            lookupString(c, "socket"),
		SocketGroup:       c.String("socket-group"),
		CacheSize:         size,
		NBDSocket:         c.String("nbd-socket"),
		NBDListen:         c.String("nbd-listen"),
		RefreshTTL:        refresh,
		FUSEDebug:         c.Bool("fuse-debug"),
		DirectIO:          c.Bool("direct-io"),
	}, nil
}
