# Sourced: start_rabbitmq / stop_rabbitmq — a throwaway rabbitmq-server on
# free loopback ports with its own data directory and Erlang port mapper;
# exports MDP_TEST_AMQP_URL.
# (set MDP_RABBIT_PORT to choose the AMQP port, e.g. to restart on the same one)
command -v free_port >/dev/null 2>&1 || free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'; }

start_rabbitmq() {
  MDP_RABBIT_DIR=$(mktemp -d -t mdp-rabbit.XXXXXX)
  local amqp dist epmd
  amqp=${MDP_RABBIT_PORT:-$(free_port)}; dist=$(free_port); epmd=$(free_port)
  export ERL_EPMD_PORT=$epmd ERL_EPMD_ADDRESS=127.0.0.1
  export RABBITMQ_NODENAME="mdp-test-$$@localhost"
  export RABBITMQ_NODE_IP_ADDRESS=127.0.0.1 RABBITMQ_NODE_PORT=$amqp RABBITMQ_DIST_PORT=$dist
  export RABBITMQ_MNESIA_BASE=$MDP_RABBIT_DIR/mnesia RABBITMQ_LOG_BASE=$MDP_RABBIT_DIR/log
  export RABBITMQ_CONFIG_FILE=$MDP_RABBIT_DIR/rabbitmq RABBITMQ_ENABLED_PLUGINS_FILE=$MDP_RABBIT_DIR/enabled_plugins
  export RABBITMQ_PID_FILE=$MDP_RABBIT_DIR/rabbit.pid HOME=${HOME:-/root}
  echo '[].' > "$MDP_RABBIT_DIR/enabled_plugins"
  printf 'loopback_users = none\nlisteners.tcp.default = 127.0.0.1:%s\n' "$amqp" > "$MDP_RABBIT_DIR/rabbitmq.conf"
  export ERL_CRASH_DUMP=$MDP_RABBIT_DIR/erl_crash.dump
  # The Debian wrapper in /usr/sbin switches to the rabbitmq user; run the
  # server script itself so it can use our private directory.
  local server=/usr/lib/rabbitmq/bin/rabbitmq-server
  [ -x "$server" ] || server=rabbitmq-server
  "$server" > "$MDP_RABBIT_DIR/server.log" 2>&1 &
  MDP_RABBIT_PID=$!
  local started=0
  for _ in $(seq 120); do
    if (exec 3<>"/dev/tcp/127.0.0.1/$amqp") 2>/dev/null; then started=1; break; fi
    kill -0 "$MDP_RABBIT_PID" 2>/dev/null || break
    sleep 0.5
  done
  if [ $started = 0 ]; then
    tail -30 "$MDP_RABBIT_DIR/server.log" >&2
    echo "rabbitmq-server did not start" >&2
    return 1
  fi
  export MDP_TEST_AMQP_URL="amqp://guest:guest@127.0.0.1:$amqp/%2f"
  echo "test rabbitmq: $MDP_TEST_AMQP_URL" >&2
}

stop_rabbitmq() {
  if [ -n "${MDP_RABBIT_PID:-}" ]; then
    /usr/lib/rabbitmq/bin/rabbitmqctl -n "$RABBITMQ_NODENAME" stop >/dev/null 2>&1 || kill "$MDP_RABBIT_PID" 2>/dev/null
    wait "$MDP_RABBIT_PID" 2>/dev/null
    pkill -f "epmd.*-port $ERL_EPMD_PORT" 2>/dev/null
    epmd -port "$ERL_EPMD_PORT" -kill >/dev/null 2>&1
  fi
  [ -n "${MDP_RABBIT_DIR:-}" ] && rm -rf "$MDP_RABBIT_DIR"
  return 0
}
