// Package healthcheck is the `piped healthcheck` subcommand: it asks the
// node on this host whether it is ready, for container runtimes whose image
// has no curl (the Dockerfile's HEALTHCHECK, docker-compose.yml).
//
//	piped healthcheck [--timeout 3s] [piped's flags]
//
// It loads the configuration exactly as the node does (flags, PIPED_*
// environment, the TOML file), so it finds the node's /readyz: on
// http.internal_addr when that is set, else on http.host:http.port, with
// 127.0.0.1 for an address that listens on every interface. It exits 0 when
// /readyz answers 200 and 1 otherwise, after one line on stderr saying why.
package healthcheck

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/piped-dev/piped/config"
)

// DefaultTimeout bounds the whole check when --timeout is not given; keep it
// below the runtime's own timeout (the Dockerfile's HEALTHCHECK --timeout=5s).
const DefaultTimeout = 3 * time.Second

// Path is the endpoint the check asks.
const Path = "/readyz"

// The exit codes. Docker reserves 2, so bad usage is 1 as well.
const (
	exitReady    = 0
	exitNotReady = 1
)

// flagTimeout is the only flag of the subcommand's own; every other argument
// is one of piped's flags.
const flagTimeout = "timeout"

// Run runs the subcommand with args (those after "healthcheck") and environ
// (like os.Environ()) and returns the exit code. It writes nothing on
// success and one line to stderr otherwise; -h or --help prints the usage to
// stderr and returns 0.
func Run(ctx context.Context, args, environ []string, stderr io.Writer) int {
	timeout, rest, help, err := parseArgs(args)
	if err != nil {
		return fail(stderr, err)
	}
	if help {
		rest = append(rest, "--help") // after the others: an unknown flag is still an error
	}
	var usage bytes.Buffer // piped's flags, printed after ours
	cfg, err := config.Load(rest, environ, &usage)
	if errors.Is(err, config.ErrHelp) {
		fmt.Fprintf(stderr, "Usage: piped healthcheck [--%s DURATION] [piped's flags]\n\n"+
			"GETs the node's %s (on http.internal_addr when set, else the client port) and\n"+
			"exits 0 on 200, 1 otherwise. --%s bounds the check (default %s).\n"+
			"It reads the configuration as the node does; piped's flags:\n\n", flagTimeout, Path, flagTimeout, DefaultTimeout)
		_, _ = usage.WriteTo(stderr)
		return exitReady
	}
	if err != nil {
		return fail(stderr, err)
	}
	url, err := URL(cfg)
	if err != nil {
		return fail(stderr, err)
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	if err := Check(ctx, http.DefaultClient, url); err != nil {
		return fail(stderr, err)
	}
	return exitReady
}

// parseArgs takes --timeout D (or --timeout=D) and -h/--help out of args and
// returns the rest, for config.Load.
func parseArgs(args []string) (timeout time.Duration, rest []string, help bool, err error) {
	timeout = DefaultTimeout
	for i := 0; i < len(args); i++ {
		a := args[i]
		var value string
		switch {
		case a == "-h" || a == "--help":
			help = true
			continue
		case a == "--"+flagTimeout:
			if i+1 == len(args) {
				return 0, nil, help, fmt.Errorf("healthcheck: flag needs an argument: --%s", flagTimeout)
			}
			i++
			value = args[i]
		case strings.HasPrefix(a, "--"+flagTimeout+"="):
			value = strings.TrimPrefix(a, "--"+flagTimeout+"=")
		default:
			rest = append(rest, a)
			continue
		}
		d, perr := time.ParseDuration(value)
		if perr != nil || d <= 0 {
			return 0, nil, help, fmt.Errorf("healthcheck: --%s %q: want a positive duration such as 3s", flagTimeout, value)
		}
		timeout = d
	}
	return timeout, rest, help, nil
}

// URL returns the /readyz URL of the node cfg configures: on
// http.internal_addr when set (":9090" or "host:port"), else on
// http.host:http.port; an empty or unspecified host (0.0.0.0, ::) becomes
// 127.0.0.1.
func URL(cfg *config.Config) (string, error) {
	addr, key := net.JoinHostPort(cfg.HTTP.Host, strconv.Itoa(cfg.HTTP.Port)), "http.port"
	if cfg.HTTP.InternalAddr != "" {
		addr, key = cfg.HTTP.InternalAddr, "http.internal_addr"
	}
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return "", fmt.Errorf("healthcheck: %s %q: %w", key, addr, err)
	}
	if p, err := strconv.Atoi(port); err != nil || p < 1 || p > 65535 {
		return "", fmt.Errorf("healthcheck: %s %q: the port must be 1 to 65535", key, addr)
	}
	if ip := net.ParseIP(host); host == "" || (ip != nil && ip.IsUnspecified()) {
		host = "127.0.0.1"
	}
	return "http://" + net.JoinHostPort(host, port) + Path, nil
}

// Check GETs url and returns nil when it answers 200, else an error wrapping
// ErrNotReady that gives the status and the node's reason, or why the node
// could not be reached. ctx bounds it.
func Check(ctx context.Context, client *http.Client, url string) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return fmt.Errorf("%w: %w", ErrNotReady, err)
	}
	resp, err := client.Do(req)
	if err != nil {
		return fmt.Errorf("%w: %w", ErrNotReady, err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
	if resp.StatusCode == http.StatusOK {
		return nil
	}
	reason := strings.TrimSpace(string(body))
	var answer struct {
		Reason string `json:"reason"`
	}
	if json.Unmarshal(body, &answer) == nil && answer.Reason != "" {
		reason = answer.Reason
	}
	return fmt.Errorf("%w: %s answered %s: %s", ErrNotReady, url, resp.Status, reason)
}

// fail writes err as one line and returns the not-ready exit code.
func fail(stderr io.Writer, err error) int {
	msg := strings.Join(strings.Fields(strings.ReplaceAll(err.Error(), "\n", "; ")), " ")
	if !strings.HasPrefix(msg, "healthcheck: ") {
		msg = "healthcheck: " + msg
	}
	fmt.Fprintln(stderr, "piped "+msg)
	return exitNotReady
}
