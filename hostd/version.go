package hostd

// Version of glancegw, reported by the daemon and the CLI.
// Version is set at build time (make build: -X ...hostd.Version=$(git describe)).
// It is a variable only so the linker can set it.
var Version = "0.1.0-dev"
