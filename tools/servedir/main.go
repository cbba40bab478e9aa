// Command servedir serves a directory's files over plain HTTP, for
// scripts/demo.sh's browser demo (client/demo.html):
//
//	servedir --addr 127.0.0.1:8090 --dir client
//
// "/" redirects to /demo.html. It is a development tool: no TLS, no
// caching (Cache-Control: no-store), no directory listings; it stops on
// SIGINT or SIGTERM.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"
)

func main() {
	addr := flag.String("addr", "127.0.0.1:8090", "address to listen on")
	dir := flag.String("dir", ".", "directory to serve")
	flag.Parse()
	if st, err := os.Stat(*dir); err != nil || !st.IsDir() {
		fmt.Fprintf(os.Stderr, "servedir: --dir %s is not a directory\n", *dir)
		os.Exit(2)
	}
	files := http.FileServer(http.Dir(*dir))
	srv := &http.Server{
		Addr: *addr,
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if strings.HasSuffix(r.URL.Path, "/") && r.URL.Path != "/" {
				http.NotFound(w, r) // no listings
				return
			}
			if r.URL.Path == "/" {
				http.Redirect(w, r, "/demo.html", http.StatusFound)
				return
			}
			w.Header().Set("Cache-Control", "no-store")
			files.ServeHTTP(w, r)
		}),
		ReadHeaderTimeout: 10 * time.Second,
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	go func() {
		<-ctx.Done()
		shutdown, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(shutdown)
	}()
	fmt.Printf("servedir: serving %s on http://%s/\n", *dir, *addr)
	if err := srv.ListenAndServe(); err != nil && !errors.Is(err, http.ErrServerClosed) {
		fmt.Fprintf(os.Stderr, "servedir: %v\n", err)
		os.Exit(1)
	}
}
