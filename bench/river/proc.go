package main

import (
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/spoolhq/spool/internal/testpg"
)

// machine describes where the figures were taken.
type machine struct {
	CPU      string `json:"cpu"`
	Cores    int    `json:"cores"`
	MemoryMB int    `json:"memory_mb"`
	Kernel   string `json:"kernel"`
}

func describeMachine() machine {
	m := machine{Cores: runtime.NumCPU()}
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, line := range strings.Split(string(b), "\n") {
			if k, v, ok := strings.Cut(line, ":"); ok && strings.TrimSpace(k) == "model name" {
				m.CPU = strings.TrimSpace(v)
				break
			}
		}
	}
	if b, err := os.ReadFile("/proc/meminfo"); err == nil {
		for _, line := range strings.Split(string(b), "\n") {
			if f := strings.Fields(line); len(f) >= 2 && f[0] == "MemTotal:" {
				kb, _ := strconv.Atoi(f[1])
				m.MemoryMB = kb / 1024
			}
		}
	}
	var u syscall.Utsname
	if syscall.Uname(&u) == nil {
		m.Kernel = utsString(u.Release[:])
	}
	return m
}

func utsString(b []int8) string {
	var s strings.Builder
	for _, c := range b {
		if c == 0 {
			break
		}
		s.WriteByte(byte(c))
	}
	return s.String()
}

// loadAvg is the 1-minute load average: the machine is shared, so every
// run records how busy it was.
func loadAvg() float64 {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return -1
	}
	f := strings.Fields(string(b))
	if len(f) == 0 {
		return -1
	}
	v, _ := strconv.ParseFloat(f[0], 64)
	return v
}

// clockTick is USER_HZ, 100 on every Linux this runs on.
const clockTick = 100

// procStat returns utime+stime and, with children, cutime+cstime of pid.
func procStat(pid int, children bool) (time.Duration, int, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, 0, err
	}
	s := string(b)
	// The command name is in parentheses and may hold spaces.
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return 0, 0, fmt.Errorf("/proc/%d/stat: unexpected format", pid)
	}
	f := strings.Fields(s[i+1:])
	// f[0] is field 3 (state): utime is field 14, stime 15, cutime 16, cstime 17; ppid is 4.
	num := func(field int) int64 { v, _ := strconv.ParseInt(f[field-3], 10, 64); return v }
	ticks := num(14) + num(15)
	if children {
		ticks += num(16) + num(17)
	}
	return time.Duration(ticks) * time.Second / clockTick, int(num(4)), nil
}

// cpuOf is the CPU time pid has used.
func cpuOf(pid int) time.Duration {
	d, _, _ := procStat(pid, false)
	return d
}

// postgresCPU is the CPU time of the whole cluster: the postmaster with its
// exited children, plus every live child (backends, WAL writer, …).
func postgresCPU(pg *testpg.Server) time.Duration {
	b, err := os.ReadFile(filepath.Join(pg.Dir(), "data", "postmaster.pid"))
	if err != nil {
		return 0
	}
	pm, err := strconv.Atoi(strings.TrimSpace(strings.SplitN(string(b), "\n", 2)[0]))
	if err != nil {
		return 0
	}
	total, _, _ := procStat(pm, true)
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if d, ppid, err := procStat(pid, false); err == nil && ppid == pm {
			total += d
		}
	}
	return total
}

// selfCPU is this process's CPU time (River and its receiver run here).
func selfCPU() time.Duration {
	var ru syscall.Rusage
	if syscall.Getrusage(syscall.RUSAGE_SELF, &ru) != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// memory reads VmRSS and VmHWM (peak RSS) of pid, in MB.
func memory(pid int) (rss, peak float64) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return -1, -1
	}
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) < 2 {
			continue
		}
		kb, _ := strconv.ParseFloat(f[1], 64)
		switch f[0] {
		case "VmRSS:":
			rss = kb / 1024
		case "VmHWM:":
			peak = kb / 1024
		}
	}
	return rss, peak
}

