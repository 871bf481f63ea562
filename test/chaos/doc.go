// Package chaos holds Spool's failure tests: the real `spool` binary, run as
// several replicas on a real PostgreSQL (internal/testpg), put through the
// faults production sees: a rolling restart behind haproxy, SIGKILL while
// delivering, a PostgreSQL restart under load, and a replica cut off from
// PostgreSQL in its own network namespace. Each test counts what a client
// and a receiver saw and checks the store afterwards: nothing accepted is
// lost, nothing stays running, and no final state is overwritten.
//
// The tests live in _test.go files; this file only documents the package.
// A part that cannot run here (no haproxy, no permission for `ip netns`, no
// PostgreSQL binaries) skips its test with the reason, unless
// SPOOL_TEST_REQUIRE_CHAOS=1 is set (CI sets it), which makes it a failure.
package chaos
