# Multi-stage build: a static roomproxy binary on a minimal image, run as a
# non-root user, with CA certificates for verifying Upstash's TLS certificate.
FROM golang:1.26-bookworm AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
RUN CGO_ENABLED=0 go build -trimpath -ldflags="-s -w" -o /out/roomproxy ./cmd/roomproxy

FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/roomproxy /roomproxy
# distroless/static ships /etc/ssl/certs/ca-certificates.crt.
USER nonroot:nonroot
# Without MONGO_URL the embedded room store is a file in the working
# directory (ROOM_STORE_PATH): nonroot's home, which it can write ("/" it
# cannot). The base image sets it already; stated here so as not to depend on
# that. Mount a volume there to keep the store, or set MONGO_URL as
# production does.
WORKDIR /home/nonroot
# In a container the proxy listens on all interfaces, so PROXY_PASSWORD is required.
ENV PROXY_ADDR=0.0.0.0:6380 METRICS_ADDR=0.0.0.0:9380 LOG_FORMAT=json
EXPOSE 6380 9380
ENTRYPOINT ["/roomproxy"]
