# Sourced by scripts/test: start_test_servers / stop_test_servers start and
# stop every server in scripts/servers/*.sh (throwaway, loopback, free ports)
# and export their URLs (MDP_TEST_REDIS_URL, MDP_TEST_AMQP_URL).
for f in "$(dirname "${BASH_SOURCE[0]}")"/servers/*.sh; do
  # shellcheck source=/dev/null
  source "$f"
done

MDP_TEST_SERVERS=(redis rabbitmq)

start_test_servers() {
  local s
  for s in "${MDP_TEST_SERVERS[@]}"; do
    "start_$s" || return 1
  done
}

stop_test_servers() {
  local s
  for s in "${MDP_TEST_SERVERS[@]}"; do
    "stop_$s" || true
  done
}
