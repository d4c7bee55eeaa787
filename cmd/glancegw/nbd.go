package main

import (
	"github.com/urfave/cli/v2"
)

func (e *env) nbdCommand() *cli.Command {
	return &cli.Command{
		Name:  "nbd",
		Usage: "list the NBD exports",
		Description: `Examples:
   glancegw nbd list
   qemu-img info "$(glancegw nbd list --json | jq -r '.[0].uri')"`,
		Action: groupAction,
		Subcommands: []*cli.Command{{
			Name:  "list",
			Usage: "list the NBD exports with their URIs",
			Description: `Every active image of every domain is exported read-only as
<sdUUID>/<image-id>, and as <image-id> when no other domain has that id.

Examples:
   glancegw nbd list
   glancegw nbd list --json
   nbdcopy 'nbd+unix:///<sdUUID>/<image-id>?socket=/run/glancegw/nbd.sock' out.raw`,
			Flags: []cli.Flag{&cli.BoolFlag{Name: "json", Usage: "machine output (JSON)"}},
			Action: func(c *cli.Context) error {
				if _, err := args(c); err != nil {
					return err
				}
				exps, err := e.clientOf(c).Exports(c.Context)
				if err != nil {
					return err
				}
				if jsonOut(c) {
					return e.printJSON(exps)
				}
				rows := make([][]string, len(exps))
				for i, x := range exps {
					rows[i] = []string{x.Name, x.Description, humanSize(x.Size), x.URI}
				}
				return e.table([]string{"NAME", "DESCRIPTION", "SIZE", "URI"}, rows)
			},
		}},
	}
}
