# syntax=docker/dockerfile:1
#
# deno-mqtt as a container: the broker is compiled into one executable with the official Deno image,
# then copied onto a small base with glibc and libgcc only (distroless "cc"), running as a non-root user.
#
#   docker build -t deno-mqtt .
#   docker run --rm -p 1883:1883 -p 9090:9090 -v mqtt-data:/data deno-mqtt
#
# Arguments given to `docker run` replace the default ones below (see README, "Docker").

# --- build: deno compile, with the flags of the `compile` task in deno.json --------------------------
FROM denoland/deno:2.9.6 AS build
WORKDIR /src
COPY deno.json deno.lock ./
COPY main.ts ./
COPY src/ src/
COPY config/config.yaml config/config.yaml
# Only the broker's own dependency graph (not the test and benchmark packages); fails if deno.lock is
# out of date rather than resolving new versions.
RUN deno cache --frozen main.ts
RUN deno compile --frozen --v8-flags=--max-semi-space-size=4 \
      --allow-net --allow-read --allow-write --allow-env --allow-sys \
      --output /out/deno-mqtt main.ts \
 && /out/deno-mqtt --version \
 && mkdir -p /out/data

# --- run --------------------------------------------------------------------------------------------
FROM gcr.io/distroless/cc-debian12:nonroot
WORKDIR /app
COPY --from=build /out/deno-mqtt /app/deno-mqtt
# The shipped configuration (every key at its default) at the path the broker reads by default,
# config/config.yaml relative to the working directory; mount another file there to change it.
COPY --from=build /src/config/config.yaml /app/config/config.yaml
# The Deno KV database lives in /data; the directory belongs to the non-root user (uid 65532) so a
# named volume created from it is writable.
COPY --from=build --chown=nonroot:nonroot /out/data /data
VOLUME ["/data"]
USER nonroot
# 1883: MQTT over TCP; 9090: /metrics, /healthz, /readyz.
EXPOSE 1883 9090
# SIGTERM (docker stop) is a graceful shutdown: MQTT 5 clients get DISCONNECT 0x8B, the store is flushed.
STOPSIGNAL SIGTERM
ENTRYPOINT ["/app/deno-mqtt"]
CMD ["--host", "0.0.0.0", "--metrics.host", "0.0.0.0", "--storage-path", "/data/mqtt.db"]
