"""Camera onboarding and the audit trail on the real broker, registry and ClickHouse sink.

A token is exchanged once for a SCRAM-SHA-512 principal; reuse, expiry and an unknown token are
refused; model promotion and rollback are audited; the real sink copies every entry into the
append-only ``audit`` table, where the refusals are found.
"""

from __future__ import annotations

import gc
import json
import logging
import stat
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from connectors.clickhouse.runner import ensure_schema
from connectors.clickhouse.sink import ClickHouseSink
from infra.kafka.signing import derive_key
from infra.topics import ensure_topics
from its.onboarding import TOKEN_PREFIX, TokenRefused, TokenStore, parse_ttl, scram_mechanisms, token_hash
from processors.inference.registry import ModelRegistry
from schemas import topics as t

pytestmark = [pytest.mark.security, pytest.mark.integration]


def _its(*args: str) -> Any:
    """Run the real `its` CLI in-process (settings re-read from the environment each time)."""
    from its.cli import app
    from its.settings import get_settings

    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level  # the CLI points logging at the runner's stream
    get_settings.cache_clear()
    try:
        return CliRunner().invoke(app, list(args))
    finally:
        root.handlers[:], root.level = handlers, level
        get_settings.cache_clear()


def test_ttl_and_token_basics() -> None:
    assert [parse_ttl(x) for x in ("24h", "90", "15m", "7d", "1s")] == [86400, 90, 900, 604800, 1]
    for bad in ("0s", "-1h", "1w", "h", ""):
        with pytest.raises(ValueError):
            parse_ttl(bad)
    assert token_hash("abc") == token_hash(" abc\n") != token_hash("abd")


