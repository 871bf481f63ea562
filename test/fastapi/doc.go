// Package fastapi holds the end-to-end test of examples/fastapi, the
// guide's asynchronous FastAPI application running its background work on
// Spool: the real `spool serve` on a throwaway PostgreSQL (internal/testpg),
// the app under uvicorn with Debian's python3-fastapi, python3-uvicorn,
// python3-httpx and python3-asyncpg on a database of its own, and nothing
// mocked. The code is all in fastapi_test.go.
//
// Without those Python packages the test skips, saying which are missing;
// SPOOL_TEST_REQUIRE_PYTHON=1 (set by .ci/run) makes that a failure.
package fastapi
