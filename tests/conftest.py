"""Shared fixtures: each real part (Kafka broker, schema registry, ClickHouse) has its own plugin module."""

pytest_plugins = [
    "tests.fixtures.kafka",
    "tests.fixtures.registry",
    "tests.fixtures.clickhouse",
]
