package tracing

// The Jaeger these tests export to: bin/jaeger (scripts/jaeger.sh build),
// started by TestMain as a child process and stopped at the end, or one that
// already runs on the standard ports, reused and left running.

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/piped-dev/piped/test/harness"
)

const (
	otlpGRPC   = "127.0.0.1:4317"
	otlpURL    = "http://" + otlpGRPC
	queryURL   = "http://127.0.0.1:16686"
	jaegerWait = 60 * time.Second
)

func TestMain(m *testing.M) {
	os.Exit(run(m))
}

func run(m *testing.M) int {
	// Only what the tests set: an OTEL_* variable of the developer's shell
	// would send the node's spans elsewhere.
	for _, kv := range os.Environ() {
		if k, _, _ := strings.Cut(kv, "="); strings.HasPrefix(k, "OTEL_") {
			_ = os.Unsetenv(k)
		}
	}
	_, file, _, _ := runtime.Caller(0)
	root := filepath.Join(filepath.Dir(file), "..", "..")
	bin := filepath.Join(root, "bin", "jaeger")
	if fi, err := os.Stat(bin); err != nil || fi.IsDir() {
		fmt.Fprintf(os.Stderr, "tracing: %s is missing: run scripts/jaeger.sh build (about 5 minutes the first time), then the tests again.\n", filepath.Join("bin", "jaeger"))
		return 1
	}
	stop, err := startJaeger(bin)
	if err != nil {
		fmt.Fprintln(os.Stderr, "tracing:", err)
		return 1
	}
	defer stop()
	return harness.Main(m)
}

// jaegerAnswers reports whether a Jaeger query API answers GET /api/services.
func jaegerAnswers() bool {
	c := http.Client{Timeout: 2 * time.Second}
	resp, err := c.Get(queryURL + "/api/services")
	if err != nil {
		return false
	}
	defer resp.Body.Close()
	var body struct {
		Data []string `json:"data"`
	}
	return resp.StatusCode == http.StatusOK && json.NewDecoder(resp.Body).Decode(&body) == nil
}

func listening(addr string) bool {
	c, err := net.DialTimeout("tcp", addr, time.Second)
	if err != nil {
		return false
	}
	_ = c.Close()
	return true
}

// startJaeger starts bin as a child process unless a Jaeger already answers
// (then it is reused and left running), and waits until both its query API
// and its OTLP gRPC port answer. stop ends the child.
func startJaeger(bin string) (stop func(), err error) {
	if jaegerAnswers() && listening(otlpGRPC) {
		fmt.Fprintf(os.Stderr, "tracing: reusing the Jaeger that answers on %s\n", queryURL)
		return func() {}, nil
	}
	for _, addr := range []string{otlpGRPC, "127.0.0.1:16686"} {
		if listening(addr) {
			return nil, fmt.Errorf("%s is in use by something that is not a Jaeger answering on %s; stop it (scripts/jaeger.sh stop) and run the tests again", addr, queryURL)
		}
	}
	logf, err := os.CreateTemp("", "piped-test-jaeger-*.log")
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(bin)
	cmd.Stdout, cmd.Stderr = logf, logf
	// If the test binary dies (a -timeout panic, a kill), Jaeger goes too.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGTERM}
	if err := cmd.Start(); err != nil {
		logf.Close()
		return nil, fmt.Errorf("start %s: %w", bin, err)
	}
	exited := make(chan struct{})
	go func() { _ = cmd.Wait(); close(exited) }()
	stop = func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(10 * time.Second):
			_ = cmd.Process.Kill()
			<-exited
		}
		logf.Close()
		_ = os.Remove(logf.Name())
	}
	deadline := time.Now().Add(jaegerWait)
	for !(jaegerAnswers() && listening(otlpGRPC)) {
		select {
		case <-exited:
			b, _ := os.ReadFile(logf.Name())
			logf.Close()
			_ = os.Remove(logf.Name())
			if jaegerAnswers() { // another test run started one at the same moment
				return func() {}, nil
			}
			return nil, fmt.Errorf("%s exited before it answered:\n%s", bin, tail(string(b), 30))
		default:
		}
		if time.Now().After(deadline) {
			stop()
			return nil, fmt.Errorf("%s did not answer on %s within %v", bin, queryURL, jaegerWait)
		}
		time.Sleep(100 * time.Millisecond)
	}
	fmt.Fprintf(os.Stderr, "tracing: started %s (pid %d)\n", bin, cmd.Process.Pid)
	return stop, nil
}

