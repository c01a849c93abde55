/**
 * The HTTP endpoint for monitoring (Deno.serve): `/metrics` (Prometheus text), `/healthz` (liveness)
 * and `/readyz` (readiness). Any other path is 404.
 *
 * @module
 */

import { PROMETHEUS_CONTENT_TYPE } from "./metrics.ts";

/** Options for {@link startMetricsServer}. */
export interface MetricsServerOptions {
  /** Address to bind, e.g. "127.0.0.1", "0.0.0.0" or "::1". */
  host: string;
  /** TCP port; 0 picks a free one (see {@link MetricsServer.port}). */
  port: number;
  /** Produces the `/metrics` body (see `renderPrometheus`). */
  render: () => string;
  /** `/readyz` answers 200 while this returns true, 503 otherwise. */
  ready: () => boolean;
  /** Called with errors thrown while answering a request (the request then gets a 500). */
  onError?: (e: Error) => void;
}

/** A running metrics server. */
export interface MetricsServer {
  /** The port actually bound. */
  port: number;
  /** Stops accepting connections and resolves once the server has finished. Safe to call twice. */
  close(): Promise<void>;
}

const TEXT = "text/plain; charset=utf-8";

function text(status: number, body: string, contentType = TEXT, extra?: Record<string, string>): Response {
  return new Response(body, {
    status,
    headers: { "content-type": contentType, "cache-control": "no-store", ...extra },
  });
}

function handle(opts: MetricsServerOptions, req: Request): Response {
  const path = new URL(req.url).pathname;
  if (path !== "/metrics" && path !== "/healthz" && path !== "/readyz") return text(404, "not found\n");
  if (req.method !== "GET" && req.method !== "HEAD") {
    return text(405, "method not allowed\n", TEXT, { allow: "GET, HEAD" });
  }
  switch (path) {
    case "/metrics":
      return text(200, opts.render(), PROMETHEUS_CONTENT_TYPE);
    case "/healthz":
      return text(200, "ok");
    default:
      return opts.ready() ? text(200, "ok") : text(503, "not ready");
  }
}

/**
 * Starts the metrics HTTP server. Throws a one-line Error when it cannot bind, e.g.
 * `metrics.port 9090 on 127.0.0.1 is already in use`.
 */
export function startMetricsServer(opts: MetricsServerOptions): MetricsServer {
  const where = `metrics.port ${opts.port} on ${opts.host}`;
  let server: Deno.HttpServer<Deno.NetAddr>;
  try {
    server = Deno.serve({
      hostname: opts.host,
      port: opts.port,
      // Deno.serve logs "Listening on ..." by default; the broker does its own logging.
      onListen() {},
      onError(error) {
        opts.onError?.(error instanceof Error ? error : new Error(String(error)));
        return text(500, "internal error\n");
      },
    }, (req) => handle(opts, req));
  } catch (e) {
    if (e instanceof Deno.errors.AddrInUse) throw new Error(`${where} is already in use`);
    if (e instanceof Deno.errors.PermissionDenied) throw new Error(`${where}: permission denied`);
    if (e instanceof Deno.errors.AddrNotAvailable) throw new Error(`${where}: address not available`);
    throw new Error(`${where}: cannot listen: ${(e as Error).message}`);
  }
  let closing: Promise<void> | undefined;
  return {
    port: server.addr.port,
    close(): Promise<void> {
      closing ??= server.shutdown().then(() => server.finished);
      return closing;
    },
  };
}
