package hostd

// Version of glancegw, reported by the daemon and the CLI.
const Version = "0.1.0-dev"
