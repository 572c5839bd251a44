#!/bin/sh
# Health check of the messages image (Dockerfile HEALTHCHECK and the Compose file's healthcheck): exit 0 when /healthz
# answers 200. No curl in the image: node probes, as daemon when started as root (node never runs as root here);
# the certificate is not checked, only that the server answers.
probe="require('node:https').get({ host: '127.0.0.1', port: process.env.MESSAGES_PORT || 5000, path: '/healthz',
  rejectUnauthorized: false, timeout: 4000 }, (res) => process.exit(res.statusCode === 200 ? 0 : 1))
  .on('timeout', () => process.exit(1)).on('error', () => process.exit(1))"
[ "$(id -u)" = 0 ] || exec node -e "$probe"
exec setpriv --reuid=daemon --regid=daemon --clear-groups --no-new-privs --bounding-set=-all -- node -e "$probe"
