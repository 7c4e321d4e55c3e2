"""``its simulate``: simulated cameras publishing signals and detections to Kafka, with the truth on disk."""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import typer

from its.settings import get_settings

log = logging.getLogger(__name__)


def simulate_cmd(
    scenario: str = typer.Option(
        "city", "--scenario", help="scenario name (tests/scenarios or ITS_SCENARIOS_DIR) or YAML path"
    ),
    cameras: int = typer.Option(None, "--cameras", help="number of cameras (default: the scenario's)"),
    fps: float = typer.Option(10.0, "--fps", help="frames of detections per second per camera"),
    seed: int = typer.Option(0, "--seed", help="random seed: same seed, same records"),
    duration: float = typer.Option(None, "--duration", help="simulated seconds (default: the scenario's)"),
    noise: str = typer.Option("default", "--noise", help="detection noise: default or none"),
    truth: Path = typer.Option(None, "--truth", help="write the ground truth JSON here"),
    render: bool = typer.Option(False, "--render", help="also publish rendered JPEG frames to its.frames.v1"),
    fast: bool = typer.Option(False, "--as-fast-as-possible", help="do not pace by capture time"),
    load: bool = typer.Option(
        False, "--load", help="load mode: replay templates for many cameras (run_load)"
    ),
    metrics_port: int = typer.Option(
        0, "--metrics-port", help="port for /metrics and /healthz (0: any free)"
    ),
    ensure: bool = typer.Option(
        True, "--ensure-topics/--no-ensure-topics", help="create missing topics first"
    ),
) -> None:
    """Simulate traffic cameras: register them, publish signal phases and detections, write the truth."""
    from its.service import Service
    from producers.simulator.core import simulate
    from producers.simulator.publish import publish

    settings = get_settings()
    if ensure:
        from infra.topics import ensure_topics

        ensure_topics(settings.kafka_config())
    if load:
        from producers.simulator.load import run_load

        report = run_load(
            settings,
            cameras=cameras or 1000,
            fps=fps,
            duration_s=duration or 30.0,
            scenario=scenario,
            seed=seed,
        )
        typer.echo(json.dumps(report.as_dict()))
        return
    state = {"published": False}
    with Service(
        "simulator", port=metrics_port, health=lambda: (True, {"published": state["published"]})
    ) as svc:
        sim = simulate(
            scenario,
            seed,
            noise=noise,
            duration_s=duration,
            fps=fps,
            cameras=cameras,
            start_ms=None if fast else int(time.time() * 1000),
        )
        if truth is not None:
            sim.write_truth(truth)
        log.info(
            "simulated",
            extra={"scenario": sim.scenario, "cameras": len(sim.cameras), "detections": len(sim.detections)},
        )
        report = publish(sim, settings, realtime=not fast, render=render, should_stop=lambda: svc.stopping)
        state["published"] = True
    typer.echo(
        json.dumps(
            {
                "scenario": sim.scenario,
                "seed": seed,
                "cameras": len(sim.cameras),
                "produced": report.produced,
                "delivered": report.delivered,
                "delivery_errors": report.delivery_errors,
                "seconds": round(report.seconds, 3),
                "stopped_early": report.stopped_early,
                "truth": str(truth) if truth else None,
                "violations": len(sim.truth.violations),
                "crossings": len(sim.truth.crossings),
            }
        )
    )
    if report.delivery_errors:
        raise typer.Exit(1)
