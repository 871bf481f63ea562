package main

import (
	"bufio"
	"context"
	"fmt"
	"math"
	"net/http"
	"sort"
	"strconv"
	"strings"

	"github.com/jackc/pgx/v5"

	"github.com/spoolhq/spool/internal/testpg"
)

// What a task costs PostgreSQL, counted rather than timed: statements by
// kind (pg_stat_statements), transactions (pg_stat_database), WAL bytes,
// and the system's own counters (spool serve's /metrics, River's pool).

// enableStatements loads pg_stat_statements into the cluster (it must be
// in shared_preload_libraries, so the server restarts) and creates its
// view in the postgres database, from which every database's statements
// are read. testpg writes its settings to postgresql.conf; ALTER SYSTEM
// writes postgresql.auto.conf, read after it, so testpg needs no option.
func enableStatements(ctx context.Context, pg *testpg.Server) error {
	conn, err := pgx.Connect(ctx, pg.DSN("postgres"))
	if err != nil {
		return fmt.Errorf("connect: %w", err)
	}
	for _, stmt := range []string{
		// Its defaults fit: 5,000 entries (each system uses a few dozen
		// statements, so none is evicted and loses counts), and utility
		// statements (BEGIN, COMMIT, LISTEN, NOTIFY…) are tracked. Its
		// own settings cannot be set before it is loaded.
		"ALTER SYSTEM SET shared_preload_libraries = 'pg_stat_statements'",
	} {
		if _, err := conn.Exec(ctx, stmt); err != nil {
			conn.Close(context.Background())
			return fmt.Errorf("%s: %w", stmt, err)
		}
	}
	conn.Close(context.Background())
	if err := pg.Restart(); err != nil {
		return fmt.Errorf("restart postgres with pg_stat_statements: %w", err)
	}
	conn, err = pgx.Connect(ctx, pg.DSN("postgres"))
	if err != nil {
		return fmt.Errorf("connect: %w", err)
	}
	defer conn.Close(context.Background())
	if _, err := conn.Exec(ctx, "CREATE EXTENSION IF NOT EXISTS pg_stat_statements"); err != nil {
		return fmt.Errorf("create extension pg_stat_statements: %w", err)
	}
	return nil
}

type stmtStat struct {
	Query  string  `json:"query"`
	Calls  int64   `json:"calls"`
	Rows   int64   `json:"rows"`
	ExecMS float64 `json:"exec_ms"`
}

// pgSnap is the cumulative counters of one database (and the cluster's
// WAL position) at one moment.
type pgSnap struct {
	stmts        map[int64]stmtStat // by queryid
	xactCommit   int64
	xactRollback int64
	walBytes     int64
}

func snapPG(ctx context.Context, pg *testpg.Server, db string) (pgSnap, error) {
	s := pgSnap{stmts: map[int64]stmtStat{}}
	conn, err := pgx.Connect(ctx, pg.DSN("postgres"))
	if err != nil {
		return s, err
	}
	defer conn.Close(context.Background())
	rows, err := conn.Query(ctx, `SELECT s.queryid, s.query, s.calls, s.rows, s.total_exec_time
		FROM pg_stat_statements s JOIN pg_database d ON d.oid = s.dbid WHERE d.datname = $1`, db)
	if err != nil {
		return s, fmt.Errorf("pg_stat_statements: %w", err)
	}
	for rows.Next() {
		var id int64
		var st stmtStat
		if err := rows.Scan(&id, &st.Query, &st.Calls, &st.Rows, &st.ExecMS); err != nil {
			rows.Close()
			return s, err
		}
		prev := s.stmts[id] // one queryid per user; sum them
		st.Calls += prev.Calls
		st.Rows += prev.Rows
		st.ExecMS += prev.ExecMS
		s.stmts[id] = st
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return s, err
	}
	err = conn.QueryRow(ctx, `SELECT xact_commit, xact_rollback, (pg_current_wal_lsn() - '0/0'::pg_lsn)::bigint
		FROM pg_stat_database WHERE datname = $1`, db).Scan(&s.xactCommit, &s.xactRollback, &s.walBytes)
	return s, err
}

// pgCounts is what a phase added to a database's counters.
type pgCounts struct {
	Statements   int64            `json:"statements"`
	ExecMS       float64          `json:"exec_ms"` // the statements' execution time (pg_stat_statements)
	ByKind       map[string]int64 `json:"by_kind"`
	Top          []stmtStat       `json:"top"` // by calls, at most topStatements
	XactCommit   int64            `json:"xact_commit"`
	XactRollback int64            `json:"xact_rollback"`
	WALBytes     int64            `json:"wal_bytes"`
}

