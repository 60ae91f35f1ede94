package hivegrid

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
	"strings"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
)

// TLS names the PEM files of a TLS connection to the coordinator (see WithTLS).
type TLS struct {
	// CAFile holds the certificate authorities that signed the coordinator's certificate.
	// Empty: the system's roots.
	CAFile string
	// CertFile and KeyFile are this program's certificate and key, for a coordinator that
	// requires mutual TLS. Give both or neither.
	CertFile, KeyFile string
	// ServerName is the name checked in the coordinator's certificate (default: the host of
	// the address).
	ServerName string
}

// connConfig is how a Worker or a Client reaches the coordinator.
type connConfig struct {
	tlsFiles  *TLS
	tlsConfig *tls.Config
	token     string
	hasToken  bool
	dialOpts  []grpc.DialOption
}

// ConnOption configures the connection to the coordinator. It is both an Option (NewWorker)
// and a ClientOption (Dial), so that a worker and a client are set up alike.
type ConnOption func(*connConfig)

func (o ConnOption) applyWorker(c *config)       { o(&c.conn) }
func (o ConnOption) applyClient(c *clientConfig) { o(&c.conn) }

// WithTLS connects over TLS with the certificates in the files t names, read when the Worker
// runs or the Client is dialled. By default the connection is plaintext.
func WithTLS(t TLS) ConnOption { return func(c *connConfig) { c.tlsFiles = &t } }

// WithTLSConfig connects over TLS configured by cfg (cloned), for what TLS's files cannot
// say: certificates held in memory, a custom verification.
func WithTLSConfig(cfg *tls.Config) ConnOption {
	return func(c *connConfig) { c.tlsConfig = cfg.Clone() }
}

// WithToken sends token with every call and stream, as the gRPC metadata
// "authorization: Bearer TOKEN". Without TLS it travels in the clear.
func WithToken(token string) ConnOption {
	return func(c *connConfig) { c.token, c.hasToken = token, true }
}

// WithDialOptions adds gRPC dial options (interceptors, keepalive, ...), applied after the
// SDK's own, so that they win.
func WithDialOptions(opts ...grpc.DialOption) ConnOption {
	return func(c *connConfig) { c.dialOpts = append(c.dialOpts, opts...) }
}

// dial makes the gRPC client of addr. Like grpc.NewClient it connects lazily: only a bad
// configuration fails here.
func (c connConfig) dial(addr string) (*grpc.ClientConn, error) {
	if addr == "" {
		return nil, errors.New("hivegrid: no coordinator address given (HOST:PORT)")
	}
	creds, err := c.transportCredentials()
	if err != nil {
		return nil, err
	}
	opts := []grpc.DialOption{
		grpc.WithTransportCredentials(creds),
		// gRPC's own reconnect backoff (1 s base, 120 s cap) would dominate the SDK's.
		grpc.WithConnectParams(grpc.ConnectParams{
			Backoff:           backoff.Config{BaseDelay: initialBackoff, Multiplier: 2, Jitter: 0.2, MaxDelay: maxBackoff},
			MinConnectTimeout: 5 * time.Second,
		}),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(256 << 20)),
	}
	if c.hasToken {
		if c.token == "" || strings.ContainsAny(c.token, "\r\n") {
			return nil, errors.New("hivegrid: WithToken: the token is empty or holds a line break")
		}
		opts = append(opts, grpc.WithPerRPCCredentials(bearerToken("Bearer "+c.token)))
	}
	conn, err := grpc.NewClient(addr, append(opts, c.dialOpts...)...)
	if err != nil {
		return nil, fmt.Errorf("hivegrid: dial %s: %w", addr, err)
	}
	return conn, nil
}

func (c connConfig) transportCredentials() (credentials.TransportCredentials, error) {
	switch {
	case c.tlsFiles != nil && c.tlsConfig != nil:
		return nil, errors.New("hivegrid: WithTLS and WithTLSConfig both given; choose one")
	case c.tlsConfig != nil:
		return credentials.NewTLS(c.tlsConfig), nil
	case c.tlsFiles != nil:
		cfg, err := c.tlsFiles.config()
		if err != nil {
			return nil, err
		}
		return credentials.NewTLS(cfg), nil
	default:
		return insecure.NewCredentials(), nil
	}
}

func (t TLS) config() (*tls.Config, error) {
	cfg := &tls.Config{MinVersion: tls.VersionTLS12, ServerName: t.ServerName}
	if t.CAFile != "" {
		pem, err := os.ReadFile(t.CAFile)
		if err != nil {
			return nil, fmt.Errorf("hivegrid: TLS CA file: %w", err)
		}
		cfg.RootCAs = x509.NewCertPool()
		if !cfg.RootCAs.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("hivegrid: TLS CA file %s holds no PEM certificate", t.CAFile)
		}
	}
	switch {
	case t.CertFile != "" && t.KeyFile != "":
		cert, err := tls.LoadX509KeyPair(t.CertFile, t.KeyFile)
		if err != nil {
			return nil, fmt.Errorf("hivegrid: TLS client certificate: %w", err)
		}
		cfg.Certificates = []tls.Certificate{cert}
	case t.CertFile != "" || t.KeyFile != "":
		return nil, errors.New("hivegrid: TLS needs both CertFile and KeyFile for a client certificate, or neither")
	}
	return cfg, nil
}

// bearerToken is the value of the authorization header of every call.
type bearerToken string

func (b bearerToken) GetRequestMetadata(context.Context, ...string) (map[string]string, error) {
	return map[string]string{"authorization": string(b)}, nil
}

// RequireTransportSecurity is false so that a token also reaches a plaintext coordinator
// (loopback, or a TLS-terminating proxy beside it); WithToken's doc says so.
func (bearerToken) RequireTransportSecurity() bool { return false }
