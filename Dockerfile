# The iomtnode node image. How to run it: deploy/README.md.
#
# Two stages: the build stage installs the node and its dependencies (binary wheels, no
# compiler) into a virtual environment; the runtime stage copies only that environment.
# The node runs as uid 10001 with its data in the volume /var/lib/iomtnode; its key comes at
# run time (a file from a secret or made on first start), never from a layer of this image.

FROM python:3.12-slim-bookworm AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1
WORKDIR /src
# LICENSE*: the license file goes into the wheel where the checkout has one
COPY pyproject.toml README.md LICENSE* ./
COPY iomtnode/ iomtnode/
RUN python -m venv /opt/iomtnode/venv \
    && /opt/iomtnode/venv/bin/pip install --no-cache-dir /src


FROM python:3.12-slim-bookworm
LABEL org.opencontainers.image.title="iomtnode" \
      org.opencontainers.image.description="A permissioned proof-of-authority blockchain node for the Internet of Medical Things" \
      org.opencontainers.image.licenses="Apache-2.0"

# a fixed uid and gid, so volumes, Kubernetes' runAsUser and fsGroup can name them
RUN groupadd --system --gid 10001 iomtnode \
    && useradd --system --uid 10001 --gid 10001 --home-dir /var/lib/iomtnode \
       --no-create-home --shell /usr/sbin/nologin iomtnode \
    && mkdir -p /var/lib/iomtnode \
    && chown 10001:10001 /var/lib/iomtnode \
    && chmod 0700 /var/lib/iomtnode

COPY --from=build /opt/iomtnode/venv /opt/iomtnode/venv
COPY deploy/docker/entrypoint.sh /usr/local/bin/iomtnode-entrypoint

# Settings (every IOMTNODE_<SETTING> overrides the home's config.toml); the home is a
# directory inside the volume, made by the entrypoint on first start.
ENV PATH=/opt/iomtnode/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    IOMTNODE_HOME=/var/lib/iomtnode/node \
    IOMTNODE_API_LISTEN=0.0.0.0:7545 \
    IOMTNODE_P2P_LISTEN=0.0.0.0:7546 \
    IOMTNODE_METRICS_LISTEN=0.0.0.0:9464

USER 10001:10001
WORKDIR /var/lib/iomtnode
VOLUME ["/var/lib/iomtnode"]
# client API (JSON-RPC over websocket), peer-to-peer, Prometheus metrics
EXPOSE 7545 7546 9464

# ready: the node answers, is caught up and (unless it is its chain's only authority) has a peer
HEALTHCHECK --interval=15s --timeout=10s --start-period=60s --retries=3 \
    CMD ["iomtnode", "status", "--ready"]

ENTRYPOINT ["/usr/local/bin/iomtnode-entrypoint"]
