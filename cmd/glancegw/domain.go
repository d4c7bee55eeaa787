package main

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"github.com/glancegw/glancegw/hostd"
	"github.com/urfave/cli/v2"
)

func (e *env) domainCommand() *cli.Command {
	return &cli.Command{
		Name:  "domain",
		Usage: "add, list, show, edit and remove Glance storage domains",
		Description: `A storage domain is a Glance endpoint with its credentials, known to the
daemon by a name and an sdUUID. D is a domain's name or sdUUID.

Examples:
   glancegw domain add iso --url http://glance:9292
   glancegw domain list
   glancegw domain show iso
   glancegw domain remove iso`,
		Action: groupAction,
		Subcommands: []*cli.Command{
			e.domainAddCommand(),
			e.domainListCommand(),
			e.domainShowCommand(),
			e.domainEditCommand(),
			e.domainRemoveCommand(),
		},
	}
}

// connectionFlags are the flags add and edit share.
func connectionFlags() []cli.Flag {
	return []cli.Flag{
		&cli.StringFlag{Name: "url", Usage: "Glance endpoint `URL`, e.g. http://glance:9292"},
		&cli.StringFlag{Name: "auth", Usage: "`KIND` of authentication: none, token or keystone (default: keystone with --auth-url, token with a token, else none)"},
		&cli.StringFlag{Name: "auth-url", Usage: "Keystone v3 `URL`"},
		&cli.StringFlag{Name: "username", Usage: "Keystone user `NAME`"},
		&cli.StringFlag{Name: "password-file", Usage: "`FILE` holding the Keystone password (else env GLANCEGW_PASSWORD)"},
		&cli.StringFlag{Name: "project", Usage: "Keystone project `NAME`"},
		&cli.StringFlag{Name: "user-domain", Usage: "Keystone user domain `NAME` (default Default)"},
		&cli.StringFlag{Name: "project-domain", Usage: "Keystone project domain `NAME` (default Default)"},
		&cli.StringFlag{Name: "token-file", Usage: "`FILE` holding a fixed token (else env GLANCEGW_TOKEN)"},
		&cli.StringFlag{Name: "ca-file", Usage: "PEM `FILE` of CAs to trust for https"},
		&cli.BoolFlag{Name: "insecure", Usage: "skip TLS certificate checks"},
	}
}

func (e *env) domainAddCommand() *cli.Command {
	return &cli.Command{
		Name:      "add",
		Usage:     "add a storage domain",
		ArgsUsage: "NAME",
		Description: `Adds a domain. The daemon does not contact Glance yet: a domain whose Glance
is down is added, and the error shows when it is used. NAME is 1-64 of
A-Z a-z 0-9 . _ -.

Examples:
   glancegw domain add iso --url http://glance:9292
   glancegw domain add prod --url https://glance.example:9292 --ca-file /etc/pki/ca.pem \
       --auth-url https://keystone.example:5000/v3 --username glancegw --project images \
       --password-file /etc/glancegw/prod.password
   GLANCEGW_TOKEN=$(cat tok) glancegw domain add t --url http://glance:9292 --uuid 5e1b7f4a-1c1d-4a5e-9d0e-0a6c3f2b9e11`,
		Flags: append(connectionFlags(),
			&cli.StringFlag{Name: "uuid", Usage: "the domain's `SDUUID` (canonical form; default: a random one)"},
			&cli.BoolFlag{Name: "json", Usage: "machine output (JSON)"},
		),
		Action: func(c *cli.Context) error {
			a, err := args(c, "NAME")
			if err != nil {
				return err
			}
			spec, err := domainSpec(c, a[0], e.getenv)
			if err != nil {
				return err
			}
			d, err := e.clientOf(c).AddDomain(c.Context, spec)
			if err != nil {
				return err
			}
			return e.showDomain(c, d)
		},
	}
}

