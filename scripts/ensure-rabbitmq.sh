#!/usr/bin/env bash
# Makes sure a RabbitMQ broker answers at AMQP_URL (default amqp://guest:guest@127.0.0.1:5672/%2f).
# Starts a local rabbitmq-server when one is installed but stopped, installs it from Debian's
# packages when apt-get is usable, and otherwise fails with a message saying exactly what is missing.
set -euo pipefail

url="${AMQP_URL:-amqp://guest:guest@127.0.0.1:5672/%2f}"
hostport="${url#*://}"; hostport="${hostport#*@}"; hostport="${hostport%%/*}"
host="${hostport%:*}"; port="${hostport##*:}"
[ "$host" = "$hostport" ] && port=5672
[ -n "$host" ] || host=127.0.0.1

answers() { (exec 3<>"/dev/tcp/$host/$port") 2>/dev/null; }

wait_for_broker() {
  for _ in $(seq 1 90); do
    if answers; then return 0; fi
    sleep 1
  done
  return 1
}

if answers; then
  echo "RabbitMQ answers at $host:$port"
  exit 0
fi

case "$host" in
  127.0.0.1|localhost|::1) ;;
  *) echo "error: RabbitMQ does not answer at $host:$port (AMQP_URL=$url), and it is not local, so it cannot be started here." >&2
     exit 1 ;;
esac

if ! command -v rabbitmq-server >/dev/null 2>&1 && [ ! -x /usr/sbin/rabbitmq-server ]; then
  if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
    echo "RabbitMQ is not installed: installing Debian's rabbitmq-server package..."
    apt-get update -qq >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq rabbitmq-server >/dev/null
  else
    echo "error: RabbitMQ does not answer at $host:$port and is not installed." >&2
    echo "       Install it (Debian/Ubuntu: 'sudo apt-get install rabbitmq-server') or point AMQP_URL at a broker." >&2
    exit 1
  fi
fi

echo "RabbitMQ is installed but not running: starting it (rabbitmq-server -detached)..."
PATH="$PATH:/usr/sbin" rabbitmq-server -detached >/dev/null 2>&1 || true
if wait_for_broker; then
  # The AMQP port opens a little before the broker accepts logins; give it a moment.
  PATH="$PATH:/usr/sbin" timeout 60 rabbitmqctl await_startup >/dev/null 2>&1 || sleep 3
  echo "RabbitMQ answers at $host:$port"
  exit 0
fi
echo "error: started rabbitmq-server but nothing answers at $host:$port after 90 s; see /var/log/rabbitmq/." >&2
exit 1
