# Piped images: static binaries on a distroless base, running as non-root.
#   docker build -t piped .                                      (the node: the last stage)
#   docker build --target echo-backend -t piped-echo-backend .   (the example backend)
#   docker run -p 8080:8080 -e PIPED_NODE_ID=1 -e PIPED_AMQP_URL=amqp://user:pass@rabbit:5672/ piped
# Clients use 8080 (/api/ only). /healthz, /readyz and /metrics are on 9090,
# the internal listener: publish it only to your probes and Prometheus, never
# through the public proxy (docs/operations.md#internal-listener).
# test/deploy checks these facts against fly.toml, the Makefile and Piped's
# defaults; docs/deploy.md describes the deployments.
FROM golang:1.26 AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
# The build flags (static: CGO_ENABLED=0, -trimpath) are the Makefile's, the
# same as for CI's binaries.
RUN make build BIN=/out

# The example echo backend, for docker-compose.yml.
FROM gcr.io/distroless/static-debian12:nonroot AS echo-backend
COPY --from=build /out/echo-backend /echo-backend
ENTRYPOINT ["/echo-backend"]

# The node.
FROM gcr.io/distroless/static-debian12:nonroot AS piped
COPY --from=build /out/piped /piped
ENV PIPED_HTTP_INTERNAL_ADDR=":9090"
EXPOSE 8080 9090
# SIGTERM starts the graceful drain (docs/operations.md); give the container
# more than shutdown.timeout (default 25s) before it is killed.
STOPSIGNAL SIGTERM
# The image has no curl: the binary probes its own /readyz (3s timeout).
HEALTHCHECK --interval=10s --timeout=5s --start-period=10s --retries=3 CMD ["/piped", "healthcheck"]
ENTRYPOINT ["/piped"]
