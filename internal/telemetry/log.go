// Package telemetry owns Spool's logs, metrics and (later) traces: the slog
// handler that writes Elastic Common Schema JSON, and the Prometheus
// collectors the other packages record into. It imports nothing of Spool's.
package telemetry

import (
	"io"
	"log/slog"
	"strings"
)

// ECSVersion is the Elastic Common Schema version the log lines follow.
const ECSVersion = "8.11.0"

// NewLogger returns a JSON logger whose keys follow the Elastic Common
// Schema, so Filebeat can ship lines to Elasticsearch unchanged.
func NewLogger(w io.Writer, level, service, version string) *slog.Logger {
	var lv slog.Level
	switch strings.ToLower(level) {
	case "debug":
		lv = slog.LevelDebug
	case "warn":
		lv = slog.LevelWarn
	case "error":
		lv = slog.LevelError
	default:
		lv = slog.LevelInfo
	}
	h := slog.NewJSONHandler(w, &slog.HandlerOptions{Level: lv, ReplaceAttr: ecsKeys})
	return slog.New(h).With(
		slog.String("ecs.version", ECSVersion),
		slog.String("service.name", service),
		slog.String("service.version", version),
	)
}

// ecsKeys renames slog's built-in keys to their ECS names.
func ecsKeys(groups []string, a slog.Attr) slog.Attr {
	if len(groups) > 0 {
		return a
	}
	switch a.Key {
	case slog.TimeKey:
		a.Key = "@timestamp"
	case slog.LevelKey:
		a.Key = "log.level"
		a.Value = slog.StringValue(strings.ToLower(a.Value.String()))
	case slog.MessageKey:
		a.Key = "message"
	}
	return a
}
