"""``its eval scenario``: accuracy of the analytics engine on a simulated scenario, against its truth."""

from __future__ import annotations

import json

import typer

app = typer.Typer(no_args_is_help=True)


@app.command("scenario")
def scenario_cmd(
    scenario: str = typer.Option("intersection", "--scenario", help="scenario name (tests/scenarios/*.yaml)"),
    seed: int = typer.Option(0, "--seed", help="simulation seed"),
    noise: str = typer.Option("default", "--noise", help="detector noise model: default or none"),
    duration_s: float | None = typer.Option(None, "--duration-s", help="shorter run than the scenario's"),
    as_json: bool = typer.Option(False, "--json", help="print one JSON object"),
) -> None:
    """Simulate, track and apply the rules in process (no broker); print count, speed and rule accuracy."""
    from processors.analytics.evaluate import evaluate_scenario

    kwargs = {} if duration_s is None else {"duration_s": duration_s}
    result = evaluate_scenario(scenario, seed=seed, noise=noise, **kwargs)
    if as_json:
        typer.echo(json.dumps(result))
        return
    typer.echo(
        f"{result['scenario']} seed {seed} noise {noise}: "
        f"{result['frames']} frames, {result['cameras']} cameras"
    )
    typer.echo(
        f"  count error (worst line) {result['count_error_pct']} %   speed MAE {result['speed_mae_kmh']} km/h"
    )
    for name, v in result["violations"].items():
        typer.echo(
            f"  {name:<22} planted {v['planted']:>2}  reported {v['reported']:>2}  "
            f"precision {v['precision']:.2f}  recall {v['recall']:.2f}"
        )
