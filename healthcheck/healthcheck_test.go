package healthcheck

import (
	"bytes"
	"context"
	"errors"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/piped-dev/piped/config"
)

func TestURL(t *testing.T) {
	for _, tc := range []struct {
		name           string
		host, internal string
		port           int
		want, err      string
	}{
		{name: "client port", port: 8080, want: "http://127.0.0.1:8080/readyz"},
		{name: "client port on one address", host: "10.0.0.5", port: 8080, want: "http://10.0.0.5:8080/readyz"},
		{name: "client port on 0.0.0.0", host: "0.0.0.0", port: 8080, want: "http://127.0.0.1:8080/readyz"},
		{name: "internal :9090", port: 8080, internal: ":9090", want: "http://127.0.0.1:9090/readyz"},
		{name: "internal host:port", port: 8080, internal: "127.0.0.2:9191", want: "http://127.0.0.2:9191/readyz"},
		{name: "internal [::]:9090", port: 8080, internal: "[::]:9090", want: "http://127.0.0.1:9090/readyz"},
		{name: "internal [::1]:9090", port: 8080, internal: "[::1]:9090", want: "http://[::1]:9090/readyz"},
		{name: "internal name", port: 8080, internal: "localhost:9090", want: "http://localhost:9090/readyz"},
		{name: "internal without port", port: 8080, internal: "9090", err: "http.internal_addr"},
		{name: "internal port 0", port: 8080, internal: ":0", err: "1 to 65535"},
		{name: "client port 0", port: 0, err: "http.port"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := config.Defaults()
			c.HTTP.Host, c.HTTP.Port, c.HTTP.InternalAddr = tc.host, tc.port, tc.internal
			got, err := URL(&c)
			switch {
			case tc.err != "" && (err == nil || !strings.Contains(err.Error(), tc.err)):
				t.Fatalf("URL = %q, %v; want an error naming %q", got, err, tc.err)
			case tc.err == "" && (err != nil || got != tc.want):
				t.Fatalf("URL = %q, %v; want %q", got, err, tc.want)
			}
		})
	}
}

func TestCheck(t *testing.T) {
	for _, tc := range []struct {
		name   string
		status int
		body   string
		want   string // "" : ready
	}{
		{"ready", 200, `{"status":"ready"}`, ""},
		{"draining", 503, `{"status":"not ready","reason":"draining: the node is shutting down"}`, "503 Service Unavailable: draining: the node is shutting down"},
		{"not json", 500, "boom\n", "500 Internal Server Error: boom"},
		{"not found", 404, "", "404 Not Found"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				if r.URL.Path != Path {
					t.Errorf("path %q", r.URL.Path)
				}
				w.WriteHeader(tc.status)
				_, _ = w.Write([]byte(tc.body))
			}))
			defer srv.Close()
			err := Check(context.Background(), srv.Client(), srv.URL+Path)
			if tc.want == "" {
				if err != nil {
					t.Fatalf("Check: %v", err)
				}
				return
			}
			if !errors.Is(err, ErrNotReady) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Check = %v; want ErrNotReady and %q", err, tc.want)
			}
		})
	}
}

// Run's exit codes and its one line on stderr, against a fake /readyz.
func TestRun(t *testing.T) {
	var status atomic.Int32 // of the fake; 0: answers after 2s
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		code := int(status.Load())
		if code == 0 {
			time.Sleep(2 * time.Second)
			code = http.StatusOK
		}
		w.WriteHeader(code)
	})}
	go func() { _ = srv.Serve(ln) }()
	defer srv.Close()
	port := strconv.Itoa(ln.Addr().(*net.TCPAddr).Port)
	for _, tc := range []struct {
		name    string
		status  int32
		args    []string
		environ []string
		code    int
		stderr  string
	}{
		{"ready on the client port", 200, []string{"--port", port}, nil, 0, ""},
		{"ready on the internal addr", 200, nil, []string{"PIPED_HTTP_INTERNAL_ADDR=127.0.0.1:" + port}, 0, ""},
		{"not ready", 503, []string{"--port", port}, nil, 1, "503"},
		{"timeout", 0, []string{"--port", port, "--timeout=200ms"}, nil, 1, "deadline exceeded"},
		{"bad timeout", 200, []string{"--timeout", "soon"}, nil, 1, "--timeout"},
		{"bad flag", 200, []string{"--prot", port}, nil, 1, "unknown flag"},
		{"bad env", 200, nil, []string{"PIPED_HTTP_PROT=1"}, 1, "PIPED_HTTP_PROT"},
		{"help", 200, []string{"--help"}, nil, 0, "Usage: piped healthcheck"},
		{"bad flag before help", 200, []string{"--prot", "1", "--help"}, nil, 1, "unknown flag"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Chdir(t.TempDir()) // no ./piped.toml
			status.Store(tc.status)
			var stderr bytes.Buffer
			code := Run(context.Background(), tc.args, tc.environ, &stderr)
			if code != tc.code || !strings.Contains(stderr.String(), tc.stderr) {
				t.Fatalf("Run(%q) = %d, stderr %q; want %d and %q", tc.args, code, stderr.String(), tc.code, tc.stderr)
			}
			if code == 1 && strings.Count(stderr.String(), "\n") != 1 {
				t.Errorf("stderr is not one line: %q", stderr.String())
			}
		})
	}
}
