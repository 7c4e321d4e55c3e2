"""`its kafka ...`: run the local Apache Kafka broker (KRaft) and show its state with the catalogue topics."""

from __future__ import annotations

import logging
import os
import shlex
import time
from urllib.parse import urlparse

import typer
from confluent_kafka import KafkaException
from rich.console import Console
from rich.table import Table

from infra.kafka import KafkaRuntimeError, KafkaStatus, LocalKafka
from infra.kafka.acls import acl_table
from infra.schema_registry import runner as registry
from infra.topics import describe_topics, drift
from its.settings import get_settings
from its.stack import registry_is_local
from schemas.topics import CATALOGUE

app = typer.Typer(no_args_is_help=True, help="Run the local Apache Kafka broker (KRaft)")
console = Console()
err = Console(stderr=True)


def _broker(secure: bool = False) -> LocalKafka:
    return LocalKafka.from_settings(get_settings(), secure=secure)


def _secure_broker() -> LocalKafka:
    """The local broker in secure mode; exits when it was never started with ``--secure``."""
    broker = _broker(secure=True)
    if not broker.security.credentials_file.is_file():
        err.print(f"No secure broker state under {broker.home}; run `its kafka start --secure` first")
        raise typer.Exit(1)
    return broker


def _human_ms(value: str | None) -> str:
    if value is None:
        return "-"
    ms = int(value)
    if ms < 0:
        return "forever"
    for unit, size in (("d", 86_400_000), ("h", 3_600_000), ("min", 60_000), ("s", 1000)):
        if ms >= size and ms % size == 0:
            return f"{ms // size}{unit}"
    return f"{ms}ms"


def _human_bytes(value: str | None) -> str:
    if value is None:
        return "-"
    n = int(value)
    for unit, size in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= size and n % size == 0:
            return f"{n // size} {unit}"
    return f"{n} B"


def _broker_table(status: KafkaStatus, reachable: bool) -> Table:
    table = Table(title="Kafka broker", show_header=False)
    table.add_column("field", style="bold")
    table.add_column("value")
    state = "[green]running[/]" if status.running else "[red]not running[/]"
    table.add_row("local process", state + (f" (pid {status.pid})" if status.pid else ""))
    table.add_row("reachable", "[green]yes[/]" if reachable else "[red]no[/]")
    table.add_row("version", status.version or "-")
    table.add_row("bootstrap", status.bootstrap)
    table.add_row("controller", status.controller)
    table.add_row("cluster id", status.cluster_id or "-")
    if status.started_at:
        table.add_row("uptime", f"{int(time.time() - status.started_at)} s")
    table.add_row("data dir", str(status.data_dir))
    table.add_row("log file", str(status.log_file))
    return table


def _topics_table(info: dict[str, dict]) -> Table:
    table = Table(title="Catalogue topics")
    table.add_column("topic", no_wrap=True)
    table.add_column("partitions", justify="right")  # have / catalogue
    for col in ("cleanup", "retention", "max msg", "state"):
        table.add_column(col)
    for spec in CATALOGUE:
        t = info.get(spec.name, {"exists": False})
        problems = drift(spec, t)
        state = "[green]ok[/]" if not problems else "[yellow]" + ", ".join(problems) + "[/]"
        if not t.get("exists"):
            table.add_row(spec.name, f"- / {spec.partitions}", "-", "-", "-", "[red]missing[/]")
            continue
        eff = t.get("effective", {})
        table.add_row(
            spec.name,
            f"{t['partitions']} / {spec.partitions}",
            eff.get("cleanup.policy", "-"),
            _human_ms(eff.get("retention.ms")),
            _human_bytes(eff.get("max.message.bytes")),
            state,
        )
    return table


@app.command()
def start(
    timeout: float = typer.Option(120.0, help="Seconds to wait for the broker to be ready"),
    secure: bool = typer.Option(
        False,
        "--secure",
        help="SASL_SSL (SCRAM-SHA-512) on the bootstrap port, mutual TLS on ITS_KAFKA_MTLS_PORT, ACLs; "
        "a throwaway CA and all credentials under the data dir (see `its kafka credentials`)",
    ),
) -> None:
    """Start the broker in the background (fetches the jars from Maven Central the first time)."""
    broker = _broker(secure=secure)
    if broker.is_running():
        status = broker.status()
        console.print(
            f"Kafka {status.version or ''} already running at {status.bootstrap} (pid {status.pid})"
        )
        _start_registry(broker)
        return
    began = time.monotonic()
    try:
        with console.status(f"Starting Kafka {broker.version} at {broker.bootstrap} ..."):
            status = broker.start(timeout=timeout)
    except KafkaRuntimeError as exc:
        err.print(f"[red]Kafka did not start:[/] {exc}", markup=True, highlight=False)
        raise typer.Exit(1) from None
    console.print(
        f"Kafka {status.version} running at {status.bootstrap} (pid {status.pid}, "
        f"ready in {time.monotonic() - began:.1f} s); log: {status.log_file}"
    )
    if secure:
        console.print(
            f"Secure: SASL_SSL/SCRAM-SHA-512 at {status.bootstrap}, mutual TLS at {status.mtls_bootstrap}, "
            f"ACLs on; credentials under {broker.security.dir} (`its kafka credentials PRINCIPAL`)"
        )
    _start_registry(broker)