// domainSpec maps add's flags to the API's DomainSpec.
func domainSpec(c *cli.Context, name string, getenv func(string) string) (hostd.DomainSpec, error) {
	if c.String("url") == "" {
		return hostd.DomainSpec{}, usageError{errors.New("domain add: --url is required")}
	}
	ca, err := absPath(c.String("ca-file"))
	if err != nil {
		return hostd.DomainSpec{}, err
	}
	token, err := secret(c, "token-file", "GLANCEGW_TOKEN", getenv)
	if err != nil {
		return hostd.DomainSpec{}, err
	}
	password, err := secret(c, "password-file", "GLANCEGW_PASSWORD", getenv)
	if err != nil {
		return hostd.DomainSpec{}, err
	}
	auth := c.String("auth")
	switch {
	case auth != "":
	case c.String("auth-url") != "":
		auth = "keystone"
	case token != "":
		auth = "token"
	default:
		auth = "none"
	}
	// A secret from the environment is meant for the kind that uses it.
	if auth != "token" && !c.IsSet("token-file") {
		token = ""
	}
	if auth != "keystone" && !c.IsSet("password-file") {
		password = ""
	}
	// Name the flags here; the daemon can only name its API fields.
	var missing []string
	switch auth {
	case "keystone":
		for _, f := range []struct{ flag, have string }{
			{"--auth-url URL", c.String("auth-url")}, {"--username U", c.String("username")},
			{"--project P", c.String("project")}, {"--password-file FILE (or GLANCEGW_PASSWORD)", password},
		} {
			if f.have == "" {
				missing = append(missing, f.flag)
			}
		}
	case "token":
		if token == "" {
			missing = append(missing, "--token-file FILE (or GLANCEGW_TOKEN)")
		}
	}
	if len(missing) > 0 {
		return hostd.DomainSpec{}, usageError{fmt.Errorf("domain add: auth %s needs %s", auth, strings.Join(missing, ", "))}
	}
	return hostd.DomainSpec{
		UUID: c.String("uuid"), Name: name, URL: c.String("url"), Auth: auth,
		AuthURL: c.String("auth-url"), Username: c.String("username"), Project: c.String("project"),
		UserDomain: c.String("user-domain"), ProjectDomain: c.String("project-domain"),
		CAFile: ca, Insecure: c.Bool("insecure"),
		Token: token, Password: password,
	}, nil
}

func (e *env) domainEditCommand() *cli.Command {
	return &cli.Command{
		Name:      "edit",
		Usage:     "change a storage domain",
		ArgsUsage: "D",
		Description: `Changes only the settings given. Switching --auth drops the credentials of the
old kind. A mounted domain keeps its mount and reads through the new settings.
Without flags, GLANCEGW_PASSWORD (keystone) or GLANCEGW_TOKEN (token) replaces
the domain's secret.

Examples:
   glancegw domain edit iso --url http://glance2:9292
   glancegw domain edit iso --name iso-old
   glancegw domain edit prod --password-file /etc/glancegw/prod.password
   GLANCEGW_PASSWORD=$(cat prod.password) glancegw domain edit prod
   glancegw domain edit prod --auth none`,
		Flags: append(connectionFlags(),
			&cli.StringFlag{Name: "name", Usage: "new `NAME`"},
			&cli.BoolFlag{Name: "json", Usage: "machine output (JSON)"},
		),
		Action: func(c *cli.Context) error {
			a, err := args(c, "D")
			if err != nil {
				return err
			}
			p, err := domainPatch(c, e.getenv)
			if err != nil {
				return err
			}
			cl := e.clientOf(c)
			if p == (hostd.DomainPatch{}) {
				// No flag: a secret in the environment is the change,
				// for the kind of auth the domain has.
				cur, err := cl.Domain(c.Context, a[0])
				if err != nil {
					return err
				}
				if p, err = envSecretPatch(cur, e.getenv); err != nil {
					return err
				}
			}
			d, err := cl.EditDomain(c.Context, a[0], p)
			if err != nil {
				return err
			}
			return e.showDomain(c, d)
		},
	}
}

