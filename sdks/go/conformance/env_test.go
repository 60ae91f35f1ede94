package conformance

import (
	"context"
	"io"
	"log/slog"
	"strings"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"

	"github.com/hivegrid/hivegrid/sdks/go/hivegrid"
	fc "github.com/hivegrid/hivegrid/sdks/go/internal/fakecoord"
)

// The conformance worker's TLS and token come from the environment: with all four
// variables set, it reaches a coordinator that demands a client certificate, token included.
func TestConnOptionsFromEnvironment(t *testing.T) {
	certs := fc.NewCerts(t)
	c := fc.Start(t, grpc.Creds(credentials.NewTLS(certs.ServerTLS(true))))
	env := map[string]string{
		EnvTLSCA: certs.CAFile, EnvTLSCert: certs.ClientCertFile, EnvTLSKey: certs.ClientKeyFile, EnvToken: "tok",
	}
	opts, err := ConnOptions(func(k string) string { return env[k] })
	if err != nil {
		t.Fatal(err)
	}
	w := hivegrid.NewWorker(append(opts, hivegrid.WithLogger(slog.New(slog.NewTextHandler(io.Discard, nil))))...)
	if err := Register(w); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	go func() { _ = w.Run(ctx, c.Addr) }()
	s := c.NextSession(t)
	info, ok := s.Peer.AuthInfo.(credentials.TLSInfo)
	if !ok || len(info.State.PeerCertificates) == 0 || info.State.PeerCertificates[0].Subject.CommonName != certs.ClientName {
		t.Fatalf("no client certificate over the stream: %v", s.Peer.AuthInfo)
	}
	if got := s.Metadata.Get("authorization"); len(got) != 1 || got[0] != "Bearer tok" {
		t.Fatalf("authorization %q", got)
	}
}

func TestConnOptionsEnvironmentMistakes(t *testing.T) {
	if opts, err := ConnOptions(func(string) string { return "" }); err != nil || len(opts) != 0 {
		t.Fatalf("empty environment: %v, %v (want plaintext, no token)", opts, err)
	}
	_, err := ConnOptions(func(k string) string { return map[string]string{EnvTLSCert: "c.pem"}[k] })
	if err == nil || !strings.Contains(err.Error(), EnvTLSKey) {
		t.Fatalf("a certificate without its key: %v", err)
	}
}
