//go:build faults

// Package faults tests whole Piped nodes while the broker fails: connections
// closed by the broker, the RabbitMQ application stopped and started, a
// memory alarm. These faults hit every client of a broker, so the package
// starts a RabbitMQ node of its own (see broker_test.go) and never touches
// the shared one on 127.0.0.1:5672. Build tag "faults"; the Makefile runs
// it after the other tests with -p 1.
package faults

import (
	"fmt"
	"os"
	"testing"

	"github.com/piped-dev/piped/test/harness"
)

func TestMain(m *testing.M) { os.Exit(run(m)) }

func run(m *testing.M) int {
	b, err := startBroker()
	if err != nil {
		fmt.Fprintf(os.Stderr, "faults: could not start the separate RabbitMQ node %s on 127.0.0.1:%d for the fault tests:\n%v\n", brokerNode, brokerPort, err)
		return 1
	}
	defer b.stop()
	brokerURL = fmt.Sprintf("amqp://guest:guest@127.0.0.1:%d/", brokerPort)
	if err := os.Setenv(testURLVar, brokerURL); err != nil {
		fmt.Fprintln(os.Stderr, "faults:", err)
		return 1
	}
	return harness.Main(m)
}
