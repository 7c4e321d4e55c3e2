"""While the sink owns the embedded store: every README query through `its sql`, clickhouse-connect over
HTTP, read-only enforcement, authentication, metrics and health."""

from __future__ import annotations

import re
import subprocess
import time
import urllib.request
import uuid
from collections import Counter
from collections.abc import Iterator

import pytest
from confluent_kafka import Producer

from connectors.clickhouse import sample_data
from schemas import topics as t
from tests.integration.sink_support import ITS, ROOT, SinkEnv, create_topics, stop, wait_for_endpoint

pytestmark = pytest.mark.integration

RECORDS = 20_000
PASSWORD = "s3cret-analyst"


def readme_queries() -> list[str]:
    """The ```sql blocks of the README's "Ready queries" section, in order."""
    text = (ROOT / "README.md").read_text()
    section = text.split("### Ready queries", 1)[1].split("\n## ", 1)[0]
    return [q.strip() for q in re.findall(r"```sql\n(.*?)```", section, re.S)]


@pytest.fixture(scope="module")
def running(
    kafka_broker, schema_registry, tmp_path_factory
) -> Iterator[tuple[SinkEnv, subprocess.Popen[str]]]:
    prefix = f"ep{uuid.uuid4().hex[:6]}."
    create_topics(kafka_broker.bootstrap, prefix, partitions=3)
    counts = Counter(
        sample_data.produce(
            {"bootstrap.servers": kafka_broker.bootstrap},
            schema_registry,
            sample_data.generate(RECORDS, seed=3),
            prefix,
        )
    )
    bad = Producer({"bootstrap.servers": kafka_broker.bootstrap})
    for i in range(3):  # undecodable: the dead-letter query has rows to show
        bad.produce(prefix + t.EVENTS, b"\x00\x00\x00\x00\x02truncated" + bytes([i]), key=b"cam-0002")
    assert bad.flush(30) == 0
    env = SinkEnv(
        tmp_path_factory.mktemp("endpoint"),
        kafka_broker.bootstrap,
        schema_registry,
        prefix,
        extra={"ITS_SINK__QUERY_PASSWORD": PASSWORD, "ITS_SINK__BATCH_ROWS": "5000"},
    )
    proc = env.start()
    try:
        wait_for_endpoint(env, proc)
        deadline = time.monotonic() + 120
        while env.sql("SELECT count() AS n FROM detections")[0]["n"] < counts[t.DETECTIONS]:
            assert time.monotonic() < deadline, "the sink did not catch up in 120 s"
            time.sleep(1)
        yield env, proc
    finally:
        assert stop(proc) == 0, env.last_log()


def test_readme_has_at_least_twelve_queries() -> None:
    assert len(readme_queries()) >= 12


@pytest.mark.parametrize("number", range(len(readme_queries())))
def test_readme_query_returns_rows_through_its_sql(running, number: int) -> None:
    env, proc = running
    query = readme_queries()[number]
    rows = env.sql(query)  # the store is locked by the sink: its sql must go through the endpoint
    assert proc.poll() is None
    assert rows, f"README query {number + 1} returned no rows:\n{query}"


def test_clickhouse_connect_over_http_and_read_only(running) -> None:
    import clickhouse_connect
    from clickhouse_connect.driver.exceptions import DatabaseError

    env, proc = running
    info = wait_for_endpoint(env, proc)
    host, port = info["url"].removeprefix("http://").split(":")
    client = clickhouse_connect.get_client(host=host, port=int(port), username="default", password=PASSWORD)
    try:
        assert client.query("SELECT count() FROM cameras FINAL").result_rows == [(40,)]
        top = client.query(
            "SELECT camera_id, count() AS n FROM events WHERE camera_id = {cam:String} GROUP BY camera_id",
            parameters={"cam": "cam-0003"},
        )
        assert top.result_rows and top.result_rows[0][0] == "cam-0003"
        assert client.command("SHOW TABLES LIKE 'traffic%'")
        before = client.query("SELECT count() FROM events").result_rows[0][0]
        for statement in (
            "INSERT INTO events (event_id) VALUES ('x')",
            "DROP TABLE events",
            "ALTER TABLE events DELETE WHERE 1",
            "CREATE TABLE x (a UInt8) ENGINE = Memory",
            "TRUNCATE TABLE events",
            "SELECT 1; DROP TABLE events",
            "SET readonly = 0",
            "SELECT * FROM events SETTINGS readonly = 0",
        ):
            with pytest.raises(DatabaseError) as info_exc:
                client.command(statement)
            assert "164" in str(info_exc.value) or "READONLY" in str(info_exc.value).upper(), statement
        assert client.query("SELECT count() FROM events").result_rows[0][0] == before
    finally:
        client.close()
    with pytest.raises(DatabaseError, match="Authentication failed"):
        clickhouse_connect.get_client(host=host, port=int(port), username="default", password="wrong")


def test_its_sql_refuses_writes_and_metrics_and_health(running) -> None:
    env, _proc = running
    done = env.its("sql", "DROP TABLE detections")
    assert done.returncode == 1 and "read-only" in done.stderr
    assert env.sql("SELECT count() AS n FROM detections")[0]["n"] > 0
    log = env.last_log()
    assert "Traceback" not in log


def test_metrics_and_healthz(running) -> None:
    env, proc = running
    metrics = wait_for_endpoint(env, proc)["metrics"]
    body = urllib.request.urlopen(f"{metrics}/metrics", timeout=10).read().decode()
    for name in (
        'its_sink_rows_total{table="detections"}',
        'its_sink_bytes_total{table="events"}',
        "its_sink_batch_seconds_bucket",
        "its_sink_batches_total",
        "its_sink_lag{",
    ):
        assert name in body, name
    health = urllib.request.urlopen(f"{metrics}/healthz", timeout=10).read().decode()
    assert '"status": "ok"' in health and "assigned_partitions" in health


def test_its_sql_without_sink_opens_the_store(running, tmp_path) -> None:
    """Sanity of the fallback: a store nobody holds is opened directly (no endpoint involved)."""
    done = subprocess.run(
        [ITS, "sql", "-f", "json", "SELECT 1 AS one"],
        cwd=ROOT,
        env={**running[0].env(), "ITS_CLICKHOUSE_URL": f"chdb://{tmp_path / 'free'}"},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0 and '"one":1' in done.stdout
