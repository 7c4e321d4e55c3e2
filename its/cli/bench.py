"""``its bench NAME [--json]``: run one benchmark, print its figures next to the peer's."""

from __future__ import annotations

import json
from collections.abc import Callable

import typer
from rich.console import Console
from rich.table import Table

from its.benchmarks.report import BenchReport
from its.settings import get_settings

app = typer.Typer(no_args_is_help=True)


def _serde(records: int) -> BenchReport:
    from its.benchmarks import serde

    return serde.run(get_settings().schema_registry_url, records=records)


BENCHES: dict[str, Callable[[int], BenchReport]] = {"serde": _serde}


def _print(report: BenchReport, as_json: bool) -> None:
    if as_json:
        typer.echo(json.dumps(report.as_dict()))
        return
    table = Table(title=f"bench {report.bench} — {report.machine['cpu']} x{report.machine['cores']}")
    for col in ("case", "metric", "ours", "peer", "peer name", "ratio", "target"):
        table.add_column(col)
    for c in report.cases:
        table.add_row(
            c.case,
            f"{c.metric} ({c.unit})",
            f"{c.ours:,}",
            f"{c.peer:,}" if c.peer else "-",
            c.peer_name,
            f"{c.ratio}" if c.ratio else "-",
            c.target,
        )
    Console().print(table)


@app.command("serde")
def serde_cmd(
    records: int = typer.Option(20_000, help="records per timed run"),
    as_json: bool = typer.Option(False, "--json", help="print one JSON object"),
) -> None:
    """Records/s of our Avro serde next to confluent-kafka's AvroSerializer (needs the registry running)."""
    _print(BENCHES["serde"](records), as_json)
