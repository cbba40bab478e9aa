# Piped node image: a static binary on a distroless base.
#   docker build -t piped .
#   docker run -p 8080:8080 -e PIPED_NODE_ID=1 -e PIPED_AMQP_URL=amqp://user:pass@rabbit:5672/ piped
FROM golang:1.26 AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
RUN CGO_ENABLED=0 go build -trimpath -ldflags="-s -w" -o /piped .

FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /piped /piped
EXPOSE 8080
# SIGTERM starts the graceful drain (docs/operations.md); give the container
# more than shutdown.timeout (default 25s) before it is killed.
STOPSIGNAL SIGTERM
ENTRYPOINT ["/piped"]
