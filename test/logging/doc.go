// Package logging holds the tests of Spool's log pipeline from end to end:
// the real `spool serve` binary's stdout and stderr checked for secrets and
// for lines Filebeat can ship, and the Filebeat configurations under
// deploy/logging (Helm values and the Compose profile's filebeat.yml) decoded
// strictly so a mistyped key fails here rather than silently in a cluster.
//
// It has no code outside its tests; this file exists for the package comment.
package logging
