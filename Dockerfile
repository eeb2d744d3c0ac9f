# Hooks gateway: python:3.11-slim, non-root, config by mount (/etc/gateway/config.toml) or
# GATEWAY_<SECTION>_<KEY> environment variables, SQLite data in the /var/lib/gateway volume.
FROM python:3.11-slim AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
COPY pyproject.toml README.md ./
COPY gateway ./gateway
RUN python -m venv /opt/gateway \
 && /opt/gateway/bin/pip install --upgrade pip \
 && /opt/gateway/bin/pip install .

FROM python:3.11-slim
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
  CMD python -c "import os,sys,urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/healthz' % os.environ.get('GATEWAY_SERVER_PORT', '8080'), timeout=2); sys.exit(0)" || exit 1
# Mount a config at /etc/gateway/config.toml, or configure entirely through the environment
# (at least GATEWAY_AUTH_HS256_SECRET or GATEWAY_AUTH_JWKS_FILE, and in production
# GATEWAY_SERVER_MODE=production with GATEWAY_SECURITY_ENCRYPTION_KEY).
CMD ["sh", "-c", "if [ -f /etc/gateway/config.toml ]; then exec gateway serve --config /etc/gateway/config.toml; else exec gateway serve; fi"]
