package main

import (
	"context"
	"fmt"
	"strconv"
	"time"

	"github.com/glancegw/glancegw/hostd"
	"github.com/urfave/cli/v2"
)

func (e *env) statusCommand() *cli.Command {
	return &cli.Command{
		Name:  "status",
		Usage: "show the daemon's status",
		Description: `Shows the daemon's version, uptime, cache use, NBD sockets, domains and
mounts, and the mounts lost because they were unmounted outside the daemon
("glancegw mount D" mounts them again). Exit code 3 means no daemon answers
on --socket.

Examples:
   glancegw status
   glancegw --socket /tmp/ggw.sock status --json`,
		Flags: []cli.Flag{&cli.BoolFlag{Name: "json", Usage: "machine output (JSON)"}},
		Action: func(c *cli.Context) error {
			if _, err := args(c); err != nil {
				return err
			}
			s, err := e.clientOf(c).Status(c.Context)
			if err != nil {
				return err
			}
			if jsonOut(c) {
				return e.printJSON(s)
			}
			kv := [][2]string{
				{"version", s.Version},
				{"pid", strconv.Itoa(s.PID)},
				{"uptime", (time.Duration(s.Uptime) * time.Second).String()},
				{"cache", fmt.Sprintf("%s of %s, %d hits, %d misses, %d fetches, %d evictions",
					humanSize(s.Cache.Bytes), humanSize(s.Cache.MaxBytes), s.Cache.Hits, s.Cache.Misses,
					s.Cache.Fetches, s.Cache.Evictions)},
				{"nbd socket", s.NBDSocket},
				{"nbd listen", orDash(s.NBDListen)},
			}
			if s.NBDError != "" {
				kv = append(kv, [2]string{"nbd error", s.NBDError})
			}
			kv = append(kv, [2]string{"domains", strconv.Itoa(s.Domains)})
			for _, m := range s.Mounts {
				kv = append(kv, [2]string{"mount", m.Domain + " at " + m.Mountpoint})
			}
			for _, m := range s.LostMounts {
				kv = append(kv, [2]string{"lost mount", fmt.Sprintf("%s at %s (unmounted outside the daemon; glancegw mount %s mounts it again)",
					m.Domain, m.Mountpoint, m.Domain)})
			}
			return e.fields(kv)
		},
	}
}

func (e *env) versionCommand() *cli.Command {
	return &cli.Command{
		Name:  "version",
		Usage: "print the version of glancegw (and of the daemon, if one answers)",
		Description: `Examples:
   glancegw version
   glancegw version --json`,
		Flags: []cli.Flag{&cli.BoolFlag{Name: "json", Usage: "machine output (JSON)"}},
		Action: func(c *cli.Context) error {
			if _, err := args(c); err != nil {
				return err
			}
			v := struct {
				Version string `json:"version"`
				Daemon  string `json:"daemon,omitempty"`
			}{Version: hostd.Version}
			ctx, cancel := context.WithTimeout(c.Context, 2*time.Second)
			defer cancel()
			if s, err := e.clientOf(c).Status(ctx); err == nil {
				v.Daemon = s.Version
			}
			if jsonOut(c) {
				return e.printJSON(v)
			}
			fmt.Fprintf(e.stdout, "glancegw %s\n", v.Version)
			if v.Daemon != "" {
				fmt.Fprintf(e.stdout, "daemon   %s\n", v.Daemon)
			}
			return nil
		},
	}
}
