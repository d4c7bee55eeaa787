// Package e2e holds the black-box acceptance tests of glancegw: the built
// binary against a real Glance (test/glance/start.sh), a real FUSE mount and
// real NBD clients (nbdinfo, nbdcopy, qemu-img, qemu-io).
//
// One noauth Glance (port 9292) and one daemon are shared by the tests that
// only add images; tests that break things (Glance down, daemon killed,
// Keystone tokens expiring) get their own Glance and/or daemon, so every
// top-level test runs in parallel with the others.
//
// Environment: GLANCEGW_BIN (use this binary instead of building
// bin/glancegw), GLANCEGW_E2E_KEEP=1 (keep temp dirs of failed runs),
// GLANCE_PORT (shared Glance port, default 9292).
//
// Tests needing a tool that is missing skip with "REQUIRED TOOL MISSING";
// `make deps` installs all of them, so under `make test` nothing skips.
package e2e
