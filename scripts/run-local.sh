#!/usr/bin/env bash
# Installs and starts Storefront on its embedded default: no servers needed.
# Products live in an embedded MongoDB-compatible server (nx-27017, data in var/mongo),
# accounts in SQLite (var/storefront.db, migrated with `flask db upgrade`), mail is logged to
# the console, the catalog is seeded (idempotent), the outbox relay delivers events to the
# consumers in process, and gunicorn serves
# http://localhost:${API_PORT:-3000} on loopback only (development mode; API_HOST beyond
# loopback needs ALLOW_PUBLIC_BIND=true, see .env.example).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
EXTRAS=embedded source scripts/bootstrap.sh  # the app and the nx-27017 server, no test tools

[ -f .env ] && set -a && source .env && set +a
export API_PORT=${API_PORT:-3000}
EMBEDDED_MONGO_PORT=${EMBEDDED_MONGO_PORT:-27017}
export MONGODB_URI=${MONGODB_URI:-mongodb://127.0.0.1:${EMBEDDED_MONGO_PORT}/products}

mkdir -p var/mongo
.venv/bin/nx-27017 --data-dir var/mongo --port "$EMBEDDED_MONGO_PORT" \
  --log-file var/nx-27017.log --pid-file var/nx-27017.pid >/dev/null 2>&1 &
mongo_pid=$!
trap 'kill "$mongo_pid" 2>/dev/null || true' EXIT
.venv/bin/python - <<PY
import time, pymongo, sys
client = pymongo.MongoClient("$MONGODB_URI", serverSelectionTimeoutMS=200)
for _ in range(100):
    try:
        client.admin.command("ping"); sys.exit(0)
    except pymongo.errors.PyMongoError:
        time.sleep(0.1)
sys.exit("embedded MongoDB did not start; see var/nx-27017.log (is port $EMBEDDED_MONGO_PORT taken? set EMBEDDED_MONGO_PORT)")
PY

.venv/bin/flask --app wsgi db upgrade
.venv/bin/flask --app wsgi seed
# The outbox relay (README "Events"): without RABBITMQ_URL it hands each event to the consumers
# in its own process (order confirmations, the audit trail). Its log: var/relay.log.
METRICS_PORT=0 .venv/bin/flask --app wsgi events relay >>var/relay.log 2>&1 &
relay_pid=$!
trap 'kill "$relay_pid" "$mongo_pid" 2>/dev/null || true' EXIT
echo "Storefront on http://localhost:${API_PORT}/v1/products  (docs: http://localhost:${API_PORT}/api)"
.venv/bin/gunicorn --config gunicorn.conf.py wsgi:app
