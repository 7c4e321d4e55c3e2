"""Grafana dashboards and provisioning: valid JSON, unique panel ids, queries that refer to what exists.

* PromQL: every ``its_*`` series a query names is one the code exports (found by reading the
  ``Counter``/``Gauge``/``Histogram``/``Summary`` definitions with ``ast``, with the suffixes
  prometheus_client adds), and every label matcher names a label that metric has.
* ClickHouse SQL: every query runs for real on the embedded engine against a database migrated with
  the project's migrations, with Grafana's macros and variables replaced by plain SQL first.
"""

from __future__ import annotations

import ast
import json
import re
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
GRAFANA = ROOT / "infra" / "grafana"
DASHBOARDS = sorted((GRAFANA / "dashboards").glob("*.json"))
SOURCE_DIRS = ("its", "producers", "processors", "connectors", "infra", "schemas")
PROM_UID, CH_UID = "its-prometheus", "its-clickhouse"
CH_TYPE = "grafana-clickhouse-datasource"
# Labels Prometheus itself attaches to every scraped series (target labels) or to histogram buckets.
TARGET_LABELS = {"job", "instance", "__name__"}
PROMQL_WORDS = {
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
    "offset",
    "bool",
    "and",
    "or",
    "unless",
}


# ----------------------------------------------------------------------------------------- helpers
def _metric_definitions() -> dict[str, dict]:
    """``its_*`` metrics defined in the code: name -> {"kind", "labels"} (from the constructor calls)."""
    kinds = {"Counter", "Gauge", "Histogram", "Summary"}
    found: dict[str, dict] = {}
    for folder in SOURCE_DIRS:
        for path in (ROOT / folder).rglob("*.py"):
            tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
            for node in ast.walk(tree):
                if not isinstance(node, ast.Call):
                    continue
                func = node.func
                kind = (
                    func.id
                    if isinstance(func, ast.Name)
                    else func.attr
                    if isinstance(func, ast.Attribute)
                    else None
                )
                if kind not in kinds or not node.args:
                    continue
                first = node.args[0]
                if not (isinstance(first, ast.Constant) and isinstance(first.value, str)):
                    continue
                if not first.value.startswith("its_"):
                    continue
                labels_node = node.args[2] if len(node.args) > 2 else None
                for kw in node.keywords:
                    if kw.arg == "labelnames":
                        labels_node = kw.value
                labels: set[str] = set()
                if isinstance(labels_node, (ast.List, ast.Tuple)):
                    labels = {e.value for e in labels_node.elts if isinstance(e, ast.Constant)}
                found[first.value] = {"kind": kind, "labels": labels, "where": str(path.relative_to(ROOT))}
    return found


def _exported_series(defs: dict[str, dict]) -> dict[str, set[str]]:
    """Series names as prometheus_client writes them on /metrics -> the labels they carry."""
    series: dict[str, set[str]] = {}
    for name, d in defs.items():
        labels = d["labels"]
        if d["kind"] == "Counter":
            base = name[: -len("_total")] if name.endswith("_total") else name
            series[f"{base}_total"] = labels
            series[f"{base}_created"] = labels
        elif d["kind"] in ("Histogram", "Summary"):
            series[f"{name}_sum"] = labels
            series[f"{name}_count"] = labels
            series[f"{name}_created"] = labels
            if d["kind"] == "Histogram":
                series[f"{name}_bucket"] = labels | {"le"}
            else:
                series[name] = labels | {"quantile"}
        else:
            series[name] = labels
    return series


def _dashboards() -> list[tuple[str, dict]]:
    return [(path.name, json.loads(path.read_text(encoding="utf-8"))) for path in DASHBOARDS]


def _all_panels(board: dict) -> list[dict]:
    out = []
    for panel in board.get("panels", []):
        out.append(panel)
        out.extend(panel.get("panels", []))  # panels inside collapsed rows
    return out


def _targets(board: dict, uid: str) -> list[tuple[str, dict]]:
    out = []
    for panel in _all_panels(board):
        for target in panel.get("targets", []):
            ds = target.get("datasource") or panel.get("datasource") or {}
            if ds.get("uid") == uid:
                out.append((panel["title"], target))
    return out


def _selectors(expr: str) -> list[tuple[str, str]]:
    """(metric name, label matcher text) for each ``its_*`` name in a PromQL expression."""
    return [
        (m.group(1), m.group(2) or "") for m in re.finditer(r"\b(its_[a-zA-Z0-9_]+)\b(?:\{([^}]*)\})?", expr)
    ]


