# The messages service: node runs server.ts itself (signals reach it) as the unprivileged daemon user, never as root.
# Adapt through MESSAGES_* environment variables (README "Configuration"); run as another user with --user / user:.
# Node 24 LTS on Debian 13 (trixie): Debian's security support for 13 outlasts Node 24's (April 2028); 12's has ended.
FROM node:24-trixie-slim

# openssl: on first start the service generates its localhost certificate with it; the slim image lacks it.
RUN apt-get update && apt-get install -y --no-install-recommends openssl && rm -rf /var/lib/apt/lists/*

WORKDIR /opt/messages
COPY package.json package-lock.json ./
# npm's cache goes to a directory removed in the same step: nothing of it stays in the image (no `cache clean --force`).
RUN npm ci --omit=dev --no-audit --no-fund --no-update-notifier --cache /tmp/npm-cache && rm -rf /tmp/npm-cache
COPY tsconfig.json server.ts ./
COPY lib ./lib
COPY docker/entrypoint.sh /usr/local/bin/messages-entrypoint
COPY docker/healthcheck.sh /usr/local/bin/messages-healthcheck
# The code stays root-owned and read-only to the service; it writes only certs/ (a generated cert) and logs/.
RUN mkdir -p certs logs && chown daemon:daemon certs logs \
  && chmod 0755 /usr/local/bin/messages-entrypoint /usr/local/bin/messages-healthcheck

ENV NODE_ENV=production
EXPOSE 5000
# The Compose file repeats this check: podman-compose builds OCI images, which drop HEALTHCHECK.
HEALTHCHECK --interval=30s --timeout=5s --start-period=15s --retries=3 CMD ["messages-healthcheck"]

# certs/ and logs/ are usually mounted from the host: docker/entrypoint.sh makes them usable by daemon (or stops the
# container saying what to do), then runs node as daemon; started as another user it runs node as that user.
ENTRYPOINT ["messages-entrypoint"]
CMD ["node", "--require", "tsx/cjs", "server.ts"]
