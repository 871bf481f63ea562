package chaos

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"github.com/spoolhq/spool/internal/testpg"
)

// netLab is a network namespace joined to the host by a veth pair:
//
//	host side  hostIf  10.213.X.1/30 (the receiver listens here)
//	                   10.214.X.1/32 (PostgreSQL listens here too)
//	namespace  nsIf    10.213.X.2/30 (the partitioned replica)
//
// Inside the namespace 10.214.X.1 is reached through its own /32 route.
// cut pins that address's neighbour entry to a MAC address nobody has, so
// the host's veth silently drops every frame for PostgreSQL: established
// connections stall and new ones time out, as behind a dead switch or a
// dropping firewall, while the receiver and the test still reach the
// replica and it still reaches the receiver. heal deletes the entry and ARP
// finds the real one again. Only these addresses, created by the test,
// carry traffic.
type netLab struct {
	t                *testing.T
	ns               string
	hostIf, nsIf     string
	host, inNS, pgIP string
}

// nsPrefix names this test binary's namespaces, so a later run can remove
// the ones a killed run left behind.
const nsPrefix = "spool-chaos-"

func ipCmd(args ...string) error {
	out, err := exec.Command("ip", args...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("ip %s: %w: %s", strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return nil
}

// newNetLab builds the namespace and link, skipping (or failing, with
// SPOOL_TEST_REQUIRE_CHAOS) where ip is missing or not permitted. Cleanup
// removes both, even when the test fails.
func newNetLab(t *testing.T) *netLab {
	t.Helper()
	if _, err := exec.LookPath("ip"); err != nil {
		missing(t, "ip (Debian's iproute2 package)", err)
	}
	sweepNamespaces()
	var rb [4]byte
	if _, err := rand.Read(rb[:]); err != nil {
		t.Fatal(err)
	}
	suffix := hex.EncodeToString(rb[:3])
	l := &netLab{
		t:      t,
		ns:     fmt.Sprintf("%s%d-%s", nsPrefix, os.Getpid(), suffix),
		hostIf: "spc" + suffix + "h", // interface names: at most 15 bytes
		nsIf:   "spc" + suffix + "n",
	}
	if err := ipCmd("netns", "add", l.ns); err != nil {
		missing(t, "ip netns (needs root, or CAP_SYS_ADMIN and CAP_NET_ADMIN)", err)
	}
	t.Cleanup(func() {
		// Deleting the namespace destroys nsIf, and with it the pair; the
		// explicit delete covers a namespace some process still pins.
		_ = ipCmd("link", "del", l.hostIf)
		if err := ipCmd("netns", "del", l.ns); err != nil {
			t.Errorf("remove namespace: %v", err)
		}
	})
	// A /30 and a /32 no interface here uses yet.
	addrs, err := exec.Command("ip", "-o", "addr").Output()
	if err != nil {
		t.Fatalf("ip -o addr: %v", err)
	}
	octet := -1
	for i := 0; i < 256; i++ {
		o := (int(rb[3]) + i) % 256
		if !strings.Contains(string(addrs), fmt.Sprintf(" 10.213.%d.", o)) && !strings.Contains(string(addrs), fmt.Sprintf(" 10.214.%d.", o)) {
			octet = o
			break
		}
	}
	if octet < 0 {
		t.Fatal("no free 10.213.X.0/30 for the test link")
	}
	l.host, l.inNS, l.pgIP = fmt.Sprintf("10.213.%d.1", octet), fmt.Sprintf("10.213.%d.2", octet), fmt.Sprintf("10.214.%d.1", octet)
	steps := [][]string{
		{"link", "add", l.hostIf, "type", "veth", "peer", "name", l.nsIf, "netns", l.ns},
		{"addr", "add", l.host + "/30", "dev", l.hostIf},
		{"addr", "add", l.pgIP + "/32", "dev", l.hostIf},
		{"link", "set", l.hostIf, "up"},
		{"-n", l.ns, "link", "set", "lo", "up"},
		{"-n", l.ns, "addr", "add", l.inNS + "/30", "dev", l.nsIf},
		{"-n", l.ns, "link", "set", l.nsIf, "up"},
		{"-n", l.ns, "route", "add", l.pgIP + "/32", "dev", l.nsIf},
	}
	for i, s := range steps {
		if err := ipCmd(s...); err != nil {
			if i == 0 { // creating a veth needs CAP_NET_ADMIN, which a namespace did not
				missing(t, "a veth pair (needs CAP_NET_ADMIN)", err)
			}
			t.Fatalf("set up the test link: %v", err)
		}
	}
	return l
}

// exec is the command prefix that runs a program inside the namespace.
func (l *netLab) exec() []string { return []string{"ip", "netns", "exec", l.ns} }

// deadMAC is a locally administered unicast address no interface has.
const deadMAC = "02:00:5e:00:de:ad"

// cut makes PostgreSQL unreachable from the namespace: frames for it go to
// deadMAC, and the host's veth drops them unanswered.
func (l *netLab) cut() {
	l.t.Helper()
	if err := ipCmd("-n", l.ns, "neigh", "replace", l.pgIP, "lladdr", deadMAC, "dev", l.nsIf, "nud", "permanent"); err != nil {
		l.t.Fatalf("cut: %v", err)
	}
}

// heal forgets the false entry; the next packet resolves the real one.
func (l *netLab) heal() {
	l.t.Helper()
	if err := ipCmd("-n", l.ns, "neigh", "del", l.pgIP, "dev", l.nsIf); err != nil {
		l.t.Fatalf("heal: %v", err)
	}
}

// sweepNamespaces removes namespaces of earlier test binaries that died
// before their cleanup ran (their pid is gone); the veth pairs go with them.
func sweepNamespaces() {
	out, err := exec.Command("ip", "netns", "list").Output()
	if err != nil {
		return
	}
	for _, line := range strings.Split(string(out), "\n") {
		name, _, _ := strings.Cut(strings.TrimSpace(line), " ")
		rest, ok := strings.CutPrefix(name, nsPrefix)
		if !ok {
			continue
		}
		pidStr, _, _ := strings.Cut(rest, "-")
		pid, err := strconv.Atoi(pidStr)
		if err != nil || pid == os.Getpid() || syscall.Kill(pid, 0) == nil {
			continue
		}
		_ = ipCmd("netns", "del", name)
	}
}

// listenAlso makes pg listen on addr as well as loopback and trust
// connections from client (a CIDR), then restarts it. testpg writes its
// settings into the data directory's postgresql.conf, where the last
// setting wins, so an appended line overrides listen_addresses.
func listenAlso(t *testing.T, pg *testpg.Server, addr, client string) {
	t.Helper()
	data := filepath.Join(pg.Dir(), "data")
	for file, line := range map[string]string{
		"postgresql.conf": fmt.Sprintf("\nlisten_addresses = '127.0.0.1,%s'\n", addr),
		"pg_hba.conf":     fmt.Sprintf("\nhost all all %s trust\n", client),
	} {
		f, err := os.OpenFile(filepath.Join(data, file), os.O_APPEND|os.O_WRONLY, 0)
		if err != nil {
			t.Fatalf("testpg layout changed? %v", err)
		}
		_, err = f.WriteString(line)
		if cerr := f.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	if err := pg.Restart(); err != nil {
		t.Fatalf("restart PostgreSQL to listen on %s: %v", addr, err)
	}
}