// domainPatch maps edit's flags to the API's DomainPatch: only flags given
// are sent. A secret comes from its file flag, or from the environment when
// the auth kind is being set to the kind that uses it. Without any flag the
// patch is empty, and envSecretPatch decides.
func domainPatch(c *cli.Context, getenv func(string) string) (hostd.DomainPatch, error) {
	var p hostd.DomainPatch
	str := func(flag string, dst **string) {
		if c.IsSet(flag) {
			v := c.String(flag)
			*dst = &v
		}
	}
	str("name", &p.Name)
	str("url", &p.URL)
	str("auth", &p.Auth)
	str("auth-url", &p.AuthURL)
	str("username", &p.Username)
	str("project", &p.Project)
	str("user-domain", &p.UserDomain)
	str("project-domain", &p.ProjectDomain)
	if c.IsSet("ca-file") {
		ca, err := absPath(c.String("ca-file"))
		if err != nil {
			return p, err
		}
		p.CAFile = &ca
	}
	if c.IsSet("insecure") {
		v := c.Bool("insecure")
		p.Insecure = &v
	}
	if p.Auth == nil && p.AuthURL != nil && *p.AuthURL != "" {
		k := "keystone"
		p.Auth = &k
	}
	if p.Auth == nil && c.IsSet("token-file") {
		t := "token"
		p.Auth = &t
	}
	for _, s := range []struct {
		flag, env, kind string
		dst             **string
	}{
		{"token-file", "GLANCEGW_TOKEN", "token", &p.Token},
		{"password-file", "GLANCEGW_PASSWORD", "keystone", &p.Password},
	} {
		if !c.IsSet(s.flag) && (p.Auth == nil || *p.Auth != s.kind) {
			continue
		}
		v, err := secret(c, s.flag, s.env, getenv)
		if err != nil {
			return p, err
		}
		if v != "" {
			*s.dst = &v
		}
	}
	if p == (hostd.DomainPatch{}) && getenv("GLANCEGW_TOKEN") == "" && getenv("GLANCEGW_PASSWORD") == "" {
		return p, errNothingToChange
	}
	return p, nil
}

var errNothingToChange = usageError{errors.New("domain edit: nothing to change (see --help)")}

// envSecretPatch is the edit given by the environment alone: the secret of
// the kind of auth domain d uses. A secret of another kind is refused
// rather than ignored, so the user learns it was not applied.
func envSecretPatch(d hostd.Domain, getenv func(string) string) (hostd.DomainPatch, error) {
	tok, pw := getenv("GLANCEGW_TOKEN"), getenv("GLANCEGW_PASSWORD")
	switch {
	case d.Auth == "keystone" && pw != "":
		return hostd.DomainPatch{Password: &pw}, nil
	case d.Auth == "token" && tok != "":
		return hostd.DomainPatch{Token: &tok}, nil
	case pw != "":
		return hostd.DomainPatch{}, usageError{fmt.Errorf("domain edit: GLANCEGW_PASSWORD is set but domain %s uses auth %s, "+
			"not keystone; to switch, give --auth keystone --auth-url URL --username U --project P", d.Name, d.Auth)}
	case tok != "":
		return hostd.DomainPatch{}, usageError{fmt.Errorf("domain edit: GLANCEGW_TOKEN is set but domain %s uses auth %s, "+
			"not token; to switch, give --auth token", d.Name, d.Auth)}
	}
	return hostd.DomainPatch{}, errNothingToChange
}

// secret reads a secret from the file named by flag, else from env. Secrets
// are never taken from argv.
func secret(c *cli.Context, flag, envName string, getenv func(string) string) (string, error) {
	path := c.String(flag)
	if path == "" {
		return getenv(envName), nil
	}
	f, err := os.Open(path)
	if err != nil {
		return "", usageError{fmt.Errorf("--%s: %w", flag, err)}
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, 64<<10+1))
	if err != nil {
		return "", fmt.Errorf("--%s: read %s: %w", flag, path, err)
	}
	if len(b) > 64<<10 {
		return "", usageError{fmt.Errorf("--%s: %s is larger than 64 KiB", flag, path)}
	}
	v := strings.TrimRight(string(b), "\r\n")
	if v == "" {
		return "", usageError{fmt.Errorf("--%s: %s is empty", flag, path)}
	}
	return v, nil
}

