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


def _inference(frames: int) -> BenchReport:
    from its.benchmarks import inference

    return inference.run(get_settings().assets_path, frames=frames)


def _edge(frames: int) -> BenchReport:
    from its.benchmarks import edge

    return edge.run(get_settings(), frames=frames)


BENCHES: dict[str, Callable[[int], BenchReport]] = {"serde": _serde, "inference": _inference, "edge": _edge}


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
            f"{c.ours:,}" if c.ours is not None else "-",  # None: not measured (the case says why)
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


@app.command("inference")
def inference_cmd(
    frames: int = typer.Option(32, help="JPEG frames per timed run (per model and batch size)"),
    as_json: bool = typer.Option(False, "--json", help="print one JSON object"),
) -> None:
    """CPU frames/s and p50/p99 latency at batch 1/8/32 next to a naive per-frame loop (reads assets)."""
    _print(BENCHES["inference"](frames), as_json)


@app.command("edge")
def edge_cmd(
    frames: int = typer.Option(300, help="sampled frames per timed run (per source)"),
    sim_cameras: int = typer.Option(1000, help="simulated cameras for the load case (0: leave it out)"),
    sim_seconds: float = typer.Option(10.0, help="seconds of simulated load"),
    as_json: bool = typer.Option(False, "--json", help="print one JSON object"),
) -> None:
    """Edge frames/s per core (720p, 1080p) next to plain OpenCV read+imencode; simulated camera load.

    Needs the broker and the registry running (its kafka start) and the shared assets.
    """
    from its.benchmarks import edge

    _print(edge.run(get_settings(), frames=frames, sim_cameras=sim_cameras, sim_seconds=sim_seconds), as_json)


def _sink(records: int, server: str | None = None) -> BenchReport:
    from its.benchmarks import sink

    return sink.run(get_settings(), records=records, server=server)


BENCHES["sink"] = _sink


@app.command("sink")
def sink_cmd(
    records: int = typer.Option(50_000, help="detection frames and events per case"),
    server: str | None = typer.Option(
        None, "--server", "--clickhouse-url", help="also measure against this http(s):// ClickHouse server"
    ),
    as_json: bool = typer.Option(False, "--json", help="print one JSON object"),
) -> None:
    """Rows/s through the exactly-once sink next to a plain clickhouse-connect bulk insert (needs Kafka)."""
    _print(_sink(records, server), as_json)


def _tracking(frames: int) -> BenchReport:
    from its.benchmarks import tracking

    return tracking.throughput(frames=frames)


BENCHES["tracking"] = _tracking


@app.command("tracking")
def tracking_cmd(
    frames: int = typer.Option(3000, help="detection frames per timed run"),
    objects: int = typer.Option(20, help="objects per frame"),
    as_json: bool = typer.Option(False, "--json", help="print one JSON object"),
) -> None:
    """Detection frames/s per core through tracking+rules next to trackers' ByteTrack alone (bench extra)."""
    from its.benchmarks import tracking

    _print(tracking.throughput(frames=frames, objects=objects), as_json)


@app.command("tracking-quality")
def tracking_quality_cmd(
    sequence: str | None = typer.Option(None, help="MOT sequence folder with gt.txt (default: TUD-Campus)"),
    fps: float = typer.Option(25.0, help="frame rate of the sequence"),
    seed: int = typer.Option(0, help="noise model seed"),
    as_json: bool = typer.Option(False, "--json", help="print one JSON object"),
) -> None:
    """MOTA, IDF1, HOTA of ours next to trackers' ByteTrack on noisy detections made from the ground truth."""
    from pathlib import Path

    from its.benchmarks import tracking

    seq = Path(sequence) if sequence else get_settings().assets_path / "mot" / "TUD-Campus"
    _print(tracking.quality(seq, fps=fps, seed=seed), as_json)
