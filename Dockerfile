# Hooks gateway: non-root, config by mount (/etc/gateway/config.toml) or GATEWAY_<SECTION>_<KEY>
# environment variables, SQLite data in the /var/lib/gateway volume.
# BASE is any image with python3 (3.11+) and its venv module, and groupadd/useradd: the default
# below, or a Debian one made without a registry (`make image`, .ci/image, docs/DEPLOYING.md).
ARG BASE=python:3.11-slim

FROM ${BASE} AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
# A package index other than PyPI, for this stage only (never in the final image).
ARG PIP_INDEX_URL=
WORKDIR /src
COPY pyproject.toml ./
# The dependencies (and the build backend) first, in a layer of their own that a change to the
# code alone reuses. An optional secret `pip_cert` (a CA bundle, e.g. of a TLS-inspecting
# proxy) is what pip trusts here; it leaves no trace in any layer.
RUN --mount=type=secret,id=pip_cert,required=false \
    if [ -s /run/secrets/pip_cert ]; then export PIP_CERT=/run/secrets/pip_cert; fi \
 && if [ -z "$PIP_INDEX_URL" ]; then unset PIP_INDEX_URL; fi \
 && python3 -m venv /opt/gateway \
 && /opt/gateway/bin/pip install --quiet --upgrade pip \
 && python3 -c 'import tomllib; p = tomllib.load(open("pyproject.toml", "rb")); \
print("\n".join(p["project"]["dependencies"] + p["build-system"]["requires"]))' >/tmp/requirements.txt \
 && /opt/gateway/bin/pip install --quiet -r /tmp/requirements.txt
COPY README.md ./
COPY gateway ./gateway
RUN /opt/gateway/bin/pip install --quiet --no-deps --no-build-isolation .

FROM ${BASE}
RUN groupadd --system --gid 10001 gateway \
 && useradd --system --uid 10001 --gid gateway --home-dir /var/lib/gateway --shell /usr/sbin/nologin gateway \
 && mkdir -p /var/lib/gateway /etc/gateway \
 && chown gateway:gateway /var/lib/gateway
COPY --from=build /opt/gateway /opt/gateway
COPY config.example.toml /etc/gateway/config.example.toml
ENV PATH=/opt/gateway/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    GATEWAY_SERVER_HOST=0.0.0.0 \
    GATEWAY_SERVER_PORT=8080 \
    GATEWAY_DATABASE_URL=sqlite:////var/lib/gateway/gateway.db
USER gateway
WORKDIR /var/lib/gateway
VOLUME ["/var/lib/gateway"]
EXPOSE 8080
HEALTHCHECK --interval=15s --timeout=3s --start-period=10s --retries=3 \
  CMD python3 -c "import os,sys,urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/healthz' % os.environ.get('GATEWAY_SERVER_PORT', '8080'), timeout=2); sys.exit(0)" || exit 1
# Mount a config at /etc/gateway/config.toml, or configure entirely through the environment
# (at least GATEWAY_AUTH_HS256_SECRET or GATEWAY_AUTH_JWKS_FILE, and in production
# GATEWAY_SERVER_MODE=production with GATEWAY_SECURITY_ENCRYPTION_KEY).
CMD ["sh", "-c", "if [ -f /etc/gateway/config.toml ]; then exec gateway serve --config /etc/gateway/config.toml; else exec gateway serve; fi"]
