"""``its camera register|list|show|remove|token``: the camera registry on the compacted its.cameras.v1.

``its camera token create`` and ``its camera register --token`` are the onboarding flow
(its.onboarding): a one-time token exchanged for the camera's SCRAM credentials, every step audited.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict
from pathlib import Path

import typer

from its.settings import get_settings

app = typer.Typer(no_args_is_help=True)


def _registry():  # type: ignore[no-untyped-def]
    from producers.registry import CameraRegistry

    settings = get_settings()
    return CameraRegistry(settings.kafka_config(), settings.schema_registry_url)


def _json(obj: object) -> str:
    return json.dumps(obj, default=str, indent=2)


@app.command("register")
def register(
    scene_file: Path | None = typer.Argument(
        None, help="YAML: camera_id, name, location, mode, source, scene"
    ),
    token: str | None = typer.Option(
        None, "--token", help="One-time token from `its camera token create`: exchange it for credentials"
    ),
    out: Path | None = typer.Option(
        None, "--out", help="Credentials file (default: <data dir>/credentials/edge-<camera>.yaml)"
    ),
) -> None:
    """Register (or update) the camera a YAML file describes, and/or exchange a token for its credentials."""
    from producers.registry import CameraFileError, load_camera_file

    if scene_file is None and token is None:
        typer.echo("error: give a camera YAML file, --token, or both", err=True)
        raise typer.Exit(2)
    camera = None
    if scene_file is not None:
        try:
            camera = load_camera_file(scene_file)
        except CameraFileError as exc:
            typer.echo(f"error: {exc}", err=True)
            raise typer.Exit(2) from None
    if token is not None:
        _redeem(token, out, camera.camera_id if camera else None)
    if camera is not None:
        _registry().register(camera)
        typer.echo(f"registered {camera.camera_id}")


def _redeem(token: str, out: Path | None, expected_camera: str | None) -> None:
    """Token -> SCRAM user edge-<camera> with a random password, written 0600 and printed once."""
    import secrets

    from confluent_kafka import KafkaException

    from its.audit import ERROR, OK, REFUSED, AuditError, Auditor, current_actor
    from its.onboarding import (
        USE,
        TokenRefused,
        TokenStore,
        create_scram_user,
        credentials_config,
        grant_edge_acls,
        principal,
        token_hash,
        write_credentials,
    )

    settings = get_settings()
    actor = current_actor(settings)
    auditor = Auditor(settings, component="onboarding")
    hint = token_hash(token)[:12]  # names the token in the trail without making it usable
    try:
        try:
            use = TokenStore(settings).redeem(token, actor, expect_camera=expected_camera)
        except (KafkaException, TimeoutError) as exc:
            auditor.record(actor, USE, "unknown", ERROR, f"{type(exc).__name__}: {exc}", token_sha256=hint)
            typer.echo(f"error: the token could not be checked or marked used: {exc}", err=True)
            raise typer.Exit(1) from None
        except TokenRefused as refused:
            auditor.record(
                actor, USE, refused.camera_id or "unknown", REFUSED, refused.reason, token_sha256=hint
            )
            typer.echo(f"error: registration refused: {refused.reason}", err=True)
            raise typer.Exit(1) from None
        camera_id = use.target
        auditor.record(actor, USE, camera_id, OK, token_sha256=hint)
        username, password = principal(camera_id), secrets.token_urlsafe(32)
        try:
            create_scram_user(settings, username, password)
        except Exception as exc:  # the token is spent; say so, in the trail too
            auditor.record(actor, "camera.register", camera_id, ERROR, f"SCRAM user not created: {exc}",
                           principal=username)  # fmt: skip
            typer.echo(f"error: the token was used but the credentials could not be created: {exc}; "
                       "issue a new token", err=True)  # fmt: skip
            raise typer.Exit(1) from None
        try:
            acls = grant_edge_acls(settings, camera_id)
        except Exception as exc:  # the principal exists but could not write anything: say so
            auditor.record(actor, "camera.register", camera_id, ERROR, f"ACLs not created: {exc}",
                           principal=username)  # fmt: skip
            typer.echo(f"error: the credentials were created but not their ACLs: {exc}", err=True)
            raise typer.Exit(1) from None
        path = out or settings.data_path / "credentials" / f"{username}.yaml"
        config = credentials_config(settings, username, password)
        write_credentials(path, config, camera_id)
        signed = settings.kafka_security.signing_secret is not None
        auditor.record(actor, "camera.register", camera_id, OK, principal=username, mechanism="SCRAM-SHA-512",
                       token_sha256=hint, credentials_file=str(path), acls=acls,
                       signing_key="issued" if signed else "none")  # fmt: skip
    except AuditError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from None
    finally:
        auditor.close()
    # Printed once: the broker keeps only the salted SCRAM verifier, never the password.
    typer.echo(f"camera {camera_id}: Kafka principal {username}, mechanism SCRAM-SHA-512")
    typer.echo(f"password: {password}")
    typer.echo(f"credentials written to {path} (mode 0600); use it as ITS_CONFIG on the camera's edge host")
    typer.echo(
        f"ACLs: {acls}; record-signing key: {'in the file' if signed else 'none (no platform secret here)'}"
    )


@app.command("list")
def list_(as_json: bool = typer.Option(False, "--json", help="print JSON")) -> None:
    """Every registered camera (id, name, mode, location)."""
    cameras = _registry().all()
    rows = [
        {"camera_id": c.camera_id, "name": c.name, "mode": c.mode.value.lower(),
         "latitude": c.location.latitude, "longitude": c.location.longitude}
        for c in sorted(cameras.values(), key=lambda c: c.camera_id)
    ]  # fmt: skip
    if as_json:
        typer.echo(json.dumps(rows))
        return
    for row in rows:
        typer.echo(f"{row['camera_id']}\t{row['mode']}\t{row['name']}")


@app.command("show")
def show(camera_id: str = typer.Argument(...)) -> None:
    """One camera's full registration, scene config included, as JSON."""
    camera = _registry().get(camera_id)
    if camera is None:
        typer.echo(f"error: camera {camera_id} is not registered", err=True)
        raise typer.Exit(1)
    typer.echo(_json(asdict(camera)))