// absPath makes a path absolute: the daemon resolves it from its own
// directory, not the caller's.
func absPath(p string) (string, error) {
	if p == "" {
		return "", nil
	}
	a, err := filepath.Abs(p)
	if err != nil {
		return "", usageError{fmt.Errorf("path %q: %w", p, err)}
	}
	return a, nil
}

func (e *env) domainListCommand() *cli.Command {
	return &cli.Command{
		Name:  "list",
		Usage: "list storage domains",
		Description: `Examples:
   glancegw domain list
   glancegw domain list --json`,
		Flags: []cli.Flag{&cli.BoolFlag{Name: "json", Usage: "machine output (JSON)"}},
		Action: func(c *cli.Context) error {
			if _, err := args(c); err != nil {
				return err
			}
			ds, err := e.clientOf(c).Domains(c.Context)
			if err != nil {
				return err
			}
			if jsonOut(c) {
				return e.printJSON(ds)
			}
			rows := make([][]string, len(ds))
			for i, d := range ds {
				rows[i] = []string{d.Name, d.UUID, d.URL, d.Auth, mountState(d), orDash(d.Mountpoint)}
			}
			return e.table([]string{"NAME", "UUID", "URL", "AUTH", "MOUNTED", "MOUNTPOINT"}, rows)
		},
	}
}

func mountState(d hostd.Domain) string {
	switch {
	case d.Active:
		return "yes"
	case d.Lost != "":
		return "lost" // unmounted outside the daemon
	case d.Mounted:
		return "failed" // wanted mounted, but it is not
	default:
		return "no"
	}
}

func (e *env) domainShowCommand() *cli.Command {
	return &cli.Command{
		Name:      "show",
		Usage:     "show one storage domain",
		ArgsUsage: "D",
		Description: `Examples:
   glancegw domain show iso
   glancegw domain show 5e1b7f4a-1c1d-4a5e-9d0e-0a6c3f2b9e11 --json`,
		Flags: []cli.Flag{&cli.BoolFlag{Name: "json", Usage: "machine output (JSON)"}},
		Action: func(c *cli.Context) error {
			a, err := args(c, "D")
			if err != nil {
				return err
			}
			d, err := e.clientOf(c).Domain(c.Context, a[0])
			if err != nil {
				return err
			}
			return e.showDomain(c, d)
		},
	}
}

func (e *env) showDomain(c *cli.Context, d hostd.Domain) error {
	if jsonOut(c) {
		return e.printJSON(d)
	}
	kv := [][2]string{
		{"name", d.Name}, {"uuid", d.UUID}, {"url", d.URL}, {"auth", d.Auth},
	}
	if d.Auth == "keystone" {
		kv = append(kv, [][2]string{{"auth url", d.AuthURL}, {"username", d.Username}, {"project", d.Project},
			{"user domain", d.UserDomain}, {"project domain", d.ProjectDomain}}...)
	}
	if d.CAFile != "" {
		kv = append(kv, [2]string{"ca file", d.CAFile})
	}
	kv = append(kv, [2]string{"insecure", yesNo(d.Insecure)}, [2]string{"mounted", mountState(d)})
	if d.Mountpoint != "" {
		kv = append(kv, [2]string{"mountpoint", d.Mountpoint})
	}
	if d.Lost != "" {
		kv = append(kv, [2]string{"lost", d.Lost})
	}
	if d.Error != "" {
		kv = append(kv, [2]string{"error", d.Error})
	}
	return e.fields(kv)
}

func (e *env) domainRemoveCommand() *cli.Command {
	return &cli.Command{
		Name:      "remove",
		Usage:     "unmount and remove a storage domain",
		ArgsUsage: "D",
		Description: `Unmounts the domain if it is mounted, then forgets it and its secrets. Glance
is not touched.

Examples:
   glancegw domain remove iso`,
		Action: func(c *cli.Context) error {
			a, err := args(c, "D")
			if err != nil {
				return err
			}
			if err := e.clientOf(c).RemoveDomain(c.Context, a[0]); err != nil {
				return err
			}
			_, err = fmt.Fprintf(e.stdout, "%s removed\n", a[0])
			return err
		},
	}
}