def test_token_register_reuse_expiry_and_promotion_land_in_the_audit_table(
    kafka_broker, schema_registry, kafka_settings, clickhouse, tmp_path: Path, monkeypatch
) -> None:
    database = clickhouse.database
    ensure_topics(kafka_settings.kafka_config(), [t.BY_NAME[t.AUDIT]])
    monkeypatch.setenv("ITS_KAFKA_BOOTSTRAP", kafka_broker.bootstrap)
    monkeypatch.setenv("ITS_SCHEMA_REGISTRY_URL", schema_registry)
    monkeypatch.setenv("ITS_DATA_DIR", str(tmp_path))
    # With the platform signing secret at hand, registration hands out the site's own signing key.
    monkeypatch.setenv("ITS_KAFKA_SECURITY__SIGNING_SECRET", "platform-secret-for-tests")
    settings = kafka_settings.model_copy(update={"schema_registry_url": schema_registry})
    cam = f"cam-{uuid.uuid4().hex[:8]}"

    # A one-second token first: it expires while the first one is used.
    short = _its("camera", "token", "create", "--camera", cam, "--ttl", "1s").stdout.strip()
    started = time.monotonic()  # the token was stamped before this: it expires within 1 s from here
    created = _its("camera", "token", "create", "--camera", cam)
    assert created.exit_code == 0, created.output
    token = created.stdout.strip()
    assert token.startswith(TOKEN_PREFIX) and len(token) >= len(TOKEN_PREFIX) + 43  # 256 bits, base64url
    # Only the hash is stored: the state is keyed by it and the token itself appears nowhere.
    states = TokenStore(settings).states()
    assert states[token_hash(token)].target == cam and token not in json.dumps(
        [str(s) for s in states.values()]
    )

    creds = tmp_path / "edge" / "creds.yaml"
    registered = _its("camera", "register", "--token", token, "--out", str(creds))
    assert registered.exit_code == 0, registered.output
    assert stat.S_IMODE(creds.stat().st_mode) == 0o600
    sec = yaml.safe_load(creds.read_text())["kafka_security"]
    assert (sec["protocol"], sec["sasl_mechanism"], sec["sasl_username"]) == (
        "SASL_SSL",
        "SCRAM-SHA-512",
        f"edge-{cam}",
    )
    assert f"password: {sec['sasl_password']}" in registered.stdout and len(sec["sasl_password"]) >= 40
    assert sec["signer"] == f"edge-{cam}"
    assert sec["signing_key"] == derive_key(b"platform-secret-for-tests", f"edge-{cam}").hex()
    assert "platform-secret-for-tests" not in creds.read_text()
    assert scram_mechanisms(settings, f"edge-{cam}") == ["SCRAM_SHA_512"]  # the broker holds the user

    reused = _its("camera", "register", "--token", token, "--out", str(tmp_path / "again.yaml"))
    assert reused.exit_code == 1 and "already used" in reused.stderr
    assert not (tmp_path / "again.yaml").exists()

    time.sleep(max(0.0, 1.05 - (time.monotonic() - started)))
    expired = _its("camera", "register", "--token", short)
    assert expired.exit_code == 1 and "expired" in expired.stderr
    bogus = TOKEN_PREFIX + uuid.uuid4().hex + uuid.uuid4().hex[:11]  # well-formed, never issued
    unknown = _its("camera", "register", "--token", bogus)
    assert unknown.exit_code == 1 and "unknown token" in unknown.stderr

    # Model promotion and rollback (of a model named after this test) are audited by the registry.
    ensure_topics(kafka_settings.kafka_config(), [t.BY_NAME[t.MODELS]])
    registry = ModelRegistry(settings)
    onnx = settings.assets_path / "models" / "yolox_nano_coco_416.onnx"
    try:
        for version in ("1", "2"):
            registry.add(onnx, cam, version, measure=False)
            registry.promote(cam, version)
        registry.rollback(cam)
    finally:
        registry.close()

    # The real sink (in-process, on a fresh database of the session store) copies its.audit.v1 into
    # the audit table, reading the topic from the start under a group of its own.
    cfg = settings.sink.model_copy(
        update={"topics": [t.AUDIT], "group_id": f"audit-{cam}", "database": database}
    )
    sink_settings = settings.model_copy(update={"sink": cfg})
    ensure_schema(clickhouse, cfg, database)
    sink = ClickHouseSink(sink_settings, clickhouse, database)
    try:
        sink.subscribe()
        deadline = time.monotonic() + 60
        while not sink.caught_up() and time.monotonic() < deadline:
            sink.poll_once(0.5)
        assert sink.caught_up() and sink.rows_by_table.get("audit", 0) >= 10, sink.rows_by_table
    finally:
        sink.close()
        del sink  # its consumer's callbacks make a cycle: collect it now, not after the broker stopped
        gc.collect()
    stranger = token_hash(bogus)[:12]
    result = clickhouse.query(
        "SELECT action, target, outcome, reason, details['token_sha256'] AS token FROM audit "
        "WHERE target LIKE {cam:String} OR (target = 'unknown' AND details['token_sha256'] = {s:String}) "
        "ORDER BY ts, _offset",
        parameters={"cam": f"{cam}%", "s": stranger},
    )
    rows = [dict(zip(result.column_names, row, strict=True)) for row in result.result_rows]
    seen = [(row["action"], row["target"], row["outcome"]) for row in rows]
    assert seen == [
        ("camera.token.create", cam, "ok"),  # the short one
        ("camera.token.create", cam, "ok"),
        ("camera.token.use", cam, "ok"),
        ("camera.register", cam, "ok"),
        ("camera.token.use", cam, "refused"),  # reuse
        ("camera.token.use", cam, "refused"),  # expiry
        ("camera.token.use", "unknown", "refused"),  # a token nobody issued names no camera
        ("model.promote", f"{cam}:1", "ok"),
        ("model.promote", f"{cam}:2", "ok"),
        ("model.rollback", f"{cam}:1", "ok"),
    ], seen
    assert "already used" in rows[4]["reason"] and rows[4]["token"] == token_hash(token)[:12]
    assert "expired" in rows[5]["reason"] and rows[5]["token"] == token_hash(short)[:12]
    assert rows[6]["reason"] == "unknown token"
    assert rows[3]["token"] == rows[2]["token"] == token_hash(token)[:12]


def test_concurrent_redemptions_of_one_token_let_exactly_one_through(
    kafka_broker, schema_registry, kafka_settings
) -> None:
    settings = kafka_settings.model_copy(update={"schema_registry_url": schema_registry})
    store = TokenStore(settings)
    cam = f"race-{uuid.uuid4().hex[:8]}"
    token = store.issue(cam, 600, "test").token
    outcomes: list[str] = []

    def redeem(who: str) -> None:
        try:
            outcomes.append(f"ok:{store.redeem(token, who).actor}")
        except TokenRefused as refused:
            outcomes.append(f"refused:{refused.reason}")

    racers = [threading.Thread(target=redeem, args=(f"racer-{i}",)) for i in range(3)]
    for racer in racers:
        racer.start()
    for racer in racers:
        racer.join(90)
    assert len(outcomes) == 3 and sum(o.startswith("ok:") for o in outcomes) == 1, outcomes
    # The committed state names the one winner; a later attempt sees it used.
    winner = next(o for o in outcomes if o.startswith("ok:"))[3:]
    assert store.states()[token_hash(token)].actor == winner
    with pytest.raises(TokenRefused, match="already used"):
        store.redeem(token, "late")
