#!/usr/bin/env bash
# Starts the local PostgreSQL, Redis and RabbitMQ the test suite talks to when they are
# installed but down (as on the project's development and CI machines). The tests create and
# drop their own database and RabbitMQ virtual host. Elsewhere, point TEST_DATABASE_URL,
# TEST_REDIS_URL and TEST_RABBITMQ_URL at servers of your own.
set -uo pipefail

if [ -z "${TEST_DATABASE_URL:-}" ]; then
  if ! pg_isready -h 127.0.0.1 -p 5432 -q 2>/dev/null && command -v pg_ctlcluster >/dev/null; then
    pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql)" main start
    for _ in $(seq 1 30); do pg_isready -h 127.0.0.1 -p 5432 -q && break; sleep 1; done
  fi
fi

if [ -z "${TEST_REDIS_URL:-}" ]; then
  if ! redis-cli -h 127.0.0.1 -p 6379 ping >/dev/null 2>&1 && command -v redis-server >/dev/null; then
    mkdir -p /var/lib/redis /var/log/redis
    redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save "" --appendonly no \
      --dir /var/lib/redis --logfile /var/log/redis/ci.log
    for _ in $(seq 1 30); do redis-cli -h 127.0.0.1 -p 6379 ping >/dev/null 2>&1 && break; sleep 0.5; done
  fi
fi
if [ -z "${TEST_RABBITMQ_URL:-}" ]; then
  if ! (exec 3<>/dev/tcp/127.0.0.1/5672) 2>/dev/null && command -v rabbitmq-server >/dev/null; then
    rabbitmq-server -detached
    rabbitmqctl await_startup --timeout 60 >/dev/null 2>&1
  fi
fi
exit 0
