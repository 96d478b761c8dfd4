# syntax=docker/dockerfile:1
#
# One image for every Tollgate component: `tollgate issuer|authz|books|gateway|up`.
# Build with `make image` (or docker build --build-arg VERSION=... --build-arg COMMIT=... .).

FROM --platform=$BUILDPLATFORM golang:1.26.8 AS build
WORKDIR /src
# Modules first, so a source change does not download them again.
COPY go.mod go.sum ./
RUN --mount=type=cache,target=/go/pkg/mod go mod download
COPY . .
ARG TARGETOS
ARG TARGETARCH
ARG VERSION=dev
ARG COMMIT=unknown
RUN --mount=type=cache,target=/go/pkg/mod \
    --mount=type=cache,target=/root/.cache/go-build \
    CGO_ENABLED=0 GOOS=$TARGETOS GOARCH=$TARGETARCH \
    go build -trimpath -ldflags "-s -w -X main.version=${VERSION} -X main.commit=${COMMIT}" \
      -o /out/tollgate ./cmd/tollgate

FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/tollgate /tollgate
# The dev gateway's configuration (`tollgate gateway`); in Kubernetes the chart
# runs the real Envoy with its own bootstrap instead.
COPY envoy/envoy.yaml /etc/tollgate/envoy.yaml
ENV TOLLGATE_GATEWAY_CONFIG=/etc/tollgate/envoy.yaml
WORKDIR /home/nonroot
USER 65532:65532
ENTRYPOINT ["/tollgate"]
