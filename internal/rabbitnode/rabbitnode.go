// Package rabbitnode prepares the data directory of a RabbitMQ node started
// beside the machine's own, as the fault tests and the benchmark harness do.
package rabbitnode

import (
	"fmt"
	"os"
	"os/user"
	"path/filepath"
	"strconv"
)

// PrepareDir makes dir the home of a RabbitMQ node: its mnesia and log
// directories, rabbitmq.conf holding conf (which must set the node's own
// listener: the machine's /etc/rabbitmq/rabbitmq.conf listens on 5672), no
// plugins, and everything owned by the rabbitmq user, to which the server
// drops and without access to which it silently fails. It needs root.
func PrepareDir(dir, conf string) error {
	u, err := user.Lookup("rabbitmq")
	if err != nil {
		return fmt.Errorf("the rabbitmq user: %w", err)
	}
	uid, _ := strconv.Atoi(u.Uid)
	gid, _ := strconv.Atoi(u.Gid)
	for _, d := range []string{"mnesia", "log"} {
		if err := os.Mkdir(filepath.Join(dir, d), 0o755); err != nil {
			return err
		}
	}
	files := map[string]string{"rabbitmq.conf": conf, "enabled_plugins": "[].\n"}
	for name, content := range files {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o644); err != nil {
			return err
		}
	}
	return filepath.Walk(dir, func(p string, _ os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		return os.Chown(p, uid, gid)
	})
}
