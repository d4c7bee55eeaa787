package hostd

import "time"

// This file holds the JSON bodies of the local API, shared by the handlers and
// Client.

// DomainSpec is the body of POST /v1/domains. Token and Password travel only
// inward: the daemon stores them in 0600 files and never sends them back.
type DomainSpec struct {
	UUID          string `json:"uuid,omitempty"` // empty: a random v4 UUID
	Name          string `json:"name"`
	URL           string `json:"url"`
	Auth          string `json:"auth,omitempty"` // default none
	AuthURL       string `json:"auth_url,omitempty"`
	Username      string `json:"username,omitempty"`
	Project       string `json:"project,omitempty"`
	UserDomain    string `json:"user_domain,omitempty"`
	ProjectDomain string `json:"project_domain,omitempty"`
	CAFile        string `json:"ca_file,omitempty"`
	Insecure      bool   `json:"insecure,omitempty"`
	Token         string `json:"token,omitempty"`
	Password      string `json:"password,omitempty"`
}

// DomainPatch is the body of PATCH /v1/domains/{d}; nil fields stay as they
// are. The sdUUID cannot change.
type DomainPatch struct {
	Name          *string `json:"name,omitempty"`
	URL           *string `json:"url,omitempty"`
	Auth          *string `json:"auth,omitempty"`
	AuthURL       *string `json:"auth_url,omitempty"`
	Username      *string `json:"username,omitempty"`
	Project       *string `json:"project,omitempty"`
	UserDomain    *string `json:"user_domain,omitempty"`
	ProjectDomain *string `json:"project_domain,omitempty"`
	CAFile        *string `json:"ca_file,omitempty"`
	Insecure      *bool   `json:"insecure,omitempty"`
	Token         *string `json:"token,omitempty"`
	Password      *string `json:"password,omitempty"`
}

// Domain is a domain as the API shows it: the record plus live state.
type Domain struct {
	DomainRecord
	// Active is true while the FUSE tree is mounted (Mounted is the wish).
	Active      bool   `json:"active"`
	HasToken    bool   `json:"has_token"`
	HasPassword bool   `json:"has_password"`
	Error       string `json:"error,omitempty"` // last failure of mount or Glance
	// Lost says that the tree was unmounted outside the daemon (umount,
	// umount -l, fusermount -u) and how to mount it again; Mounted stays.
	Lost string `json:"lost,omitempty"`
}

// Image is one Glance image as the API lists it.
type Image struct {
	ID              string    `json:"id"`
	Name            string    `json:"name"`
	Status          string    `json:"status"`
	Size            int64     `json:"size"`
	VirtualSize     int64     `json:"virtual_size,omitempty"`
	DiskFormat      string    `json:"disk_format,omitempty"`
	ContainerFormat string    `json:"container_format,omitempty"`
	Checksum        string    `json:"checksum,omitempty"`
	OSHashAlgo      string    `json:"os_hash_algo,omitempty"`
	OSHashValue     string    `json:"os_hash_value,omitempty"`
	CreatedAt       time.Time `json:"created_at"`
	UpdatedAt       time.Time `json:"updated_at"`
	// What glancegw found in the image's headers (active images only):
	// format "unknown" when inspection failed, empty when not inspected.
	DetectedFormat      string   `json:"detected_format,omitempty"`
	DetectedVirtualSize int64    `json:"detected_virtual_size,omitempty"`
	DetectedUnsafe      []string `json:"detected_unsafe,omitempty"`
}

// MountRequest is the body of POST /v1/domains/{d}/mount.
type MountRequest struct {
	Mountpoint string `json:"mountpoint,omitempty"` // empty: <MountRoot>/<name>
}

// Export is one NBD export.
type Export struct {
	Name        string `json:"name"`
	Description string `json:"description"`
	Size        int64  `json:"size"`
	URI         string `json:"uri"`               // nbd+unix:///<name>?socket=<path>
	TCPURI      string `json:"tcp_uri,omitempty"` // nbd://host:port/<name> when TCP is served
}

// CacheStats mirrors the shared cache's counters.
type CacheStats struct {
	MaxBytes  int64 `json:"max_bytes"`
	Bytes     int64 `json:"bytes"`
	Hits      int64 `json:"hits"`
	Misses    int64 `json:"misses"`
	Fetches   int64 `json:"fetches"`
	Evictions int64 `json:"evictions"`
}

// MountInfo is one mount (active, or lost in Status.LostMounts).
type MountInfo struct {
	Domain     string `json:"domain"`
	UUID       string `json:"uuid"`
	Mountpoint string `json:"mountpoint"`
}