def _prom_exprs(board: dict) -> list[tuple[str, str]]:
    exprs = [(title, t["expr"]) for title, t in _targets(board, PROM_UID)]
    for var in board.get("templating", {}).get("list", []):
        if (var.get("datasource") or {}).get("uid") == PROM_UID:
            query = var["query"]["query"] if isinstance(var["query"], dict) else var["query"]
            inner = re.fullmatch(r"label_values\((.+?)(?:,\s*(\w+))?\)", query)
            exprs.append((f"variable {var['name']}", inner.group(1) if inner else query))
    return exprs


def _ch_queries(board: dict) -> list[tuple[str, str]]:
    sql = [(title, t["rawSql"]) for title, t in _targets(board, CH_UID)]
    for var in board.get("templating", {}).get("list", []):
        if (var.get("datasource") or {}).get("uid") == CH_UID:
            sql.append((f"variable {var['name']}", var["query"]))
    return sql


def plain_sql(sql: str, cameras: tuple[str, ...] = ("cam-1", "cam-2")) -> str:
    """Grafana ClickHouse macros and dashboard variables -> plain SQL for a 6 h range, 60 s interval."""
    out = re.sub(
        r"\$__timeFilter\(([^)]+)\)",
        r"(\1 >= now() - INTERVAL 6 HOUR AND \1 <= now())",
        sql,
    )
    out = re.sub(
        r"\$__timeInterval\(([^)]+)\)",
        r"toStartOfInterval(toDateTime(\1), INTERVAL 60 second)",
        out,
    )
    out = out.replace("$__interval_s", "60")
    out = out.replace("$__fromTime", "toDateTime(now() - INTERVAL 6 HOUR)").replace("$__toTime", "now()")
    out = out.replace("${camera:singlequote}", ", ".join(f"'{c}'" for c in cameras))
    assert "$" not in out, f"unsubstituted macro or variable left in:\n{out}"
    return out


# ------------------------------------------------------------------------------------ unit tests
@pytest.mark.unit
def test_there_are_an_operations_and_an_analytics_dashboard() -> None:
    names = {name for name, _ in _dashboards()}
    assert {"its-operations.json", "its-traffic-analytics.json"} <= names


@pytest.mark.unit
@pytest.mark.parametrize("path", DASHBOARDS, ids=lambda p: p.name)
def test_dashboard_is_valid_json_with_unique_panel_ids(path: Path) -> None:
    board = json.loads(path.read_text(encoding="utf-8"))
    assert board["uid"] and board["title"] and board["schemaVersion"] >= 30
    panels = _all_panels(board)
    assert len(panels) >= 8
    ids = [p["id"] for p in panels]
    assert len(ids) == len(set(ids)), f"duplicate panel ids in {path.name}: {sorted(ids)}"
    for panel in panels:
        if panel["type"] == "row":
            continue
        assert panel.get("targets"), f"panel {panel['title']!r} has no query"
        assert {"x", "y", "w", "h"} <= set(panel["gridPos"])
        for target in panel["targets"]:
            assert target["datasource"]["uid"] in (PROM_UID, CH_UID), panel["title"]
    uids = {json.loads(p.read_text())["uid"] for p in DASHBOARDS}
    assert len(uids) == len(DASHBOARDS), "dashboard uids must be unique"


@pytest.mark.unit
def test_the_code_exports_the_metrics_this_test_reads() -> None:
    """The scanner itself works: known metrics from several components are found with their labels."""
    series = _exported_series(_metric_definitions())
    assert series["its_sink_rows_total"] == {"table"}
    assert series["its_stream_records_in_total"] == {"processor", "topic"}
    assert series["its_inference_stage_seconds_bucket"] == {"stage", "le"}
    assert series["its_edge_source_connected"] == {"camera"}
    assert "its_inference_stage_seconds" not in series  # a histogram has no bare series
    assert "its_schema_registry_subjects" in series


@pytest.mark.unit
def test_operations_dashboard_covers_the_issue_list() -> None:
    board = json.loads((GRAFANA / "dashboards" / "its-operations.json").read_text())
    text = " ".join(t["expr"] for _, t in _targets(board, PROM_UID))
    for needle in (
        "its_stream_records_in_total",  # throughput per stage
        "_bucket",  # latency histograms
        "its_stream_consumer_lag",  # consumer lag
        "its_sink_lag",
        "its_stream_dlq_records_total",  # DLQ rate
        "its_edge_source_connected",  # health per camera
        "its_sink_rows_total",  # sink rows/s
    ):
        assert needle in text, needle


