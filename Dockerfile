# Piped node image: a static binary on a distroless base.
#   docker build -t piped .
#   docker run -p 8080:8080 -e PIPED_NODE_ID=1 -e PIPED_AMQP_URL=amqp://user:pass@rabbit:5672/ piped
# Clients use 8080 (/api/ only). /healthz, /readyz and /metrics are on 9090,
# the internal listener: publish it only to your probes and Prometheus, never
# through the public proxy (docs/operations.md#internal-listener).
FROM golang:1.26 AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
RUN CGO_ENABLED=0 go build -trimpath -ldflags="-s -w" -o /piped .

FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /piped /piped
ENV PIPED_HTTP_INTERNAL_ADDR=":9090"
EXPOSE 8080 9090
# SIGTERM starts the graceful drain (docs/operations.md); give the container
# more than shutdown.timeout (default 25s) before it is killed.
STOPSIGNAL SIGTERM
ENTRYPOINT ["/piped"]
