// Package monitoring holds the tests of Spool's monitoring assets under
// deploy/monitoring: the Prometheus alerting rules (promtool check and unit
// tests), the PrometheusRule and Grafana dashboard ConfigMap generated from
// them, the Grafana dashboard's JSON model, and a live test that runs every
// dashboard query and alert expression through a real Prometheus scraping a
// real `spool serve`.
//
// It has no code outside its tests; this file exists for the package comment.
package monitoring
