package main

import (
	"strings"

	"github.com/urfave/cli/v2"
)

// intersperse moves the flags of the command line's leaf command before its
// positional arguments, so "domain add NAME --url U" works: urfave/cli (like
// package flag) stops reading flags at the first positional argument.
// Everything after "--" stays positional.
func intersperse(app *cli.App, args []string) []string {
	if len(args) < 2 {
		return args
	}
	out := []string{args[0]}
	rest := args[1:]
	flags, cmds := app.Flags, app.Commands
	// Walk down the command names, keeping each level's flags in place.
	for {
		i, ok := skipFlags(rest, flags)
		out = append(out, rest[:i]...)
		rest = rest[i:]
		if !ok || len(rest) == 0 {
			return append(out, rest...)
		}
		sub := findCommand(cmds, rest[0])
		if sub == nil {
			break // rest[0] is the first positional of the leaf
		}
		out = append(out, rest[0])
		rest = rest[1:]
		flags, cmds = sub.Flags, sub.Subcommands
		if len(cmds) == 0 {
			break
		}
	}
	var fl, pos []string
	for i := 0; i < len(rest); i++ {
		a := rest[i]
		switch {
		case a == "--":
			pos = append(pos, rest[i+1:]...)
			i = len(rest)
		case isFlag(a):
			fl = append(fl, a)
			if takesValue(a, flags) && i+1 < len(rest) {
				fl = append(fl, rest[i+1])
				i++
			}
		default:
			pos = append(pos, a)
		}
	}
	out = append(out, fl...)
	if len(pos) > 0 {
		out = append(out, "--")
		out = append(out, pos...)
	}
	return out
}

// skipFlags returns how many leading tokens are flags (with their values);
// ok is false when a "--" ends the flags.
func skipFlags(args []string, flags []cli.Flag) (int, bool) {
	i := 0
	for i < len(args) {
		a := args[i]
		if a == "--" {
			return i, false
		}
		if !isFlag(a) {
			return i, true
		}
		i++
		if takesValue(a, flags) && i < len(args) {
			i++
		}
	}
	return i, true
}

func isFlag(a string) bool { return len(a) > 1 && a[0] == '-' }

// takesValue reports whether flag token a (without "=value") consumes the
// next token.
func takesValue(a string, flags []cli.Flag) bool {
	if strings.Contains(a, "=") {
		return false
	}
	name := strings.TrimLeft(a, "-")
	for _, f := range flags {
		for _, n := range f.Names() {
			if n == name {
				tv, ok := f.(interface{ TakesValue() bool })
				return ok && tv.TakesValue()
			}
		}
	}
	return false
}

func findCommand(cmds []*cli.Command, name string) *cli.Command {
	for _, c := range cmds {
		if c.HasName(name) {
			return c
		}
	}
	return nil
}
