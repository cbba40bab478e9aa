// Package integration tests whole Piped nodes (real processes) against the
// real RabbitMQ with real WebSocket clients and the example echo backend.
package integration

import (
	"os"
	"testing"

	"github.com/piped-dev/piped/test/harness"
)

func TestMain(m *testing.M) { os.Exit(harness.Main(m)) }