@app.command("remove")
def remove(camera_id: str = typer.Argument(...)) -> None:
    """Remove a camera (a tombstone on the compacted topic)."""
    if not _registry().remove(camera_id):
        typer.echo(f"error: camera {camera_id} is not registered", err=True)
        raise typer.Exit(1)
    typer.echo(f"removed {camera_id}")


token_app = typer.Typer(
    no_args_is_help=True, help="One-time registration tokens (hash on its.camera-tokens.v1)"
)
app.add_typer(token_app, name="token")


@token_app.command("create")
def token_create(
    camera: str = typer.Option(..., "--camera", help="Camera id the token registers"),
    ttl: str = typer.Option("24h", "--ttl", help="Validity: 90s, 15m, 24h, 7d"),
) -> None:
    """Issue a one-time token for CAMERA; it is printed once and only its hash is stored."""
    from confluent_kafka import KafkaException

    from its.audit import OK, AuditError, audit, current_actor
    from its.onboarding import CREATE, TokenStore, check_camera_id, parse_ttl

    try:
        ttl_s = parse_ttl(ttl)
        check_camera_id(camera)
    except ValueError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    settings = get_settings()
    actor = current_actor(settings)
    try:
        issued = TokenStore(settings).issue(camera, ttl_s, actor)
    except (KafkaException, RuntimeError) as exc:
        typer.echo(f"error: the token could not be issued: {exc}", err=True)
        raise typer.Exit(1) from None
    try:
        audit(settings, actor, CREATE, camera, OK, component="onboarding", ttl_s=ttl_s,
              expires_ts_ms=issued.expires_ts_ms, token_sha256=issued.digest[:12])  # fmt: skip
    except AuditError as exc:  # the token is never shown, so it can never be used
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from None
    expires = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(issued.expires_ts_ms / 1000))
    typer.echo(issued.token)
    typer.echo(f"one-time token for camera {camera}, expires {expires}: its camera register --token <token>",
               err=True)  # fmt: skip
