# Sourced: start_redis / stop_redis — a throwaway redis-server on a free
# loopback port; exports MDP_TEST_REDIS_URL.
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'; }

start_redis() {
  MDP_REDIS_DIR=$(mktemp -d -t mdp-redis.XXXXXX)
  local port; port=$(free_port)
  redis-server --port "$port" --bind 127.0.0.1 --save '' --appendonly no \
    --dir "$MDP_REDIS_DIR" --daemonize no --loglevel warning \
    > "$MDP_REDIS_DIR/redis.log" 2>&1 &
  MDP_REDIS_PID=$!
  for _ in $(seq 100); do
    redis-cli -p "$port" ping >/dev/null 2>&1 && break
    sleep 0.1
  done
  redis-cli -p "$port" ping >/dev/null || { cat "$MDP_REDIS_DIR/redis.log" >&2; echo "redis-server did not start" >&2; return 1; }
  export MDP_TEST_REDIS_URL="redis://127.0.0.1:$port/"
  echo "test redis: $MDP_TEST_REDIS_URL" >&2
}

stop_redis() {
  [ -n "${MDP_REDIS_PID:-}" ] && kill "$MDP_REDIS_PID" 2>/dev/null && wait "$MDP_REDIS_PID" 2>/dev/null
  [ -n "${MDP_REDIS_DIR:-}" ] && rm -rf "$MDP_REDIS_DIR"
  return 0
}