func tail(s string, lines int) string {
	l := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(l) > lines {
		l = l[len(l)-lines:]
	}
	return strings.Join(l, "\n")
}

// The Jaeger query API's view of a trace (GET /api/traces).
type jTrace struct {
	TraceID   string              `json:"traceID"`
	Spans     []jSpan             `json:"spans"`
	Processes map[string]jProcess `json:"processes"`
}

type jSpan struct {
	TraceID       string       `json:"traceID"`
	SpanID        string       `json:"spanID"`
	OperationName string       `json:"operationName"`
	References    []jReference `json:"references"`
	Tags          []jTag       `json:"tags"`
	ProcessID     string       `json:"processID"`
	Logs          []struct {
		Fields []jTag `json:"fields"`
	} `json:"logs"`
}

type jReference struct {
	RefType string `json:"refType"` // CHILD_OF or FOLLOWS_FROM
	TraceID string `json:"traceID"`
	SpanID  string `json:"spanID"`
}

type jTag struct {
	Key   string `json:"key"`
	Type  string `json:"type"`
	Value any    `json:"value"`
}

type jProcess struct {
	ServiceName string `json:"serviceName"`
	Tags        []jTag `json:"tags"`
}

// traces returns the traces Jaeger holds for service.
func traces(service string) ([]jTrace, error) {
	c := http.Client{Timeout: 5 * time.Second}
	resp, err := c.Get(queryURL + "/api/traces?limit=100&lookback=1h&service=" + url.QueryEscape(service))
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode == http.StatusNotFound {
		return nil, nil // the service is not known yet
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("GET /api/traces?service=%s: %s: %s", service, resp.Status, b)
	}
	var body struct {
		Data   []jTrace `json:"data"`
		Errors []any    `json:"errors"`
	}
	if err := json.Unmarshal(b, &body); err != nil {
		return nil, fmt.Errorf("GET /api/traces: %w: %.200s", err, b)
	}
	if len(body.Errors) > 0 {
		return nil, fmt.Errorf("GET /api/traces: errors %v", body.Errors)
	}
	return body.Data, nil
}

// pollTraces polls Jaeger for service's traces until done accepts them or
// within passes, and returns the last ones seen.
func pollTraces(t *testing.T, service string, within time.Duration, done func([]jTrace) bool) []jTrace {
	t.Helper()
	deadline := time.Now().Add(within)
	var last []jTrace
	var lastErr error
	for {
		tr, err := traces(service)
		if err == nil {
			last = tr
			if done(tr) {
				return tr
			}
		}
		lastErr = err
		if time.Now().After(deadline) {
			if lastErr != nil {
				t.Logf("last query error: %v", lastErr)
			}
			return last
		}
		time.Sleep(250 * time.Millisecond)
	}
}

var errNoTag = errors.New("no such tag")

// tag returns the value of the span's tag key as a string.
func (s jSpan) tag(key string) (string, error) {
	for _, tg := range s.Tags {
		if tg.Key == key {
			return fmt.Sprint(tg.Value), nil
		}
	}
	return "", errNoTag
}

// parent returns the span id of the span's CHILD_OF reference, or "".
func (s jSpan) parent() string {
	for _, r := range s.References {
		if r.RefType == "CHILD_OF" {
			return r.SpanID
		}
	}
	return ""
}
