//go:build pprof

package main

import (
	"net/http"
	_ "net/http/pprof" // registers /debug/pprof on http.DefaultServeMux
	"os"
)

// Built with -tags pprof, the node serves net/http/pprof on
// $PIPED_PPROF_ADDR (default 127.0.0.1:6060) for profiling.
func init() {
	addr := os.Getenv("PIPED_PPROF_ADDR")
	// Not a configuration key: config refuses unknown PIPED_* variables.
	_ = os.Unsetenv("PIPED_PPROF_ADDR")
	if addr == "" {
		addr = "127.0.0.1:6060"
	}
	go func() { _ = http.ListenAndServe(addr, nil) }()
}
