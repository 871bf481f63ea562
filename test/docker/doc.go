// Package docker holds the tests of Spool's container image and Compose
// stack on a real Docker engine: `make test-docker`, which runs
// `go test -tags docker ./test/docker/`.
//
// No image can be pulled where these tests run, so the harness builds
// stand-ins for the official base images itself (a golang builder from a
// debootstrap rootfs and this machine's Go toolchain, a distroless-like
// runtime, a PostgreSQL image from Debian's package with the official
// image's contract) and hands them to the Dockerfile and compose.yaml through
// the build arguments and variables that users can also set. The stand-ins
// are tagged by a hash of their inputs and reused across runs.
//
// Without a reachable engine every test skips, saying why; with
// SPOOL_TEST_REQUIRE_DOCKER=1 they fail instead.
package docker