def _start_registry(broker: LocalKafka | None = None) -> None:
    """Start the local schema registry beside the broker, unless a remote registry is configured."""
    if broker is not None and broker.secure and broker.security.credentials_file.is_file():
        # The registry's own principal: it persists to Kafka like any other component.
        os.environ.update(broker.client_env("schema-registry"))
        get_settings.cache_clear()
    settings = get_settings()
    if not registry_is_local(settings):
        return
    url = urlparse(settings.schema_registry_url)
    try:
        pid = registry.start_background(settings, host=url.hostname or "127.0.0.1", port=url.port or 8081)
    except (RuntimeError, TimeoutError) as exc:
        err.print(f"[red]Schema registry did not start:[/] {exc}", highlight=False)
        raise typer.Exit(1) from None
    console.print(f"Schema registry running at {settings.schema_registry_url} (pid {pid})")


@app.command()
def stop(timeout: float = typer.Option(30.0, help="Seconds to wait after SIGTERM before SIGKILL")) -> None:
    """Stop the schema registry and the broker (a controlled shutdown, SIGKILL if it hangs)."""
    if registry.stop_background(get_settings()):
        console.print("Schema registry stopped")
    broker = _broker()
    try:
        stopped = broker.stop(timeout=timeout)
    except KafkaRuntimeError as exc:
        err.print(f"[red]{exc}[/]")
        raise typer.Exit(1) from None
    console.print("Kafka stopped" if stopped else f"Kafka is not running (data dir {broker.home})")


@app.command()
def status() -> None:
    """Broker state and every catalogue topic with its partitions and key configs (exit 1 if down)."""
    settings = get_settings()
    broker = _broker()
    local = broker.status()
    info: dict[str, dict] = {}
    reachable = True
    try:
        # The cluster may be remote (production settings): ask it directly, not only the pid file.
        info = describe_topics(
            settings.kafka_config(**{"socket.timeout.ms": 3000}), [s.name for s in CATALOGUE], timeout=5.0
        )
    except KafkaException as exc:
        reachable = False
        logging.getLogger(__name__).debug("broker unreachable", extra={"error": str(exc)})
    console.print(_broker_table(local, reachable))
    reg = registry.status(settings)
    console.print(
        f"Schema registry at {settings.schema_registry_url}: "
        + ("[green]healthy[/]" if registry.healthy(settings.schema_registry_url) else "[red]not answering[/]")
        + (f" (local pid {reg['pid']})" if reg.get("pid") else "")
    )
    if not reachable:
        if local.running and local.secure:
            console.print(
                f"[red]The secure broker refused this client[/] at {settings.kafka_bootstrap}: "
                'set credentials first, e.g. eval "$(its kafka credentials admin)".'
            )
            raise typer.Exit(1)
        console.print(
            f"[red]Kafka is down:[/] nothing answers at {settings.kafka_bootstrap}. Run `its kafka start`."
        )
        raise typer.Exit(1)
    console.print(_topics_table(info))


@app.command()
def logs(
    lines: int = typer.Option(50, "--lines", "-n", help="How many lines"),
    follow: bool = typer.Option(False, "--follow", "-f", help="Keep printing new lines (Ctrl-C to stop)"),
    stdout: bool = typer.Option(False, "--stdout", help="The JVM's stdout/stderr instead of server.log"),
) -> None:
    """Print the end of the broker's log."""
    broker = _broker()
    path = broker.stdout_file if stdout else broker.log_file
    if not path.is_file():
        err.print(f"No log at {path} yet; the broker has not been started from {broker.data_dir}")
        raise typer.Exit(1)
    for line in broker.tail_log(lines, stdout=stdout):
        typer.echo(line)
    if not follow:
        return
    with path.open("r", errors="replace") as handle:
        handle.seek(0, 2)
        try:
            while True:
                line = handle.readline()
                if line:
                    typer.echo(line.rstrip("\n"))
                else:
                    time.sleep(0.5)
        except KeyboardInterrupt:
            pass


@app.command()
def credentials(
    principal: str = typer.Argument(..., help="admin, inference, analytics, sink, edge-<prefix>, ..."),
    via: str = typer.Option("sasl", help="sasl (SCRAM over TLS) or mtls (client certificate)"),
) -> None:
    """Print the ``ITS_*`` environment that makes a component connect (and sign) as PRINCIPAL."""
    broker = _secure_broker()
    if via not in ("sasl", "mtls"):
        err.print("--via is sasl or mtls")
        raise typer.Exit(2)
    known = set(broker.security.passwords()) - {"broker"}
    if principal not in known:
        err.print(f"Unknown principal {principal!r}; known: {', '.join(sorted(known))}")
        raise typer.Exit(1)
    for name, value in broker.client_env(principal, via=via).items():  # type: ignore[arg-type]
        typer.echo(f"export {name}={shlex.quote(value)}")


@app.command("add-edge")
def add_edge(
    camera_prefix: str = typer.Argument(..., help="Camera-id prefix the site owns, e.g. north-"),
) -> None:
    """Onboard an edge site: principal edge-PREFIX, SCRAM password, certificate, WRITE ACLs, signing key."""
    broker = _secure_broker()
    try:
        principal = broker.add_edge_site(camera_prefix)
    except ValueError as exc:
        err.print(str(exc))
        raise typer.Exit(2) from None
    console.print(f"Edge site {principal} ready; `its kafka credentials {principal}` prints its settings")


@app.command()
def acls() -> None:
    """The ACL table the secure broker enforces (edge sites included)."""
    settings = get_settings()
    sites: list[str] = []
    broker = _broker(secure=True)
    if broker.security.credentials_file.is_file():
        sites = broker.security.edge_sites()
    table = Table(title="Kafka ACLs (ALLOW; everything else is denied; admin and broker are super users)")
    for col in ("principal", "resource", "name", "operations"):
        table.add_column(col)
    for g in acl_table(settings.schema_registry_topic, sites):
        table.add_row(g.principal, g.resource, g.name + ("*" if g.prefixed else ""), ", ".join(g.operations))
    console.print(table)
