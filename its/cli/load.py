"""``its load run``: the load test (simulated cameras through analytics and the ClickHouse sink)."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from its.settings import get_settings

app = typer.Typer(no_args_is_help=True)


@app.command("run")
def run(
    cameras: int = typer.Option(1000, "--cameras", help="simulated cameras"),
    fps: float = typer.Option(10.0, "--fps", help="detection frames per second per camera"),
    duration: float = typer.Option(300.0, "--duration", help="seconds of load"),
    analytics_workers: int = typer.Option(
        1, "--analytics-workers", help="analytics replicas in one consumer group"
    ),
    sample_s: float = typer.Option(5.0, "--sample-s", help="seconds between readings"),
    drain_s: float = typer.Option(60.0, "--drain-s", help="longest wait for the stages to catch up"),
    profile_s: float = typer.Option(
        20.0, "--profile-s", help="cProfile seconds for each stage below the offered rate (0: none)"
    ),
    warmup_s: float = typer.Option(
        900.0, "--warmup-s", help="longest wait for analytics to start every camera first (0: no warm-up)"
    ),
    scenario: str = typer.Option("city", "--scenario", help="simulator scenario of the template cameras"),
    fresh_broker: bool = typer.Option(
        False,
        "--fresh-broker/--use-broker",
        help="a private broker + registry on free ports (default: the configured one, started if needed)",
    ),
    keep_data: bool = typer.Option(False, "--keep-data", help="keep the work dir (store, logs, profiles)"),
    as_json: bool = typer.Option(False, "--json", help="only the JSON on stdout (progress on stderr)"),
    out: Path | None = typer.Option(None, "--out", help="also write the JSON to this file"),
) -> None:
    """Drive N cameras x F fps of detections through `its process analytics` and `its sink clickhouse`."""
    from rich.console import Console

    from its.loadtest import LoadOptions, print_report, run_loadtest

    console = Console(stderr=as_json, width=max(Console().width, 140))
    opts = LoadOptions(
        cameras=cameras, fps=fps, duration_s=duration, analytics_workers=analytics_workers,
        sample_s=sample_s, drain_s=drain_s, profile_s=profile_s, warmup_s=warmup_s, scenario=scenario,
        fresh_broker=fresh_broker, keep_data=keep_data,
    )  # fmt: skip
    result = run_loadtest(get_settings(), opts, say=lambda line: console.print(line, highlight=False))
    text = json.dumps(result, indent=None if as_json else 2, default=str)
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(text + "\n")
    if as_json:
        typer.echo(text)
    else:
        print_report(result, console)
        console.print(text, highlight=False, markup=False, soft_wrap=True)
