// Package soak holds Spool's soak test: the real binary under a steady
// mixed load for minutes, on SQLite and on PostgreSQL, checking that its
// memory and goroutine count stay flat and that pruning keeps the task
// table bounded. The code is all in soak_test.go; `make soak` runs the long
// version (SPOOL_SOAK_DURATION, default 2m in `go test ./...`).
package soak
