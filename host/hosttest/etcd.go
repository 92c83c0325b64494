package hosttest

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
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
	// TLSDir, for a cluster made by NewEtcdTLS, holds ca.pem, client.pem
	// and client.key.
	TLSDir string
	client *http.Client
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
	return newEtcd(t, n, false)
}

// NewEtcdTLS starts a 1-node etcd that serves clients over TLS only and
// requires a client certificate, both signed by a CA made for the test.
func NewEtcdTLS(t testing.TB) *Etcd {
	t.Helper()
	return newEtcd(t, 1, true)
}

func newEtcd(t testing.TB, n int, secure bool) *Etcd {
	RequireCommand(t, "etcd")
	c := &Etcd{t: t, dir: t.TempDir(), client: http.DefaultClient}
	scheme := "http://"
	if secure {
		scheme = "https://"
		c.TLSDir = filepath.Join(c.dir, "tls")
		c.client = &http.Client{Transport: &http.Transport{TLSClientConfig: makeCerts(t, c.TLSDir)}}
	}
	var initial []string
	for i := 0; i < n; i++ {
		nd := &etcdNode{name: fmt.Sprintf("n%d", i), client: scheme + freePort(t), peer: "http://" + freePort(t)}
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
	if c.TLSDir != "" {
		nd.cmd.Args = append(nd.cmd.Args, "--cert-file", filepath.Join(c.TLSDir, "server.pem"), "--key-file", filepath.Join(c.TLSDir, "server.key"),
			"--trusted-ca-file", filepath.Join(c.TLSDir, "ca.pem"), "--client-cert-auth")
	}
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
			resp, err := c.client.Get(nd.client + "/health")
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

// makeCerts writes a CA, a server certificate for 127.0.0.1 and a client
// certificate into dir, and returns the client's TLS configuration.
func makeCerts(t testing.TB, dir string) *tls.Config {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	caKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	caTmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "test etcd CA"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(24 * time.Hour), IsCA: true, BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	ca, _ := x509.ParseCertificate(caDER)
	write := func(name, typ string, der []byte) {
		if err := os.WriteFile(filepath.Join(dir, name), pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	write("ca.pem", "CERTIFICATE", caDER)
	var pair tls.Certificate
	for i, who := range []string{"server", "client"} {
		key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		tmpl := &x509.Certificate{SerialNumber: big.NewInt(int64(i + 2)), Subject: pkix.Name{CommonName: who},
			NotBefore: now.Add(-time.Hour), NotAfter: now.Add(24 * time.Hour), KeyUsage: x509.KeyUsageDigitalSignature,
			ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
			IPAddresses: []net.IP{net.ParseIP("127.0.0.1")}}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
		if err != nil {
			t.Fatal(err)
		}
		kder, _ := x509.MarshalECPrivateKey(key)
		write(who+".pem", "CERTIFICATE", der)
		write(who+".key", "EC PRIVATE KEY", kder)
		pair = tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
	}
	pool := x509.NewCertPool()
	pool.AddCert(ca)
	return &tls.Config{RootCAs: pool, Certificates: []tls.Certificate{pair}}
}
