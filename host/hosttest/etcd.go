package hosttest

import (
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// Etcd is a real etcd cluster (Debian's etcd-server) on loopback ports,
// each node with its own data directory, for the fleet's tests.
type Etcd struct {
	t     testing.TB
	dir   string
	nodes []*etcdNode
}

type etcdNode struct {
	name, client, peer string
	cmd                *exec.Cmd
	done               chan struct{}
}

// NewEtcd starts an n-node etcd cluster and waits until it has a leader.
// It skips the test where etcd is not installed.
func NewEtcd(t testing.TB, n int) *Etcd {
	t.Helper()
	RequireCommand(t, "etcd")
	c := &Etcd{t: t, dir: t.TempDir()}
	var initial []string
	for i := 0; i < n; i++ {
		nd := &etcdNode{name: fmt.Sprintf("n%d", i), client: "http://" + freePort(t), peer: "http://" + freePort(t)}
		c.nodes = append(c.nodes, nd)
		initial = append(initial, nd.name+"="+nd.peer)
	}
	for i := range c.nodes {
		c.start(i, strings.Join(initial, ","))
	}
	t.Cleanup(c.stopAll)
	c.WaitHealthy(60 * time.Second)
	return c
}

// freePort is a loopback address nobody listens on now.
func freePort(t testing.TB) string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

func (c *Etcd) start(i int, initial string) {
	nd := c.nodes[i]
	if initial == "" {
		var all []string
		for _, o := range c.nodes {
			all = append(all, o.name+"="+o.peer)
		}
		initial = strings.Join(all, ",")
	}
	logf, err := os.OpenFile(filepath.Join(c.dir, nd.name+".log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		c.t.Fatal(err)
	}
	nd.cmd = exec.Command("etcd", "--name", nd.name, "--data-dir", filepath.Join(c.dir, nd.name),
		"--listen-client-urls", nd.client, "--advertise-client-urls", nd.client,
		"--listen-peer-urls", nd.peer, "--initial-advertise-peer-urls", nd.peer,
		"--initial-cluster", initial, "--initial-cluster-state", "new", "--initial-cluster-token", filepath.Base(c.dir),
		"--heartbeat-interval", "50", "--election-timeout", "500", "--logger", "zap", "--log-outputs", "stderr")
	nd.cmd.Stdout, nd.cmd.Stderr = logf, logf
	nd.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := nd.cmd.Start(); err != nil {
		c.t.Fatalf("cannot start etcd: %v", err)
	}
	nd.done = make(chan struct{})
	go func() { nd.cmd.Wait(); logf.Close(); close(nd.done) }()
}

// Endpoints are the client URLs of every node, running or not.
func (c *Etcd) Endpoints() []string {
	var e []string
	for _, nd := range c.nodes {
		e = append(e, nd.client)
	}
	return e
}

// Kill kills node i with SIGKILL.
func (c *Etcd) Kill(i int) {
	nd := c.nodes[i]
	if nd.cmd != nil && nd.cmd.Process != nil {
		nd.cmd.Process.Kill()
		<-nd.done
	}
	nd.cmd = nil
}

// Restart starts killed node i again on its data directory.
func (c *Etcd) Restart(i int) {
	c.start(i, "")
}

// WaitHealthy waits until every running node reports itself healthy
// (which takes a leader and quorum).
func (c *Etcd) WaitHealthy(timeout time.Duration) {
	c.t.Helper()
	deadline := time.Now().Add(timeout)
	for _, nd := range c.nodes {
		if nd.cmd == nil {
			continue
		}
		for {
			resp, err := http.Get(nd.client + "/health")
			ok := false
			if err == nil {
				var b [256]byte
				n, _ := resp.Body.Read(b[:])
				resp.Body.Close()
				ok = strings.Contains(string(b[:n]), `"health":"true"`)
			}
			if ok {
				break
			}
			if time.Now().After(deadline) {
				log, _ := os.ReadFile(filepath.Join(c.dir, nd.name+".log"))
				c.t.Fatalf("etcd %s not healthy after %s: %v\n%s", nd.name, timeout, err, tail(log, 3000))
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
}

func (c *Etcd) stopAll() {
	for i := range c.nodes {
		c.Kill(i)
	}
}
