# The image Tilt builds (see Tiltfile): the tollgate binary compiled on the
# host, so a change rebuilds with the local Go build cache and ships one
# small layer. Same base, user and entrypoint as the release Dockerfile.
FROM gcr.io/distroless/static-debian12:nonroot
COPY bin/linux/tollgate /tollgate
COPY envoy/envoy.yaml /etc/tollgate/envoy.yaml
ENV TOLLGATE_GATEWAY_CONFIG=/etc/tollgate/envoy.yaml
WORKDIR /home/nonroot
USER 65532:65532
ENTRYPOINT ["/tollgate"]
