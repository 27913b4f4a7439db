package e2e

import (
	"cmp"
	"context"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/tandem-ha/tandem/internal/testenv"
)

var tandemBin = flag.String("tandem-bin", "", "path to the tandem binary under test (make e2e passes bin/tandem)")

// The suite's lab: 2 app nodes and a witness, named e2e unless
// TANDEM_E2E_LAB names another, so two checkouts can run the suite at once.
var suiteLab = cmp.Or(os.Getenv("TANDEM_E2E_LAB"), "e2e")

const suiteNodes = 2

// Environment passed from the supervising process to the test process.
const (
	envChild      = "TANDEM_E2E_CHILD"       // set in the test process
	envHostBefore = "TANDEM_E2E_HOST_BEFORE" // file with the host network before the lab
)

// TestMain supervises: it brings the lab up, runs the tests in a child
// process, and then always tears the lab down and checks that nothing
// leaked. Running the tests in a child means even a panic, a test timeout or
// a crash in a test cannot leave the lab behind.
func TestMain(m *testing.M) {
	flag.Parse()
	if os.Getenv(envChild) != "" {
		os.Exit(m.Run())
	}
	if os.Geteuid() != 0 {
		if testenv.Strict() {
			fmt.Printf("e2e: FAIL: the lab needs root and %s is set; run 'make e2e' as root\n", testenv.StrictVar)
			os.Exit(1)
		}
		fmt.Println("e2e: SKIP: the lab needs root; run 'make e2e' as root (CI does)")
		os.Exit(0)
	}
	if *tandemBin == "" {
		fmt.Println("e2e: SKIP: no -tandem-bin given; run 'make e2e', which builds bin/tandem and passes it")
		os.Exit(0)
	}
	os.Exit(supervise())
}

func supervise() int {
	// Ctrl-C reaches the child too; we wait for it and still clean up.
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, os.Interrupt, syscall.SIGTERM)
	defer signal.Stop(sigs)

	ctx := context.Background()
	bin, err := filepath.Abs(*tandemBin)
	if err != nil {
		fmt.Println("e2e:", err)
		return 1
	}
	c := &Labctl{Bin: bin, Name: suiteLab}
	logf := func(format string, args ...any) { fmt.Printf("e2e: "+format+"\n", args...) }

	// One suite at a time per machine: a second run would otherwise tear
	// down the first one's lab.
	lock, err := os.OpenFile("/run/lock/tandem-e2e.lock", os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		logf("%v", err)
		return 1
	}
	defer lock.Close()
	if syscall.Flock(int(lock.Fd()), syscall.LOCK_EX|syscall.LOCK_NB) != nil {
		logf("waiting for another e2e run on this machine to finish")
		if err := syscall.Flock(int(lock.Fd()), syscall.LOCK_EX); err != nil {
			logf("%v", err)
			return 1
		}
	}

	// Leftovers of an earlier, killed run.
	if r, err := c.Down(ctx); err != nil {
		logf("initial down failed: %v (%s)", err, r.Stderr)
		return 1
	}
	before, err := HostNetwork(ctx)
	if err != nil {
		logf("%v", err)
		return 1
	}
	tmp, err := os.MkdirTemp("", "tandem-e2e-")
	if err != nil {
		logf("%v", err)
		return 1
	}
	defer os.RemoveAll(tmp)
	beforeFile := filepath.Join(tmp, "host-network.json")
	if err := os.WriteFile(beforeFile, []byte(before), 0o644); err != nil {
		logf("%v", err)
		return 1
	}

	code := 0
	// The first up may build the base image (minutes, with progress).
	t0 := time.Now()
	up := exec.Command(bin, "lab", "up", "--name", suiteLab, "--nodes", fmt.Sprint(suiteNodes))
	up.Stdout, up.Stderr = os.Stdout, os.Stdout
	if err := up.Run(); err != nil {
		logf("lab up failed after %v: %v", time.Since(t0).Round(time.Millisecond), err)
		code = 1
	} else {
		logf("lab up took %v", time.Since(t0).Round(time.Millisecond))
		child := exec.Command(os.Args[0], os.Args[1:]...)
		child.Env = append(os.Environ(), envChild+"=1", envHostBefore+"="+beforeFile)
		child.Stdin, child.Stdout, child.Stderr = nil, os.Stdout, os.Stderr
		if err := child.Run(); err != nil {
			code = 1
			if ee, ok := err.(*exec.ExitError); !ok || !ee.Exited() {
				logf("tests did not finish: %v", err)
			}
		}
	}

	// Teardown, always, then the leak check.
	if r, err := c.Down(ctx); err != nil {
		logf("lab down failed: %v (%s)", err, r.Stderr)
		code = 1
	}
	if leaks := Leaks(ctx, suiteLab); len(leaks) > 0 {
		logf("FAIL: the lab leaked after down:\n  %s", strings.Join(leaks, "\n  "))
		code = 1
	} else {
		logf("teardown clean: no namespace, mount, process or cgroup left")
	}
	if after, err := HostNetwork(ctx); err != nil || after != before {
		logf("FAIL: the host's network changed during the suite (err %v)\nbefore:\n%s\nafter:\n%s", err, before, after)
		code = 1
	}
	return code
}

// suite returns the handle on the suite's lab (in the test process).
func suite(t testing.TB) *Labctl {
	t.Helper()
	bin, err := filepath.Abs(*tandemBin)
	if err != nil {
		t.Fatal(err)
	}
	return &Labctl{Bin: bin, Name: suiteLab, Log: t.Logf}
}

// testCtx bounds one scenario.
func testCtx(t testing.TB, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}
