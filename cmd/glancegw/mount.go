package main

import (
	"fmt"
	"strings"

	"github.com/urfave/cli/v2"
)

func (e *env) mountCommand() *cli.Command {
	return &cli.Command{
		Name:      "mount",
		Usage:     "mount a storage domain read-only",
		ArgsUsage: "D",
		Description: `Mounts domain D as a read-only tree laid out like an oVirt ISO domain, at
--mountpoint or <mount-root>/<name>. The daemon remembers it and mounts it
again when it restarts, until "glancegw unmount D". When Glance cannot be
listed the domain is mounted all the same, with a warning on stderr. A tree
unmounted outside the daemon (umount, umount -l) shows as lost in status and
domain list; mounting the domain again mounts it for real.

Examples:
   glancegw mount iso
   glancegw mount iso --mountpoint /rhev/data-center/mnt/glance-iso`,
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "mountpoint", Usage: "`DIR` to mount at (created when missing)"},
			&cli.BoolFlag{Name: "json", Usage: "machine output (JSON)"},
		},
		Action: func(c *cli.Context) error {
			a, err := args(c, "D")
			if err != nil {
				return err
			}
			mp, err := absPath(c.String("mountpoint"))
			if err != nil {
				return err
			}
			d, err := e.clientOf(c).Mount(c.Context, a[0], mp)
			if err != nil {
				return err
			}
			if d.Warning != "" {
				// Mounted all the same (Glance may come back): exit 0.
				fmt.Fprintf(e.stderr, "glancegw: warning: %s\n", strings.Join(strings.Fields(d.Warning), " "))
			}
			if jsonOut(c) {
				return e.printJSON(d)
			}
			_, err = fmt.Fprintf(e.stdout, "%s mounted at %s\n", d.Name, d.Mountpoint)
			return err
		},
	}
}

func (e *env) unmountCommand() *cli.Command {
	return &cli.Command{
		Name:      "unmount",
		Aliases:   []string{"umount"},
		Usage:     "unmount a storage domain",
		ArgsUsage: "D",
		Description: `Unmounts domain D and records that it stays unmounted. Unmounting a domain
that is not mounted succeeds.

Examples:
   glancegw unmount iso`,
		Flags: []cli.Flag{&cli.BoolFlag{Name: "json", Usage: "machine output (JSON)"}},
		Action: func(c *cli.Context) error {
			a, err := args(c, "D")
			if err != nil {
				return err
			}
			d, err := e.clientOf(c).Unmount(c.Context, a[0])
			if err != nil {
				return err
			}
			if jsonOut(c) {
				return e.printJSON(d)
			}
			_, err = fmt.Fprintf(e.stdout, "%s unmounted\n", d.Name)
			return err
		},
	}
}
