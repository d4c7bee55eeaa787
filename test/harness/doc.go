// Package harness runs the real things glancegw's black-box tests need: a
// throwaway OpenStack Glance (through the scripts in test/glance), the built
// glancegw binary as a daemon, its CLI, and a reaper process that cleans up
// after a test binary that died (timeout panic, SIGKILL) before it could.
//
// Everything here returns errors instead of taking a *testing.T, so TestMain
// and benchmarks can use it too.
package harness