@pytest.mark.unit
@pytest.mark.parametrize("path", DASHBOARDS, ids=lambda p: p.name)
def test_every_promql_expression_names_exported_metrics_and_labels(path: Path) -> None:
    series = _exported_series(_metric_definitions())
    board = json.loads(path.read_text(encoding="utf-8"))
    for title, expr in _prom_exprs(board):
        names = _selectors(expr)
        assert names or re.search(r"\bup\b", expr), f"{title}: no its_ metric in {expr!r}"
        for name, matchers in names:
            assert name in series, f"{title}: {name} is not exported by the code ({expr!r})"
            for label in re.findall(r"([a-zA-Z_][a-zA-Z0-9_]*)\s*(?:=~|!~|!=|=)", matchers):
                assert label in series[name] | TARGET_LABELS, f"{title}: {name} has no label {label!r}"
        for group in re.findall(r"\b(?:by|without)\s*\(([^)]*)\)", expr):
            for label in (x.strip() for x in group.split(",") if x.strip()):
                assert any(label in series[n] | TARGET_LABELS for n, _ in names) or label in PROMQL_WORDS, (
                    f"{title}: grouping label {label!r} is on none of {[n for n, _ in names]}"
                )


@pytest.mark.unit
def test_the_promql_check_catches_a_wrong_name() -> None:
    series = _exported_series(_metric_definitions())
    wrong = [n for n, _ in _selectors("sum(rate(its_sink_rows[5m])) + its_stream_records_in_total")]
    assert [n in series for n in wrong] == [False, True]


@pytest.mark.unit
def test_provisioning_names_the_datasources_the_dashboards_use() -> None:
    ds = yaml.safe_load((GRAFANA / "provisioning" / "datasources" / "its.yml").read_text())
    by_uid = {d["uid"]: d for d in ds["datasources"]}
    assert by_uid[PROM_UID]["type"] == "prometheus"
    assert by_uid[CH_UID]["type"] == CH_TYPE
    assert by_uid[CH_UID]["jsonData"]["protocol"] == "http"
    providers = yaml.safe_load((GRAFANA / "provisioning" / "dashboards" / "its.yml").read_text())
    assert providers["providers"][0]["options"]["path"] == "/var/lib/grafana/dashboards/its"
    analytics = json.loads((GRAFANA / "dashboards" / "its-traffic-analytics.json").read_text())
    assert len(_ch_queries(analytics)) >= 10


@pytest.mark.unit
def test_macro_substitution() -> None:
    sql = (
        "SELECT $__timeInterval(ts) AS t FROM events "
        "WHERE $__timeFilter(e.ts) AND camera_id IN (${camera:singlequote})"
    )
    assert plain_sql(sql) == (
        "SELECT toStartOfInterval(toDateTime(ts), INTERVAL 60 second) AS t FROM events "
        "WHERE (e.ts >= now() - INTERVAL 6 HOUR AND e.ts <= now()) AND camera_id IN ('cam-1', 'cam-2')"
    )
    with pytest.raises(AssertionError):
        plain_sql("SELECT 1 WHERE $__unknownMacro(ts)")


# ---------------------------------------------------------------- real ClickHouse (embedded chdb)
@pytest.mark.integration
@pytest.mark.parametrize("path", DASHBOARDS, ids=lambda p: p.name)
def test_every_clickhouse_query_runs_on_the_migrated_schema(path: Path, clickhouse) -> None:
    from connectors.clickhouse.migrate import migrate

    migrate(clickhouse)
    board = json.loads(path.read_text(encoding="utf-8"))
    queries = _ch_queries(board)
    if path.name == "its-traffic-analytics.json":
        assert len(queries) >= 10
    timeseries = {t["rawSql"] for _, t in _targets(board, CH_UID) if t.get("format") == 0}
    for title, sql in queries:
        try:
            clickhouse.query(plain_sql(sql))
            columns = clickhouse.query(f"DESCRIBE ({plain_sql(sql)})").result_rows  # (name, type, ...)
        except Exception as exc:  # report which panel's SQL failed, with ClickHouse's reason
            pytest.fail(f"{path.name} panel {title!r}: {exc}\n{sql}")
        assert columns, title
        if sql in timeseries:  # Grafana's time-series format wants a DateTime column named time, first
            name, ctype = columns[0][0], columns[0][1]
            assert name == "time" and ctype.startswith("DateTime"), f"{title}: first column {name} {ctype}"


@pytest.mark.integration
def test_the_sql_check_catches_an_unknown_column(clickhouse) -> None:
    from connectors.clickhouse.migrate import migrate

    migrate(clickhouse)
    clickhouse.query(plain_sql("SELECT count() FROM events WHERE $__timeFilter(ts)"))
    with pytest.raises(Exception, match=r"(?i)unknown|missing|identifier"):
        clickhouse.query(plain_sql("SELECT count() FROM events WHERE $__timeFilter(no_such_column)"))
