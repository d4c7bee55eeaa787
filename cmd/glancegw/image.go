package main

import (
	"strings"
	"time"

	"github.com/glancegw/glancegw/hostd"

	"github.com/urfave/cli/v2"
)

func (e *env) imageCommand() *cli.Command {
	return &cli.Command{
		Name:  "image",
		Usage: "list the images of a storage domain",
		Description: `Examples:
   glancegw image list iso
   glancegw image list iso --refresh --json`,
		Action: groupAction,
		Subcommands: []*cli.Command{{
			Name:      "list",
			Usage:     "list the images of a domain, in every status",
			ArgsUsage: "D",
			Description: `Lists what Glance holds for domain D, in every status (only active images are
mounted and exported). DETECTED is what glancegw found in the image's headers
(format and virtual size, "unsafe" when qemu would follow a reference to a host
file, "unknown" when the headers could not be read; "-" for images that are
not active). FORMAT is Glance's disk_format, which may be wrong. The listing may be up to the refresh interval old;
--refresh asks Glance again.

Examples:
   glancegw image list iso
   glancegw image list iso --refresh
   glancegw image list 5e1b7f4a-1c1d-4a5e-9d0e-0a6c3f2b9e11 --json`,
			Flags: []cli.Flag{
				&cli.BoolFlag{Name: "json", Usage: "machine output (JSON)"},
				&cli.BoolFlag{Name: "refresh", Usage: "ask Glance again instead of using the cached listing"},
			},
			Action: func(c *cli.Context) error {
				a, err := args(c, "D")
				if err != nil {
					return err
				}
				imgs, err := e.clientOf(c).Images(c.Context, a[0], c.Bool("refresh"))
				if err != nil {
					return err
				}
				if jsonOut(c) {
					return e.printJSON(imgs)
				}
				rows := make([][]string, len(imgs))
				for i, im := range imgs {
					rows[i] = []string{im.ID, im.Name, im.Status, orDash(im.DiskFormat), detected(im),
						humanSize(im.Size), im.UpdatedAt.UTC().Format(time.DateTime)}
				}
				return e.table([]string{"ID", "NAME", "STATUS", "FORMAT", "DETECTED", "SIZE", "UPDATED"}, rows)
			},
		}},
	}
}

// detected is the DETECTED column: format, virtual size and an unsafe mark.
func detected(im hostd.Image) string {
	if im.DetectedFormat == "" {
		return "-"
	}
	parts := []string{im.DetectedFormat}
	if im.DetectedVirtualSize > 0 {
		parts = append(parts, humanSize(im.DetectedVirtualSize))
	}
	if len(im.DetectedUnsafe) > 0 {
		parts = append(parts, "unsafe")
	}
	return strings.Join(parts, " ")
}
