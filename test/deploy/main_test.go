// Package deploy_test checks the deployment files against each other and
// against Piped itself, since neither Docker nor Fly.io runs here: fly.toml,
// the Dockerfile and the Makefile (facts_test.go, deploy_test.go), docker-compose.yml and
// deploy/nginx.conf (compose_test.go). Each fact is a row of a table with a
// message that says which file to fix; each row also has a way to break its
// fact, and TestDeployRowsDetectDrift and TestComposeRowsDetectDrift check that the row then fails.
package deploy_test

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

// root is the repository, relative to this package.
const root = "../.."

// bin holds piped and echo-backend, built by TestMain with `make build`
// (the Makefile's flags, as in the image).
var bin string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "piped-deploy-test-")
	if err != nil {
		fmt.Fprintln(os.Stderr, "deploy test:", err)
		os.Exit(1)
	}
	build := exec.Command("make", "-s", "--no-print-directory", "build", "BIN="+dir)
	build.Dir = root
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "deploy test: make build failed (make is Debian's make; .ci/run installs it):", err)
		os.RemoveAll(dir)
		os.Exit(1)
	}
	bin = dir
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// binary returns the path of a binary make build made.
func binary(name string) string { return filepath.Join(bin, name) }