func freeAddr() (string, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer ln.Close()
	return ln.Addr().String(), nil
}

func serverVersion(ctx context.Context, pg *testpg.Server) (string, error) {
	conn, err := pgx.Connect(ctx, pg.DSN("postgres"))
	if err != nil {
		return "", fmt.Errorf("connect: %w", err)
	}
	defer conn.Close(context.Background())
	var v string
	err = conn.QueryRow(ctx, "SHOW server_version").Scan(&v)
	return v, err
}

// makeDurable turns the test cluster's speed settings back to PostgreSQL's
// defaults (all three reload without a restart) and checks that they took.
func makeDurable(ctx context.Context, pg *testpg.Server) error {
	conn, err := pgx.Connect(ctx, pg.DSN("postgres"))
	if err != nil {
		return fmt.Errorf("connect: %w", err)
	}
	defer conn.Close(context.Background())
	for _, stmt := range []string{
		"ALTER SYSTEM SET fsync = on",
		"ALTER SYSTEM SET full_page_writes = on",
		"ALTER SYSTEM SET synchronous_commit = on",
		"SELECT pg_reload_conf()",
	} {
		if _, err := conn.Exec(ctx, stmt); err != nil {
			return fmt.Errorf("%s: %w", stmt, err)
		}
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		var fsync, fpw, sync string
		if err := conn.QueryRow(ctx, "SELECT current_setting('fsync'), current_setting('full_page_writes'), current_setting('synchronous_commit')").Scan(&fsync, &fpw, &sync); err != nil {
			return err
		}
		if fsync == "on" && fpw == "on" && sync == "on" {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("durable settings did not take: fsync=%s full_page_writes=%s synchronous_commit=%s", fsync, fpw, sync)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// createDB makes a fresh database and returns its DSN. testpg.CreateDB
// wants a testing.TB; this program has none.
func createDB(ctx context.Context, pg *testpg.Server, name string) (string, error) {
	conn, err := pgx.Connect(ctx, pg.DSN("postgres"))
	if err != nil {
		return "", fmt.Errorf("connect: %w", err)
	}
	defer conn.Close(context.Background())
	if _, err := conn.Exec(ctx, "DROP DATABASE IF EXISTS "+name+" WITH (FORCE)"); err != nil {
		return "", fmt.Errorf("drop database %s: %w", name, err)
	}
	if _, err := conn.Exec(ctx, "CREATE DATABASE "+name); err != nil {
		return "", fmt.Errorf("create database %s: %w", name, err)
	}
	return pg.DSN(name), nil
}

func dropDB(pg *testpg.Server, name string) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, pg.DSN("postgres"))
	if err != nil {
		return
	}
	defer conn.Close(context.Background())
	_, _ = conn.Exec(ctx, "DROP DATABASE IF EXISTS "+name+" WITH (FORCE)") // best effort: the cluster is thrown away
}

// waitSampler samples pg_stat_activity of one database every 10ms while a
// scenario runs: what its sessions were doing (running, idle, waiting on a
// lock, on the WAL, on the client…). It is the PostgreSQL side of the
// profile evidence; the share of "Lock" or "LWLock" samples shows
// serialisation, "Client:ClientRead" a session waiting for its client.
//
// It also counts the write transactions of the phase: the advance of the
// cluster's next transaction id, which only transactions that write take
// (read-only ones and this sampler take none). pg_stat_database's commit
// counts would do too, but backends publish them up to 10s late.
type waitSampler struct {
	stop func() (sessions map[string]float64, writeXacts int64)
}

func nextXid(ctx context.Context, conn *pgx.Conn) int64 {
	var n int64
	_ = conn.QueryRow(ctx, `SELECT pg_snapshot_xmax(pg_current_snapshot())::text::bigint`).Scan(&n) // 0 on error: shown as such
	return n
}

func sampleWaits(ctx context.Context, pg *testpg.Server, db string) *waitSampler {
	counts := map[string]int{}
	samples := 0
	done := make(chan struct{})
	// The sampler stops on quit, not by cancelling ctx: a cancelled query
	// closes the connection, and the closing read of the transaction id
	// then failed (a negative count in one run of several).
	quit := make(chan struct{})
	conn, err := pgx.Connect(ctx, pg.DSN("postgres"))
	if err != nil {
		return &waitSampler{stop: func() (map[string]float64, int64) { return nil, 0 }}
	}
	xid0 := nextXid(ctx, conn)
	go func() {
		defer close(done)
		t := time.NewTicker(10 * time.Millisecond)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-quit:
				return
			case <-t.C:
			}
			// A session waiting on a lock is named with its statement and
			// the statement of the session it waits for: which transaction
			// holds up which is the question a lock wait raises.
			rows, err := conn.Query(ctx, `SELECT a.state, coalesce(a.wait_event_type, ''), coalesce(a.wait_event, ''),
					CASE WHEN a.wait_event_type = 'Lock' THEN left(regexp_replace(a.query, '\s+', ' ', 'g'), 40) || ' <- ' ||
						coalesce((SELECT left(regexp_replace(b.query, '\s+', ' ', 'g'), 40) || ' [' || b.state || ']'
							FROM pg_stat_activity b WHERE b.pid = (pg_blocking_pids(a.pid))[1]), '?')
					ELSE '' END
				FROM pg_stat_activity a WHERE a.datname = $1 AND a.pid <> pg_backend_pid() AND a.backend_type = 'client backend'`, db)
			if err != nil {
				return
			}
			for rows.Next() {
				var state, typ, ev, lock string
				if rows.Scan(&state, &typ, &ev, &lock) != nil {
					continue
				}
				key := state
				switch {
				case state == "active" && typ == "":
					key = "active (on CPU)"
				case typ != "":
					key = state + " " + typ + ":" + ev
				}
				if lock != "" {
					key += " " + lock
				}
				counts[key]++
			}
			rows.Close()
			samples++
		}
	}()
	return &waitSampler{stop: func() (map[string]float64, int64) {
		close(quit)
		<-done
		defer conn.Close(context.Background())
		commits := nextXid(context.Background(), conn) - xid0
		out := map[string]float64{}
		for k, n := range counts {
			// Average number of sessions in that state at any moment.
			out[k] = float64(n) / float64(max(samples, 1))
		}
		return out, commits
	}}
}

