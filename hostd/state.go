package hostd

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
)

// DomainRecord is what the daemon persists about a domain. It never holds a
// secret; those live in StateDir/secrets.
type DomainRecord struct {
	UUID          string `json:"uuid"`
	Name          string `json:"name"`
	URL           string `json:"url"`
	Auth          string `json:"auth"` // none, token or keystone
	AuthURL       string `json:"auth_url,omitempty"`
	Username      string `json:"username,omitempty"`
	Project       string `json:"project,omitempty"`
	UserDomain    string `json:"user_domain,omitempty"`
	ProjectDomain string `json:"project_domain,omitempty"`
	CAFile        string `json:"ca_file,omitempty"`
	Insecure      bool   `json:"insecure"`
	Mounted       bool   `json:"mounted"` // wanted mounted; survives a restart
	Mountpoint    string `json:"mountpoint,omitempty"`
}

// secrets of one domain, held in memory and in 0600 files.
type secrets struct {
	Token    string
	Password string
}

const stateVersion = 1

type stateFile struct {
	Version int            `json:"version"`
	Domains []DomainRecord `json:"domains"`
}

// store reads and writes the daemon's state directory.
type store struct{ dir string }

func (s store) domainsPath() string { return filepath.Join(s.dir, "domains.json") }
func (s store) secretsDir() string  { return filepath.Join(s.dir, "secrets") }

// init creates the state and secrets directories with their modes.
func (s store) init() error {
	if err := os.MkdirAll(s.dir, 0o755); err != nil {
		return fmt.Errorf("hostd: state dir: %w", err)
	}
	if err := os.MkdirAll(s.secretsDir(), 0o700); err != nil {
		return fmt.Errorf("hostd: secrets dir: %w", err)
	}
	// MkdirAll leaves an existing directory's mode alone.
	if err := os.Chmod(s.secretsDir(), 0o700); err != nil {
		return fmt.Errorf("hostd: secrets dir: %w", err)
	}
	return nil
}

// load returns the recorded domains; a missing file is an empty state.
func (s store) load() ([]DomainRecord, error) {
	b, err := os.ReadFile(s.domainsPath())
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("hostd: read state: %w", err)
	}
	var st stateFile
	if err := json.Unmarshal(b, &st); err != nil {
		return nil, fmt.Errorf("hostd: parse %s: %w", s.domainsPath(), err)
	}
	if st.Version != stateVersion {
		return nil, fmt.Errorf("hostd: %s: unknown state version %d", s.domainsPath(), st.Version)
	}
	return st.Domains, nil
}

func (s store) save(recs []DomainRecord) error {
	if recs == nil {
		recs = []DomainRecord{}
	}
	b, err := json.MarshalIndent(stateFile{Version: stateVersion, Domains: recs}, "", "  ")
	if err != nil {
		return fmt.Errorf("hostd: encode state: %w", err)
	}
	if err := writeFileAtomic(s.domainsPath(), append(b, '\n'), 0o600); err != nil {
		return fmt.Errorf("hostd: save state: %w", err)
	}
	return nil
}

func (s store) secretPath(uuid, kind string) string {
	return filepath.Join(s.secretsDir(), uuid+"."+kind)
}

func (s store) loadSecrets(uuid string) (secrets, error) {
	var sec secrets
	for kind, dst := range map[string]*string{"token": &sec.Token, "password": &sec.Password} {
		b, err := os.ReadFile(s.secretPath(uuid, kind))
		if errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if err != nil {
			return secrets{}, fmt.Errorf("hostd: read %s secret of %s: %w", kind, uuid, err)
		}
		*dst = string(b)
	}
	return sec, nil
}

// saveSecrets writes the non-empty secrets and removes the empty ones.
func (s store) saveSecrets(uuid string, sec secrets) error {
	for kind, v := range map[string]string{"token": sec.Token, "password": sec.Password} {
		p := s.secretPath(uuid, kind)
		if v == "" {
			if err := os.Remove(p); err != nil && !errors.Is(err, fs.ErrNotExist) {
				return fmt.Errorf("hostd: remove %s secret of %s: %w", kind, uuid, err)
			}
			continue
		}
		if err := writeFileAtomic(p, []byte(v), 0o600); err != nil {
			return fmt.Errorf("hostd: save %s secret of %s: %w", kind, uuid, err)
		}
	}
	return nil
}

func (s store) removeSecrets(uuid string) error { return s.saveSecrets(uuid, secrets{}) }

// writeFileAtomic replaces path with data so that a crash leaves either the
// old or the new content: temp file in the same directory, fsync, rename,
// fsync the directory.
func writeFileAtomic(path string, data []byte, perm os.FileMode) (err error) {
	dir, base := filepath.Split(path)
	f, err := os.CreateTemp(dir, "."+strings.TrimPrefix(base, ".")+".tmp-*")
	if err != nil {
		return err
	}
	tmp := f.Name()
	defer func() {
		if err != nil {
			f.Close()
			os.Remove(tmp)
		}
	}()
	if err = f.Chmod(perm); err != nil {
		return err
	}
	if _, err = f.Write(data); err != nil {
		return err
	}
	if err = f.Sync(); err != nil {
		return err
	}
	if err = f.Close(); err != nil {
		return err
	}
	if err = os.Rename(tmp, path); err != nil {
		return err
	}
	d, err := os.Open(filepath.Clean(dir))
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}
