package harness

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// WithInternalListener gives the node a second listener for /healthz,
// /readyz and /metrics (http.internal_addr) on a free loopback port; Get,
// Metric and WaitReady then use it.
func WithInternalListener() NodeOption {
	return func(n *Node) {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			panic(fmt.Sprintf("harness: no free port: %v", err))
		}
		n.InternalPort = ln.Addr().(*net.TCPAddr).Port
		ln.Close()
		n.Env = append(n.Env, fmt.Sprintf("PIPED_HTTP_INTERNAL_ADDR=127.0.0.1:%d", n.InternalPort))
	}
}

// SeedNginxLocation is the location block of the README's "Behind nginx"
// section as the seed wrote it, without the proxy_next_upstream line the
// README now adds: Piped's drain must work with it unchanged.
const SeedNginxLocation = `
    location /api/ {
        proxy_pass http://piped-nodes;
        proxy_http_version 1.1;
        proxy_set_header Upgrade $http_upgrade;
        proxy_set_header Connection 'upgrade';
        proxy_set_header Host $host;
        proxy_cache_bypass $http_upgrade;
        access_log off;  # the URL holds the user's token
        proxy_read_timeout 75s;
        proxy_send_timeout 75s;
    }
`

// Nginx is a running nginx balancing over Piped nodes.
type Nginx struct {
	Port int
	Dir  string // its prefix: nginx.conf, error.log, temp paths
	cmd  *exec.Cmd
	done chan struct{}
}

// StartNginx runs Debian's nginx unprivileged in a temporary directory with
// the seed's configuration (plain HTTP on a free loopback port, the nodes'
// client ports as the upstream) and stops it (SIGQUIT) when the test ends.
// A missing nginx fails the test.
func StartNginx(t testing.TB, nodes ...*Node) *Nginx {
	t.Helper()
	bin, err := exec.LookPath("nginx")
	if err != nil {
		for _, p := range []string{"/usr/sbin/nginx", "/sbin/nginx"} {
			if _, serr := os.Stat(p); serr == nil {
				bin, err = p, nil
				break
			}
		}
	}
	if err != nil {
		t.Fatalf("nginx is not installed (%v): this test needs Debian's nginx; run `apt-get install -y nginx-light` (.ci/run does it), then the tests again", err)
	}
	x := &Nginx{Port: FreePort(t), Dir: t.TempDir(), done: make(chan struct{})}
	var upstream strings.Builder
	for _, n := range nodes {
		fmt.Fprintf(&upstream, "        server 127.0.0.1:%d;   # node %s\n", n.Port, n.ID)
	}
	conf := fmt.Sprintf(`daemon off;
pid %[1]s/nginx.pid;
error_log %[1]s/error.log info;
worker_processes 1;
events {}
http {
    client_body_temp_path %[1]s/client_body;
    proxy_temp_path %[1]s/proxy;
    fastcgi_temp_path %[1]s/fastcgi;
    uwsgi_temp_path %[1]s/uwsgi;
    scgi_temp_path %[1]s/scgi;
    access_log off;

    upstream piped-nodes {
%[2]s    }

    server {
        listen 127.0.0.1:%[3]d;
%[4]s
    }
}
`, x.Dir, upstream.String(), x.Port, SeedNginxLocation)
	confPath := filepath.Join(x.Dir, "nginx.conf")
	if err := os.WriteFile(confPath, []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	x.cmd = exec.Command(bin, "-c", confPath, "-p", x.Dir, "-e", filepath.Join(x.Dir, "error.log"))
	out := &LockedBuffer{}
	x.cmd.Stdout, x.cmd.Stderr = out, out
	if err := x.cmd.Start(); err != nil {
		t.Fatalf("start nginx: %v", err)
	}
	go func() { _ = x.cmd.Wait(); close(x.done) }()
	t.Cleanup(func() {
		_ = x.cmd.Process.Signal(syscall.SIGQUIT)
		select {
		case <-x.done:
		case <-time.After(10 * time.Second):
			_ = x.cmd.Process.Kill()
			<-x.done
		}
		if t.Failed() {
			t.Logf("nginx output:\n%s\nnginx error.log:\n%s", out, x.ErrorLog())
		}
	})
	Eventually(t, 10*time.Second, "nginx listening", func() bool {
		select {
		case <-x.done:
			t.Fatalf("nginx exited: %s\n%s", out, x.ErrorLog())
		default:
		}
		c, err := net.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", x.Port))
		if err != nil {
			return false
		}
		c.Close()
		return true
	})
	return x
}

// WSURL returns the WebSocket URL of token through nginx.
func (x *Nginx) WSURL(token string) string {
	return fmt.Sprintf("ws://127.0.0.1:%d/api/%s", x.Port, token)
}

// ErrorLog returns nginx's error log so far.
func (x *Nginx) ErrorLog() string {
	b, _ := os.ReadFile(filepath.Join(x.Dir, "error.log"))
	return string(b)
}
