# The messages service: node runs server.ts itself (signals reach it) as the unprivileged daemon user.
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
# The code stays root-owned and read-only to the service; it writes only certs/ (a generated cert) and logs/.
RUN mkdir -p certs logs && chown daemon:daemon certs logs

ENV NODE_ENV=production
EXPOSE 5000
# No curl in the image: node probes /healthz itself; the certificate is not checked, only that the server answers 200.
HEALTHCHECK --interval=30s --timeout=5s --start-period=15s --retries=3 \
  CMD ["node", "-e", "require('node:https').get({host: '127.0.0.1', port: process.env.MESSAGES_PORT || 5000, path: '/healthz', rejectUnauthorized: false, timeout: 4000}, (res) => process.exit(res.statusCode === 200 ? 0 : 1)).on('error', () => process.exit(1))"]

# certs/ and logs/ are usually mounted from the host, owned by whoever cloned the repository: started as root, the
# entrypoint gives those two directories to the daemon group (group-writable, owner unchanged), then becomes daemon.
# Started as any other user (--user), it changes nothing and runs node directly.
ENTRYPOINT ["/bin/sh", "-c", "if [ \"$(id -u)\" = 0 ]; then chgrp daemon certs logs && chmod g+rwx certs logs && exec setpriv --reuid=daemon --regid=daemon --clear-groups \"$@\"; fi; exec \"$@\"", "entrypoint"]
CMD ["node", "--require", "tsx/cjs", "server.ts"]
