import type { Transport } from "@connectrpc/connect";

/**
 * withToken makes every call through transport carry the credential as
 * `Authorization: Bearer <token>`. It wraps the Transport rather than being
 * given to each transport factory, so a Transports of the caller's own
 * sends the token as well as webTransports and nodeTransports do. token may
 * be a function, read at every call (a page whose user types the token in
 * while its session runs); an empty token sends no header.
 */
export function withToken(transport: Transport, token: string | undefined | (() => string)): Transport {
  if (token === undefined || token === "") {
    return transport;
  }
  const current = typeof token === "function" ? token : () => token;
  const header = (init: HeadersInit | undefined): Headers => {
    const h = new Headers(init);
    const t = current();
    if (t !== "") {
      h.set("Authorization", `Bearer ${t}`);
    }
    return h;
  };
  return {
    unary: (method, signal, timeoutMs, init, input, contextValues) =>
      transport.unary(method, signal, timeoutMs, header(init), input, contextValues),
    stream: (method, signal, timeoutMs, init, input, contextValues) =>
      transport.stream(method, signal, timeoutMs, header(init), input, contextValues),
  };
}

/**
 * validToken reports whether token can go in an HTTP header: visible ASCII
 * without spaces, as a bearer token is.
 */
export function validToken(token: string): boolean {
  return /^[\x21-\x7e]+$/.test(token);
}
