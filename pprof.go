//go:build pprof

package main

import (
	"net/http"
	_ "net/http/pprof" // registers /debug/pprof on http.DefaultServeMux
	"os"
)

// Built with -tags pprof, the node serves net/http/pprof on
// $PIPED_PPROF_ADDR (default 127.0.0.1:6060) for profiling. The variable is
// removed from the environment once read: the configuration refuses PIPED_
// variables that name no key.
func init() {
	addr := os.Getenv("PIPED_PPROF_ADDR")
	_ = os.Unsetenv("PIPED_PPROF_ADDR")
	if addr == "" {
		addr = "127.0.0.1:6060"
	}
	go func() { _ = http.ListenAndServe(addr, nil) }()
}
