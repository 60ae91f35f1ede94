// How the worker and the client reach a coordinator: channel credentials for TLS, and the bearer
// token sent as call metadata. Shared so that both read the same options the same way.

import { readFileSync } from "node:fs";
import { type ChannelCredentials, credentials, Metadata } from "@grpc/grpc-js";

/** TLS to the coordinator. An empty object means TLS with the system's root certificates. */
export interface TlsOptions {
  /** PEM root certificate(s) to trust instead of the system's: the bytes, or a file path. */
  ca?: Buffer | string;
  /** PEM certificate chain of this process, for mutual TLS (needs `key`): bytes or a file path. */
  cert?: Buffer | string;
  /** PEM private key of `cert`: bytes or a file path. */
  key?: Buffer | string;
}

function pem(value: Buffer | string | undefined, field: string): Buffer | undefined {
  if (value === undefined) return undefined;
  if (Buffer.isBuffer(value)) return value;
  if (typeof value !== "string" || value === "") {
    throw new TypeError(`tls.${field} must be a Buffer of PEM or the path of a PEM file`);
  }
  try {
    return readFileSync(value);
  } catch (error) {
    const reason = error instanceof Error ? error.message : String(error);
    throw new Error(`tls.${field}: cannot read ${value}: ${reason}`);
  }
}

/** Plaintext without `tls`; otherwise TLS, mutual when `cert` and `key` are given. */
export function channelCredentials(tls: TlsOptions | undefined): ChannelCredentials {
  if (tls === undefined) return credentials.createInsecure();
  const ca = pem(tls.ca, "ca");
  const cert = pem(tls.cert, "cert");
  const key = pem(tls.key, "key");
  if ((cert === undefined) !== (key === undefined)) {
    throw new Error("tls.cert and tls.key go together: mutual TLS needs both");
  }
  return credentials.createSsl(ca ?? null, key ?? null, cert ?? null);
}

/** Metadata that carries `authorization: Bearer <token>` on every call (empty without a token). */
export function authMetadata(token: string | undefined): Metadata {
  const metadata = new Metadata();
  if (token !== undefined) {
    // A line break would let the token forge further headers.
    if (typeof token !== "string" || token === "" || /[\r\n]/.test(token)) {
      throw new TypeError("token must be a non-empty string without line breaks");
    }
    metadata.set("authorization", `Bearer ${token}`);
  }
  return metadata;
}
