// Values travel as UTF-8 JSON in `bytes` fields; an empty byte string means `null`.

/** Encodes a JSON value; `undefined` and `null` become the empty byte string. */
export function encodeJson(value: unknown): Buffer {
  if (value === undefined || value === null) return Buffer.alloc(0);
  const text = JSON.stringify(value);
  // JSON.stringify returns undefined for functions and symbols: refuse rather than send null.
  if (text === undefined) throw new TypeError(`value of type ${typeof value} is not JSON`);
  return Buffer.from(text, "utf8");
}

/** Decodes a JSON value; the empty byte string is `null`. */
export function decodeJson(bytes: Uint8Array): unknown {
  if (bytes.length === 0) return null;
  return JSON.parse(Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength).toString("utf8"));
}
