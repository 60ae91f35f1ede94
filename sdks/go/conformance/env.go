package conformance

import (
	"fmt"

	"github.com/hivegrid/hivegrid/sdks/go/hivegrid"
)

// The environment variables that set the conformance worker's connection, the same in every
// SDK's conformance worker.
const (
	EnvTLSCA   = "HIVEGRID_TLS_CA"   // PEM file of the CAs of the coordinator's certificate
	EnvTLSCert = "HIVEGRID_TLS_CERT" // PEM client certificate, for mutual TLS (with EnvTLSKey)
	EnvTLSKey  = "HIVEGRID_TLS_KEY"  // its PEM key
	EnvToken   = "HIVEGRID_TOKEN"    // sent as "authorization: Bearer TOKEN"
)

// ConnOptions returns the worker options the environment asks for: TLS when any of the TLS
// variables is set (an empty CA: the system's roots), and a token when EnvToken is set.
func ConnOptions(getenv func(string) string) ([]hivegrid.Option, error) {
	var opts []hivegrid.Option
	ca, cert, key := getenv(EnvTLSCA), getenv(EnvTLSCert), getenv(EnvTLSKey)
	if (cert == "") != (key == "") {
		return nil, fmt.Errorf("%s and %s go together (a client certificate and its key)", EnvTLSCert, EnvTLSKey)
	}
	if ca != "" || cert != "" {
		opts = append(opts, hivegrid.WithTLS(hivegrid.TLS{CAFile: ca, CertFile: cert, KeyFile: key}))
	}
	if token := getenv(EnvToken); token != "" {
		opts = append(opts, hivegrid.WithToken(token))
	}
	return opts, nil
}