// machineBusy is the CPU time all processes have used since boot
// (/proc/stat: everything but idle and iowait).
func machineBusy() time.Duration {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return 0
	}
	line, _, _ := strings.Cut(string(b), "\n")
	f := strings.Fields(line)
	if len(f) < 9 || f[0] != "cpu" {
		return 0
	}
	var ticks int64
	for i, v := range f[1:9] {
		if i == 3 || i == 4 { // idle, iowait
			continue
		}
		n, _ := strconv.ParseInt(v, 10, 64)
		ticks += n
	}
	return time.Duration(ticks) * time.Second / clockTick
}

// otherCores is how many cores, on average over wall, processes other
// than the measured ones kept busy: the machine is shared, and this says
// by how much each figure was disturbed.
func otherCores(busy, ours, wall time.Duration) float64 {
	if wall <= 0 {
		return 0
	}
	return max(0, (busy-ours).Seconds()/wall.Seconds())
}

// waitForQuiet waits until the 1-minute load average is below limit, or
// for at most patience. It returns the load it started with.
func waitForQuiet(ctx context.Context, limit float64, patience time.Duration, log func(msg string, args ...any)) float64 {
	deadline := time.Now().Add(patience)
	first := true
	for {
		l := loadAvg()
		if l < limit || time.Now().After(deadline) || ctx.Err() != nil {
			return l
		}
		if first {
			log("waiting for the machine to quieten", "load", l, "limit", limit, "at_most", patience)
			first = false
		}
		select {
		case <-ctx.Done():
		case <-time.After(5 * time.Second):
		}
	}
}
