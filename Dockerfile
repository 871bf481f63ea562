# Spool container image: a static binary on an empty (scratch) runtime with
# CA certificates and a passwd entry for the non-root user, 65532.
#
# BuildKit is needed (the cache mounts below): it is the default builder of
# Docker 23+ and of `docker compose`; with an older engine or docker-compose
# 1.29 set DOCKER_BUILDKIT=1 (and COMPOSE_DOCKER_CLI_BUILD=1 for compose).
#
#   docker build -t spool:local \
#     --build-arg VERSION="$(git describe --tags --always --dirty)" \
#     --build-arg COMMIT="$(git rev-parse --short=12 HEAD)" .
#
# Both base images are build arguments so a mirror or a pinned digest can be
# substituted without editing this file.
ARG GO_IMAGE=golang:1.26-bookworm
# scratch keeps the image within its 25 MB budget (the binary is 22.5 MB);
# gcr.io/distroless/static-debian12:nonroot works too, about 2 MB larger
# (tzdata, which Spool does not need: it keeps every time in UTC).
ARG RUNTIME_IMAGE=scratch

# The builder runs on the build machine's platform and cross-compiles for
# the target (TARGETOS/TARGETARCH come from BuildKit), so multi-platform
# builds need no emulation.
FROM --platform=${BUILDPLATFORM} ${GO_IMAGE} AS build
WORKDIR /src
ENV CGO_ENABLED=0
# Modules first, in their own layer: it is rebuilt only when go.mod or
# go.sum change, not on every source edit.
COPY go.mod go.sum ./
RUN --mount=type=cache,target=/go/pkg/mod \
    go mod download
COPY . .
ARG VERSION=dev
ARG COMMIT=unknown
ARG TARGETOS
ARG TARGETARCH
# grpcnotrace (as in the Makefile): gRPC, which the OTLP trace exporters
# link, leaves out its golang.org/x/net/trace debug pages; their
# html/template would add 3 MB to the binary.
RUN --mount=type=cache,target=/go/pkg/mod \
    --mount=type=cache,target=/root/.cache/go-build \
    GOOS=${TARGETOS} GOARCH=${TARGETARCH} go build -trimpath -buildvcs=false -tags grpcnotrace \
      -ldflags "-s -w -X main.version=${VERSION} -X main.commit=${COMMIT}" \
      -o /out/spool ./cmd/spool
# The data directory, owned by the runtime user, is copied in whole because
# the runtime image has no shell to mkdir/chown with; so are the CA bundle
# (TLS to PostgreSQL and to HTTPS targets) and the user and group entries
# of nonroot (65532), which scratch lacks (distroless has the same ones).
RUN mkdir -p /out/var/lib/spool /out/etc/ssl/certs \
 && chown 65532:65532 /out/var/lib/spool && chmod 0750 /out/var/lib/spool \
 && cp /etc/ssl/certs/ca-certificates.crt /out/etc/ssl/certs/ \
 && printf 'root:x:0:0:root:/root:/sbin/nologin\nnonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin\n' >/out/etc/passwd \
 && printf 'root:x:0:\nnonroot:x:65532:\n' >/out/etc/group

FROM ${RUNTIME_IMAGE}
ARG VERSION=dev
ARG COMMIT=unknown
LABEL org.opencontainers.image.title="spool" \
      org.opencontainers.image.description="Spool: a durable asynchronous task service (HTTP API, scheduled signed webhook delivery)" \
      org.opencontainers.image.source="https://github.com/spoolhq/spool" \
      org.opencontainers.image.url="https://github.com/spoolhq/spool" \
      org.opencontainers.image.documentation="https://github.com/spoolhq/spool#containers" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${COMMIT}"
COPY --from=build /out/etc/ /etc/
COPY --from=build /out/spool /spool
COPY --from=build --chown=65532:65532 /out/var/lib/spool /var/lib/spool
# The embedded SQLite store writes only here, so the root filesystem can be
# mounted read-only; with PostgreSQL the volume stays empty.
ENV SPOOL_DATA_DIR=/var/lib/spool
VOLUME ["/var/lib/spool"]
USER 65532:65532
# 8000: the API. 9090: /metrics, /debug/pprof/, /livez, /readyz.
EXPOSE 8000 9090
# No shell in the image: the binary probes its own /readyz.
HEALTHCHECK --interval=10s --timeout=5s --start-period=10s --retries=3 \
    CMD ["/spool", "healthcheck"]
ENTRYPOINT ["/spool"]
CMD ["serve"]
