"""The `its` command: one entry point, one sub-command group per part of the system."""

from __future__ import annotations

import typer

from its.cli import alerts as alerts_cli
from its.cli import bench, db, kafka, registry, topics
from its.cli import camera as camera_cli
from its.cli import console as console_cli
from its.cli import dr as dr_cli
from its.cli import edge as edge_cli
from its.cli import eval as eval_cli
from its.cli import load as load_cli
from its.cli import model as model_cli
from its.cli import privacy as privacy_cli
from its.cli import process as process_cli
from its.cli import replay as replay_cli
from its.cli import simulate as simulate_cli
from its.cli import sink as sink_cli
from its.logs import configure_logging
from its.settings import get_settings

app = typer.Typer(no_args_is_help=True, add_completion=False, help="ITS Camera AI on Kafka")
app.add_typer(kafka.app, name="kafka", help="Run the local Apache Kafka broker (KRaft) and schema registry")
app.add_typer(topics.app, name="topics", help="Create or update every topic from the catalogue")
app.add_typer(registry.app, name="registry", help="The local Confluent-compatible schema registry")
app.add_typer(db.app, name="db", help="ClickHouse schema migrations")
app.command("sql")(db.sql)
app.add_typer(bench.app, name="bench", help="Benchmarks: ours next to a peer, as JSON")
app.add_typer(sink_cli.app, name="sink", help="Sinks: Kafka topics into ClickHouse, exactly once")
app.command("replay")(replay_cli.replay)
app.add_typer(dr_cli.app, name="dr", help="Disaster recovery: back up and restore ClickHouse")
app.add_typer(edge_cli.app, name="edge", help="Edge producers: cameras to Kafka")
app.add_typer(camera_cli.app, name="camera", help="Camera registry on its.cameras.v1 (compacted)")
app.add_typer(process_cli.app, name="process", help="Stream processors: inference, analytics")
app.add_typer(model_cli.app, name="model", help="Model registry (its.models.v1) and export")
app.command("simulate")(simulate_cli.simulate_cmd)
app.add_typer(eval_cli.app, name="eval", help="Accuracy of the analytics on simulated scenarios")
app.add_typer(privacy_cli.app, name="privacy", help="Privacy: erase a camera's data for a time range")
app.command("console")(console_cli.console)
app.add_typer(load_cli.app, name="load", help="Load test: simulated cameras through analytics and the sink")
app.add_typer(alerts_cli.app, name="alerts", help="Alert acknowledgements (its.alert-acks.v1)")


@app.callback()
def _setup() -> None:
    settings = get_settings()
    configure_logging(settings.log_level, settings.log_format)


@app.command()
def demo(
    duration: float = typer.Option(120.0, "--duration", help="seconds the cameras run (then drain and stop)"),
    cameras: int = typer.Option(8, "--cameras", help="simulated cameras (intersection scenario)"),
    real_camera: bool = typer.Option(
        True, "--real-camera/--no-real-camera", help="also run the real clip through edge + inference"
    ),
    clip_fps: float = typer.Option(4.0, "--clip-fps", help="sampled frames/s of the real clip"),
    port_base: int = typer.Option(
        9101,
        "--port-base",
        help="first /metrics port (edge, then inference, analytics, sink, webhook, simulator)",
    ),
    artifacts: str = typer.Option("artifacts/demo", "--artifacts", help="summary.json, keyframe, logs"),
    keep_running: bool = typer.Option(False, help="leave the broker and registry running afterwards"),
) -> None:
    """Run the whole system on the embedded default and show what it did."""
    import os
    from pathlib import Path

    from its.demo import DemoOptions, run_demo

    if "ITS_LOG_LEVEL" not in os.environ:  # the demo speaks through its tables; logs only for trouble
        configure_logging("WARNING", "text")
    options = DemoOptions(
        duration_s=duration, cameras=cameras, real_camera=real_camera, clip_fps=clip_fps,
        port_base=port_base, artifacts=Path(artifacts), keep_running=keep_running,
    )  # fmt: skip
    if not run_demo(get_settings(), options=options):
        raise typer.Exit(1)


def main() -> None:
    app()
