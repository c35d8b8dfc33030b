# Sealtrail container images: one builder, one small image per component.
#
#   target          image (deploy/ names)                  contents
#   signer          sealtrail-signer                        distroless cc, uid 65532: sealtrail-signer
#   ingester        sealtrail-ingester                      distroless cc, uid 65532: sealtrail-ingester
#   verify          sealtrail-verify                        distroless cc, uid 65532: sealtrail-verify
#   cloudwatch      sealtrail-cloudwatch                    distroless cc, uid 65532: sealtrail-cloudwatch
#                                                           (the EKS source: deploy/base/cloudwatch)
#   signer-pkcs11   sealtrail-signer-pkcs11                 Debian slim, uid 65532: sealtrail-signer, and
#                                                           /opt/hsm/lib/ for the HSM vendor's PKCS#11 module
#   signer-softhsm  (tests and demos only, never production) signer-pkcs11 + SoftHSM2 as the module
#
# Build and push (docs/runbooks/install-eks.md step 0 has the ECR version):
#
#   for t in signer ingester verify cloudwatch; do
#     docker build --target "$t" -t "$REGISTRY/sealtrail-$t:$TAG" . && docker push "$REGISTRY/sealtrail-$t:$TAG"
#   done
#
# `docker build` without --target builds the signer image. Needs BuildKit (the default
# builder since Docker 23) for the cache mounts. The builder stage is shared: the four
# binaries are compiled once. Each runtime image holds one binary, runs as the non-root
# user 65532 (the uid the manifests' securityContext sets) and has no shell or package
# manager (distroless). Pin the base images by digest for a reproducible, reviewable
# supply chain:
#   --build-arg RUST_IMAGE=rust:1-bookworm@sha256:... --build-arg RUNTIME_IMAGE=gcr.io/distroless/cc-debian12:nonroot@sha256:...
#
# PKCS#11: the signer loads (dlopen) the HSM vendor's module given by --pkcs11-module
# (deploy/overlays/pkcs11: /opt/hsm/lib/libpkcs11.so). Vendor modules are closed-source
# and often need more of the OS than distroless has, so their image starts from Debian slim:
#
#   FROM $REGISTRY/sealtrail-signer-pkcs11:$TAG
#   USER 0
#   COPY vendor-client/lib/libvendorpkcs11.so /opt/hsm/lib/libpkcs11.so
#   # RUN apt-get update && apt-get install -y --no-install-recommends <what the vendor's module links to>
#   USER 65532:65532
#
# (or mount the module instead: see docs/runbooks/install-self-managed-pkcs11.md, step 3).
# `signer-softhsm` below is that pattern with SoftHSM2 as the module: for trying the pkcs11
# overlay end to end without an HSM. A SoftHSM token is a file: never use it for a real log.

ARG RUST_IMAGE=rust:1-bookworm
ARG RUNTIME_IMAGE=gcr.io/distroless/cc-debian12:nonroot
ARG PKCS11_BASE_IMAGE=debian:bookworm-slim

# ---------------------------------------------------------------------------------------
FROM ${RUST_IMAGE} AS builder
# protoc for proto/build.rs (it falls back to a vendored protoc when PROTOC is unset).
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends protobuf-compiler \
 && rm -rf /var/lib/apt/lists/*
ENV PROTOC=/usr/bin/protoc \
    CARGO_TERM_COLOR=never
WORKDIR /src
# The workspace only (.dockerignore admits nothing else into the build context).
COPY Cargo.toml Cargo.lock ./
COPY core core
COPY proto proto
COPY store store
COPY ops ops
COPY signer signer
COPY ingester ingester
COPY cloudwatch cloudwatch
COPY verifier verifier
COPY tests tests
# --locked: exactly the dependency versions of Cargo.lock, as CI tests them.
RUN --mount=type=cache,target=/usr/local/cargo/registry,sharing=locked \
    --mount=type=cache,target=/src/target,sharing=locked \
    cargo build --release --locked \
      -p sealtrail-signer -p sealtrail-ingester -p sealtrail-verifier -p sealtrail-cloudwatch \
 && mkdir -p /out \
 && cp target/release/sealtrail-signer target/release/sealtrail-ingester \
       target/release/sealtrail-verify target/release/sealtrail-cloudwatch /out/

# ---------------------------------------------------------------------------------------
# The signer for a PKCS#11 HSM: Debian slim (glibc, apt for the vendor module's own
# dependencies), the same non-root uid, and an empty /opt/hsm/lib for the module.
FROM ${PKCS11_BASE_IMAGE} AS signer-pkcs11
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --gid 65532 nonroot \
 && useradd --uid 65532 --gid 65532 --no-create-home --home-dir /nonexistent \
      --shell /usr/sbin/nologin nonroot \
 && mkdir -p /opt/hsm/lib /etc/hsm
LABEL org.opencontainers.image.title="sealtrail-signer-pkcs11" \
      org.opencontainers.image.description="Sealtrail signer, base for images with an HSM vendor's PKCS#11 module" \
      org.opencontainers.image.licenses="Apache-2.0"
COPY --from=builder /out/sealtrail-signer /usr/local/bin/sealtrail-signer
USER 65532:65532
EXPOSE 7443 9090
ENTRYPOINT ["/usr/local/bin/sealtrail-signer"]
CMD ["--help"]

# Example only: SoftHSM2 in place of a vendor module (tokens live in the directory named by
# the SoftHSM configuration that SOFTHSM2_CONF points to, e.g. a volume). Not for production.
FROM signer-pkcs11 AS signer-softhsm
USER 0
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends softhsm2 \
 && rm -rf /var/lib/apt/lists/* \
 && ln -s /usr/lib/softhsm/libsofthsm2.so /opt/hsm/lib/libpkcs11.so
USER 65532:65532

# ---------------------------------------------------------------------------------------
# distroless/cc: glibc, libgcc_s, CA certificates (S3, KMS, STS over HTTPS), tzdata; the
# binaries link nothing else. The :nonroot tag runs as 65532:65532.
FROM ${RUNTIME_IMAGE} AS runtime
LABEL org.opencontainers.image.title="sealtrail" \
      org.opencontainers.image.description="Tamper-evident Kubernetes audit trail" \
      org.opencontainers.image.licenses="Apache-2.0"
USER 65532:65532

FROM runtime AS verify
COPY --from=builder /out/sealtrail-verify /usr/local/bin/sealtrail-verify
ENTRYPOINT ["/usr/local/bin/sealtrail-verify"]
CMD ["--help"]

FROM runtime AS ingester
COPY --from=builder /out/sealtrail-ingester /usr/local/bin/sealtrail-ingester
EXPOSE 8443 9090
ENTRYPOINT ["/usr/local/bin/sealtrail-ingester"]
CMD ["--help"]

# The EKS source: reads the cluster's audit log from CloudWatch Logs and posts it to the
# ingester's webhook (deploy/base/cloudwatch, aws-kms overlay only). Metrics port only.
FROM runtime AS cloudwatch
COPY --from=builder /out/sealtrail-cloudwatch /usr/local/bin/sealtrail-cloudwatch
EXPOSE 9090
ENTRYPOINT ["/usr/local/bin/sealtrail-cloudwatch"]
CMD ["--help"]

FROM runtime AS signer
COPY --from=builder /out/sealtrail-signer /usr/local/bin/sealtrail-signer
EXPOSE 7443 9090
ENTRYPOINT ["/usr/local/bin/sealtrail-signer"]
CMD ["--help"]
