// Package cli implements Spool's client commands (enqueue, tasks, queues)
// and `spool sink`. Each command is a function of its arguments, an
// environment lookup and two writers, so main only dispatches and tests run
// the commands in-process.
//
// The client commands talk to the server only through internal/client;
// nothing here touches the store or the dispatcher.
package cli

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"strings"

	"github.com/spoolhq/spool/client"
)

// DefaultServer is the API address used when neither --server nor
// SPOOL_SERVER is given.
const DefaultServer = "http://127.0.0.1:8000"

// UsageError is a mistake in the command line: an unknown flag, a missing
// argument, a value out of range. Its message is one line naming the
// problem. main may exit 2 for it, 1 for other errors.
type UsageError struct{ msg string }

func (e *UsageError) Error() string { return e.msg }

func usagef(format string, args ...any) error {
	return &UsageError{msg: fmt.Sprintf(format, args...)}
}

// command is one (sub)command's flag set and help text.
type command struct {
	name  string // "enqueue", "tasks list": used in messages
	usage string // printed by --help before the flags
	fs    *flag.FlagSet
}

func newCommand(name, usage string) *command {
	fs := flag.NewFlagSet("spool "+name, flag.ContinueOnError)
	// The flag package would print its own error and the whole usage on
	// every mistake; we print usage only for --help and return one line.
	fs.SetOutput(io.Discard)
	fs.Usage = func() {}
	return &command{name: name, usage: usage, fs: fs}
}

// parse parses flags wherever they appear among the positional arguments
// ("tasks get ID --output json" works as well as "tasks get --output json
// ID"); "--" ends flag parsing. It returns the positional arguments.
func (c *command) parse(args []string, stdout io.Writer) ([]string, error) {
	var pos []string
	for {
		err := c.fs.Parse(args)
		if errors.Is(err, flag.ErrHelp) {
			c.printUsage(stdout)
			return nil, flag.ErrHelp
		}
		if err != nil {
			return nil, usagef("%s: %v (see 'spool %s --help')", c.name, err, c.name)
		}
		rest := c.fs.Args()
		if len(rest) == 0 {
			return pos, nil
		}
		if consumed := len(args) - len(rest); consumed > 0 && args[consumed-1] == "--" {
			return append(pos, rest...), nil
		}
		pos = append(pos, rest[0])
		args = rest[1:]
	}
}

func (c *command) printUsage(w io.Writer) {
	fmt.Fprint(w, strings.TrimLeft(c.usage, "\n"))
	hasFlags := false
	c.fs.VisitAll(func(*flag.Flag) { hasFlags = true })
	if hasFlags {
		fmt.Fprint(w, "\nFlags:\n")
		c.fs.SetOutput(w)
		c.fs.PrintDefaults()
		c.fs.SetOutput(io.Discard)
	}
}

// set reports which flags were given on the command line.
func (c *command) set() map[string]bool {
	m := make(map[string]bool)
	c.fs.Visit(func(f *flag.Flag) { m[f.Name] = true })
	return m
}

// wantArgs checks the number of positional arguments.
func (c *command) wantArgs(pos []string, names ...string) error {
	if len(pos) == len(names) {
		return nil
	}
	want := strings.Join(names, " ")
	if len(pos) < len(names) {
		return usagef("%s: missing %s (usage: spool %s [flags] %s)", c.name, strings.Join(names[len(pos):], " "), c.name, want)
	}
	return usagef("%s: unexpected argument %q (usage: spool %s [flags] %s)", c.name, pos[len(names)], c.name, want)
}

// clientFlags are the flags every client command shares.
type clientFlags struct {
	server string
	apiKey string
	output string
}

const clientFlagsHelp = `
Environment:
  SPOOL_SERVER   server URL (default ` + DefaultServer + `)
  SPOOL_API_KEY  API key sent as a bearer token
`

func (f *clientFlags) register(fs *flag.FlagSet) {
	// Defaults stay empty here and are filled from the environment after
	// parsing, so --help never prints the API key as a "default".
	fs.StringVar(&f.server, "server", "", "server URL (env SPOOL_SERVER, default "+DefaultServer+")")
	fs.StringVar(&f.apiKey, "api-key", "", "API key (env SPOOL_API_KEY)")
	fs.StringVar(&f.output, "output", "table", "output format: table or json")
}

// client validates the flags and builds the API client.
func (f *clientFlags) client(name string, env func(string) string) (*client.Client, error) {
	if f.output != "table" && f.output != "json" {
		return nil, usagef("%s: --output must be table or json, got %q", name, f.output)
	}
	if f.server == "" {
		f.server = env("SPOOL_SERVER")
	}
	if f.server == "" {
		f.server = DefaultServer
	}
	if f.apiKey == "" {
		f.apiKey = strings.TrimSpace(env("SPOOL_API_KEY"))
	}
	c, err := client.New(f.server, f.apiKey, client.WithUserAgent("spool-cli"))
	if err != nil {
		return nil, usagef("%s: --server/SPOOL_SERVER: %s", name, strings.TrimPrefix(err.Error(), "client: "))
	}
	return c, nil
}

// getenv makes a nil env safe to call.
func getenv(env func(string) string) func(string) string {
	if env == nil {
		return func(string) string { return "" }
	}
	return env
}

// runSub dispatches "spool tasks <sub> ..." and the like.
func runSub(group, usage string, subs map[string]func([]string) error, order []string, args []string, stdout io.Writer) error {
	if len(args) == 0 {
		return usagef("%s: missing subcommand: one of %s (see 'spool %s --help')", group, strings.Join(order, ", "), group)
	}
	switch args[0] {
	case "-h", "-help", "--help", "help":
		fmt.Fprint(stdout, strings.TrimLeft(usage, "\n"))
		return flag.ErrHelp
	}
	sub, ok := subs[args[0]]
	if !ok {
		return usagef("%s: unknown subcommand %q: want one of %s", group, args[0], strings.Join(order, ", "))
	}
	return sub(args[1:])
}
