package cli

import (
	"context"
	"fmt"
	"io"
	"math"
	"strconv"

	"github.com/spoolhq/spool/client"
	"github.com/spoolhq/spool/internal/task"
)

const destinationsUsage = `
Usage: spool destinations <subcommand> [flags] ...

A destination is a target's scheme, host and port. Spool keeps one adaptive
concurrency limit and one circuit breaker per destination, shared by every
queue and replica; operators can cap both with ceilings.

Subcommands:
  list                 list destinations with their limits, breakers and recent figures
  get DESTINATION      show one destination
  set DESTINATION      set ceilings: --max-concurrency, --rate-limit

DESTINATION is "https://api.example.com:443" or any URL on it
("https://api.example.com/hooks" names the same destination).

Examples:
  spool destinations list
  spool destinations get https://api.example.com
  spool destinations set https://api.example.com --max-concurrency 20 --rate-limit 50

Run 'spool destinations <subcommand> --help' for its flags.
`

// Destinations implements `spool destinations list|get|set`.
func Destinations(ctx context.Context, args []string, env func(string) string, stdout, stderr io.Writer) error {
	env = getenv(env)
	subs := map[string]func([]string) error{
		"list": func(a []string) error { return destinationsList(ctx, a, env, stdout) },
		"get": func(a []string) error {
			return byName("destinations get", "DESTINATION", a, env, stdout,
				"shows a destination's adaptive limit, circuit breaker, ceilings and the figures its replicas reported in the last few seconds.",
				"spool destinations get https://api.example.com --output json",
				func(c *client.Client, name string) (*client.Destination, error) {
					dest, err := destinationArg("destinations get", name)
					if err != nil {
						return nil, err
					}
					return c.GetDestination(ctx, dest)
				}, printDestination)
		},
		"set": func(a []string) error { return destinationsSet(ctx, a, env, stdout) },
	}
	return runSub("destinations", destinationsUsage, subs, []string{"list", "get", "set"}, args, stdout)
}

// destinationArg normalizes a DESTINATION argument as the server will, so
// a typo is a usage error before any request.
func destinationArg(cmd, arg string) (string, error) {
	dest, err := task.ParseDestination(arg)
	if err != nil {
		return "", usagef("%s: DESTINATION must be an http(s) URL such as https://api.example.com:443, got %q", cmd, arg)
	}
	return dest, nil
}

const destinationsListUsage = `
Usage: spool destinations list [flags]

Lists every destination Spool keeps (those it delivered to lately and those
with ceilings set) with its adaptive limit, ceilings, circuit breaker and
recent figures, summed over the replicas.

Example:
  spool destinations list --output json
` + clientFlagsHelp

func destinationsList(ctx context.Context, args []string, env func(string) string, stdout io.Writer) error {
	return fetchAndPrint("destinations list", destinationsListUsage, args, env, stdout, nil,
		func(c *client.Client, _ []string) ([]client.Destination, error) { return c.ListDestinations(ctx) }, printDestinationList)
}

const destinationsSetUsage = `
Usage: spool destinations set [flags] DESTINATION

Sets DESTINATION's ceilings, creating it if Spool has not delivered there
yet. Only the flags given are sent; 0 removes a ceiling. The adaptive limit
never goes above --max-concurrency; both ceilings hold across all replicas.

Examples:
  spool destinations set https://api.example.com --max-concurrency 20
  spool destinations set https://api.example.com:8443 --rate-limit 50
  spool destinations set https://api.example.com --max-concurrency 0   # no ceiling
` + clientFlagsHelp