// Status is the body of GET /v1/status.
type Status struct {
	Version   string      `json:"version"`
	PID       int         `json:"pid"`
	StartedAt time.Time   `json:"started_at"`
	Uptime    float64     `json:"uptime_seconds"`
	Cache     CacheStats  `json:"cache"`
	NBDSocket string      `json:"nbd_socket"`
	NBDListen string      `json:"nbd_listen,omitempty"`
	NBDError  string      `json:"nbd_error,omitempty"`
	Domains   int         `json:"domains"`
	Mounts    []MountInfo `json:"mounts"`
	// LostMounts are the domains recorded as mounted whose tree was
	// unmounted outside the daemon; `glancegw mount D` mounts them again.
	LostMounts []MountInfo `json:"lost_mounts,omitempty"`
}

// errorBody is every error answer.
type errorBody struct {
	Error string `json:"error"`
	Code  string `json:"code"`
}

// TransferInfo is importInfo or exportInfo of the VDSM verbs: method "http"
// with url and headers, or (exportInfo only) domain and name to create a new
// image in an attached domain. Headers travel only inward: they are used for
// the transfer and never stored, logged or sent back.
type TransferInfo struct {
	Method  string            `json:"method,omitempty"`
	URL     string            `json:"url,omitempty"`
	Headers map[string]string `json:"headers,omitempty"`
	Domain  string            `json:"domain,omitempty"`
	Name    string            `json:"name,omitempty"`
}

// ImportRequest is the body of POST /v1/importImage.
type ImportRequest struct {
	SPUUID     string       `json:"spUUID"`
	SDUUID     string       `json:"sdUUID"`
	ImgUUID    string       `json:"imgUUID"`
	VolUUID    string       `json:"volUUID"`
	ImportInfo TransferInfo `json:"importInfo"`
	Overwrite  bool         `json:"overwrite,omitempty"`
}

// ExportRequest is the body of POST /v1/exportImage.
type ExportRequest struct {
	SPUUID     string       `json:"spUUID"`
	SDUUID     string       `json:"sdUUID"`
	ImgUUID    string       `json:"imgUUID"`
	VolUUID    string       `json:"volUUID"`
	ExportInfo TransferInfo `json:"exportInfo"`
}

// Job kinds and states.
const (
	JobImport = "import"
	JobExport = "export"

	JobQueued      = "queued"
	JobRunning     = "running"
	JobSucceeded   = "succeeded"
	JobFailed      = "failed"
	JobCancelled   = "cancelled"
	JobInterrupted = "interrupted" // the daemon stopped during the job
)

// Job is one import or export as the API shows it. Source and Target carry
// no credentials.
type Job struct {
	ID         string `json:"id"`
	Kind       string `json:"kind"`
	State      string `json:"state"`
	BytesDone  int64  `json:"bytes_done"`
	BytesTotal int64  `json:"bytes_total"`
	// Rate is bytes/s: over the last 10 s while the job runs (0 once
	// nothing moved for that long), over the whole run once it ended.
	Rate    float64    `json:"rate"`
	Error   string     `json:"error,omitempty"`
	Created time.Time  `json:"created"`
	Started *time.Time `json:"started,omitempty"`
	Ended   *time.Time `json:"ended,omitempty"`
	Volume  string     `json:"volume"`
	Source  string     `json:"source,omitempty"`
	Target  string     `json:"target,omitempty"`
	// Filled as the job learns them.
	Format      string `json:"format,omitempty"`
	VirtualSize int64  `json:"virtual_size,omitempty"`
	Checksum    string `json:"checksum,omitempty"` // algo:hex of the bytes moved
	Verified    bool   `json:"verified"`
	Note        string `json:"note,omitempty"`
	ImageID     string `json:"image_id,omitempty"` // export: the Glance image
	// Domain is the sdUUID of the domain an export uploads through.
	Domain string `json:"domain,omitempty"`
	// CleanupImage is an image this export created that is deleted unless
	// the job succeeds; recorded before the upload starts, so a restart
	// after kill -9 deletes it too. Empty once deleted (or the job succeeded).
	CleanupImage string `json:"cleanup_image,omitempty"`
	// While the job runs, what troubles its source. Retrying is the failed
	// read the engine is about to try again (what failed, where, the
	// attempt, when the next is), cleared once a retried read went
	// through; StalledSeconds counts the seconds since a byte last moved,
	// once that is 10 or more and bytes remain.
	Retrying       string `json:"retrying,omitempty"`
	StalledSeconds int64  `json:"stalled_seconds,omitempty"`
}

// Done reports whether the job reached a final state.
func (j Job) Done() bool {
	switch j.State {
	case JobSucceeded, JobFailed, JobCancelled, JobInterrupted:
		return true
	}
	return false
}

// JobAnswer is the answer of POST /v1/importImage and /v1/exportImage.
type JobAnswer struct {
	Job Job `json:"job"`
}