const topStatements = 12

func (b pgSnap) diff(a pgSnap) pgCounts {
	c := pgCounts{ByKind: map[string]int64{},
		XactCommit: b.xactCommit - a.xactCommit, XactRollback: b.xactRollback - a.xactRollback, WALBytes: b.walBytes - a.walBytes}
	for id, st := range b.stmts {
		prev := a.stmts[id]
		d := stmtStat{Query: st.Query, Calls: st.Calls - prev.Calls, Rows: st.Rows - prev.Rows, ExecMS: st.ExecMS - prev.ExecMS}
		if d.Calls <= 0 {
			continue
		}
		c.Statements += d.Calls
		c.ExecMS += d.ExecMS
		c.ByKind[stmtKind(st.Query)] += d.Calls
		c.Top = append(c.Top, d)
	}
	sort.Slice(c.Top, func(i, j int) bool { return c.Top[i].Calls > c.Top[j].Calls })
	if len(c.Top) > topStatements {
		c.Top = c.Top[:topStatements]
	}
	for i := range c.Top {
		c.Top[i].Query = shortQuery(c.Top[i].Query, 160)
	}
	return c
}

// stmtKind is a statement's first keyword, or for a WITH, the first
// data-changing keyword of the whole statement ("WITH…UPDATE").
func stmtKind(q string) string {
	f := strings.Fields(strings.ToUpper(stripComments(q)))
	if len(f) == 0 {
		return "?"
	}
	k := strings.TrimLeft(f[0], "(")
	if k == "WITH" {
		for _, w := range f[1:] {
			switch w := strings.TrimLeft(w, "("); w {
			case "INSERT", "UPDATE", "DELETE":
				return "WITH…" + w
			}
		}
		return "WITH…SELECT"
	}
	switch k {
	case "START":
		return "BEGIN"
	case "END":
		return "COMMIT"
	}
	return k
}

// stripComments drops SQL comments (River's queries start with
// "-- name: JobGetAvailable :many").
func stripComments(q string) string {
	var b strings.Builder
	for len(q) > 0 {
		switch {
		case strings.HasPrefix(q, "--"):
			i := strings.IndexByte(q, '\n')
			if i < 0 {
				return b.String()
			}
			q = q[i+1:]
		case strings.HasPrefix(q, "/*"):
			i := strings.Index(q, "*/")
			if i < 0 {
				return b.String()
			}
			q = q[i+2:]
		default:
			i := strings.IndexAny(q, "-/")
			if i < 0 {
				b.WriteString(q)
				return b.String()
			}
			if i == 0 { // a lone - or /
				i = 1
			}
			b.WriteString(q[:i])
			q = q[i:]
		}
	}
	return b.String()
}

// shortQuery collapses whitespace and cuts q to n runes.
func shortQuery(q string, n int) string {
	q = strings.Join(strings.Fields(q), " ")
	if r := []rune(q); len(r) > n {
		q = string(r[:n-1]) + "…"
	}
	return q
}

// scrapeCounters reads a Prometheus text exposition and returns every
// counter (a name ending in _total) summed over its labels. New counters
// that spool serve exports (lease wake-ups, say) show up without a change
// here.
func scrapeCounters(url string) (map[string]float64, error) {
	resp, err := http.Get(url)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("%s: %s", url, resp.Status)
	}
	out := map[string]float64{}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 4<<20)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || line[0] == '#' {
			continue
		}
		name, rest := line, ""
		if i := strings.IndexAny(line, "{ "); i >= 0 {
			name, rest = line[:i], line[i:]
		}
		if !strings.HasSuffix(name, "_total") || strings.HasPrefix(name, "promhttp_") || strings.HasPrefix(name, "go_") || strings.HasPrefix(name, "process_") {
			continue
		}
		if j := strings.LastIndexByte(rest, '}'); j >= 0 {
			rest = rest[j+1:]
		}
		f := strings.Fields(rest)
		if len(f) == 0 {
			continue
		}
		v, err := strconv.ParseFloat(f[0], 64)
		if err != nil || math.IsNaN(v) {
			continue
		}
		out[name] += v
	}
	return out, sc.Err()
}

func counterDiff(b, a map[string]float64) map[string]float64 {
	d := map[string]float64{}
	for k, v := range b {
		if x := v - a[k]; x != 0 {
			d[k] = x
		}
	}
	return d
}