func destinationsSet(ctx context.Context, args []string, env func(string) string, stdout io.Writer) error {
	const name = "destinations set"
	cmd := newCommand(name, destinationsSetUsage)
	fs := cmd.fs
	var cf clientFlags
	cf.register(fs)
	maxConcurrency := fs.Int("max-concurrency", 0, "requests in flight across all replicas; 0 = no ceiling")
	rateLimit := fs.Float64("rate-limit", 0, "requests started per second across all replicas; 0 = no ceiling")
	pos, err := cmd.parse(args, stdout)
	if err != nil {
		return err
	}
	if err := cmd.wantArgs(pos, "DESTINATION"); err != nil {
		return err
	}
	dest, err := destinationArg(name, pos[0])
	if err != nil {
		return err
	}
	// Signs and non-numbers are refused here; the upper bounds are the
	// server's to state (its 422 names them).
	given := cmd.set()
	var p client.DestinationPatch
	if given["max-concurrency"] {
		if *maxConcurrency < 0 {
			return usagef("%s: --max-concurrency must be 0 (no ceiling) or more, got %d", name, *maxConcurrency)
		}
		p.MaxConcurrency = maxConcurrency
	}
	if given["rate-limit"] {
		if !(*rateLimit >= 0) || math.IsInf(*rateLimit, 1) {
			return usagef("%s: --rate-limit must be 0 (no ceiling) or a positive rate, got %v", name, *rateLimit)
		}
		p.RateLimit = rateLimit
	}
	if p == (client.DestinationPatch{}) {
		return usagef("%s: nothing to change: give --max-concurrency, --rate-limit or both", name)
	}
	c, err := cf.client(name, env)
	if err != nil {
		return err
	}
	d, err := c.UpdateDestination(ctx, dest, p)
	if err != nil {
		return err
	}
	return printDestination(stdout, cf.output, d)
}

// limitText is the adaptive limit and how it moves: "12.5 (slow start)".
func limitText(d *client.Destination) string {
	s := strconv.FormatFloat(d.Limit, 'f', -1, 64)
	if d.LimitState == "slow_start" {
		s += " (slow start)"
	}
	return s
}

func printDestination(w io.Writer, format string, d *client.Destination) error {
	if format == "json" {
		return writeJSON(w, d)
	}
	tw := newTable(w)
	rows := [][2]string{
		{"DESTINATION", d.Name},
		{"LIMIT", limitText(d)},
		{"MAX CONCURRENCY", fmtLimit(float64(d.MaxConcurrency), "")},
		{"RATE LIMIT", fmtLimit(d.RateLimit, "/s")},
		{"IN FLIGHT", strconv.Itoa(d.InFlight)},
		{"REPLICAS", strconv.Itoa(d.Replicas)},
		{"BREAKER", orDash(d.Breaker)},
		{"CONSECUTIVE FAILURES", strconv.Itoa(d.ConsecutiveFailures)},
		{"OPEN UNTIL", fmtTimePtr(d.OpenUntil)},
		{"COOLDOWN", fmtDuration(d.Cooldown)},
		{"HOLD UNTIL", fmtTimePtr(d.HoldUntil)},
		{"SUCCESS RATE", fmtRate(d.SuccessRate)},
		{"LATENCY", fmtDuration(d.Latency)},
		{"RECENT SUCCESSES", strconv.FormatInt(d.RecentSuccesses, 10)},
		{"RECENT FAILURES", strconv.FormatInt(d.RecentFailures, 10)},
		{"CREATED AT", fmtTime(d.CreatedAt)},
		{"UPDATED AT", fmtTime(d.UpdatedAt)},
	}
	for _, r := range rows {
		fmt.Fprintf(tw, "%s\t%s\n", r[0], r[1])
	}
	return tw.Flush()
}

func printDestinationList(w io.Writer, format string, ds []client.Destination) error {
	if format == "json" {
		return writeJSON(w, struct {
			Destinations []client.Destination `json:"destinations"`
		}{ds})
	}
	tw := newTable(w)
	fmt.Fprintln(tw, "DESTINATION\tLIMIT\tMAX CONCURRENCY\tRATE LIMIT\tIN FLIGHT\tREPLICAS\tBREAKER\tSUCCESS RATE\tLATENCY")
	for i := range ds {
		d := &ds[i]
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%d\t%d\t%s\t%s\t%s\n", d.Name, limitText(d),
			fmtLimit(float64(d.MaxConcurrency), ""), fmtLimit(d.RateLimit, "/s"), d.InFlight, d.Replicas,
			orDash(d.Breaker), fmtRate(d.SuccessRate), fmtDuration(d.Latency))
	}
	return tw.Flush()
}

// fmtRate prints a success rate in [0, 1] as a percentage.
func fmtRate(r float64) string { return strconv.FormatFloat(100*r, 'f', 1, 64) + "%" }
