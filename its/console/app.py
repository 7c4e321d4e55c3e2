"""The console's web application: JSON API, server-sent events, tiles, acknowledgements, static page.

Routes (all GET unless noted):
  /                              the single page (static HTML/JS/CSS from this package, no build step)
  /api/config                    {"read_only": bool}: whether acknowledging is possible at all
  /api/cameras                   grid: every camera with liveness, fps, model version, open incidents
  /api/cameras/{id}              one camera: counts and speeds per line and direction, open incidents
  /api/cameras/{id}/tile.jpg     latest keyframe with scene, boxes and track ids
  /api/alerts?severity=&type=&camera=   incidents, newest first (severity is a minimum)
  /api/alerts/{id}/evidence.jpg  the alert's evidence keyframe with its box
  POST /api/alerts/{id}/ack      needs ``Authorization: Bearer <operator token>``; writes an AlertAck
  /api/traffic                   last hour per camera from ClickHouse (volume, speed, level of service)
  /api/stream                    server-sent events: ``alert`` on every incident change, ``cameras`` every 2 s
  /metrics, /healthz             Prometheus text and a JSON health document
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import logging
import threading
import time
from collections import OrderedDict
from dataclasses import asdict
from pathlib import Path
from typing import Any

import anyio
from fastapi import FastAPI, HTTPException, Request
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, Counter, Gauge, Histogram, generate_latest
from sse_starlette.sse import EventSourceResponse

from its.audit import audit
from its.console import render
from its.console.feed import Feed, FrameFetcher
from its.console.state import ConsoleState
from its.console.traffic import TrafficSource
from its.settings import Settings

log = logging.getLogger(__name__)


def _audit_refusal(settings: Settings, actor: str, alert_id: str, reason: str) -> None:
    """Record a refused acknowledgement; a trail that is down is logged, never raised to the client."""
    try:
        audit(settings, actor, "alert.ack", alert_id, "refused", reason, component="console")
    except Exception as exc:
        log.warning("refused acknowledgement not audited", extra={"alert_id": alert_id, "error": str(exc)})


STATIC = Path(__file__).with_name("static")

ACKS = Counter("its_console_acks_total", "Acknowledgement requests by outcome", ["outcome"])
SSE_CLIENTS = Gauge("its_console_sse_clients", "Browsers connected to the live stream")
RENDER_SECONDS = Histogram(
    "its_console_render_seconds", "Time to draw a tile or evidence image", ["kind"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5),
)  # fmt: skip
CAMERAS_BY_STATUS = Gauge("its_console_cameras", "Cameras the console shows, by liveness", ["status"])


class Console:
    """The parts a running console holds: state, Kafka feed, frame look-ups, ClickHouse traffic."""

    def __init__(self, settings: Settings, feed: bool = True) -> None:
        cfg = settings.console
        self.settings = settings
        self.state = ConsoleState(
            cfg.degraded_after_s, cfg.offline_after_s, cfg.cameras, cfg.track_frames, cfg.warmup_s
        )
        self.feed = Feed(settings, self.state) if feed else None
        self.frames = FrameFetcher(settings, self.feed.serde) if self.feed else None
        self.traffic = TrafficSource(settings)
        self.trackers = render.Trackers()
        # (camera, newest frame_seq, keyframe seq, width) -> JPEG: browsers poll faster than cameras change.
        self._tiles: OrderedDict[tuple[Any, ...], bytes] = OrderedDict()
        self._tiles_lock = threading.Lock()

    def tile(self, camera_id: str, width: int) -> bytes | None:
        """The camera's tile, drawn once per new frame; None for an unknown camera."""
        cam, frame, dets = self.state.snapshot(camera_id)
        if cam is None and frame is None and not dets:
            return None
        key = (camera_id, dets[-1].frame_seq if dets else None, frame.frame_seq if frame else None,
               cam.registered_ts_ms if cam else None, width)  # fmt: skip
        with self._tiles_lock:
            if key in self._tiles:
                return self._tiles[key]
        with RENDER_SECONDS.labels("tile").time():
            body = render.tile(camera_id, cam, frame, dets, self.trackers, width=width)
        with self._tiles_lock:
            self._tiles[key] = body
            while len(self._tiles) > 512:
                self._tiles.popitem(last=False)
        return body

    @property
    def read_only(self) -> bool:
        return not self.settings.console.operator_token

    def authorised(self, header: str | None) -> bool:
        """Whether ``Authorization`` carries the operator token (constant-time compare)."""
        token = self.settings.console.operator_token
        if not token or not header or not header.startswith("Bearer "):
            return False
        return hmac.compare_digest(header[7:].strip().encode(), token.encode())

    def health(self) -> tuple[bool, dict[str, Any]]:
        feed = self.feed
        alive = feed is None or (feed.is_alive() and feed.error is None)
        details: dict[str, Any] = {**self.state.counts(), "read_only": self.read_only}
        if feed is not None:
            details.update(
                feed_alive=feed.is_alive(),
                feed_error=feed.error,
                topics=sorted(feed.assigned),
                records=feed.records,
                caught_up=feed.caught_up.is_set(),
            )
        return alive, details

    def start(self) -> None:
        if self.feed is not None:
            self.feed.start()

    def close(self) -> None:
        if self.feed is not None:
            self.feed.stop()
            self.feed.join(timeout=5)
        if self.frames is not None:
            self.frames.close()
        self.traffic.close()


def create_app(console: Console) -> FastAPI:
    """The FastAPI application over a (started or not) ``Console``."""
    app = FastAPI(title="ITS operator console", docs_url=None, redoc_url=None)
    state = console.state
    app.mount("/static", StaticFiles(directory=STATIC), name="static")

    @app.get("/", include_in_schema=False)
    def index() -> FileResponse:
        return FileResponse(STATIC / "index.html", headers={"Cache-Control": "no-cache"})

    @app.get("/api/config")
    def config() -> dict[str, Any]:
        return {"read_only": console.read_only}

    @app.get("/api/cameras")
    def cameras() -> list[dict[str, Any]]:
        rows = state.cameras()
        for status in ("ONLINE", "DEGRADED", "OFFLINE"):
            CAMERAS_BY_STATUS.labels(status).set(sum(1 for c in rows if c["status"] == status))
        return rows

    @app.get("/api/cameras/{camera_id}")
    def camera(camera_id: str) -> dict[str, Any]:
        doc = state.camera_detail(camera_id)
        if doc is None:
            raise HTTPException(404, f"no camera {camera_id!r}")
        return doc

    @app.get("/api/cameras/{camera_id}/tile.jpg")
    def tile(camera_id: str, w: int = 640) -> Response:
        body = console.tile(camera_id, max(64, min(w, 1920)))
        if body is None:
            raise HTTPException(404, f"no camera {camera_id!r}")
        return Response(body, media_type="image/jpeg", headers={"Cache-Control": "no-store"})

    @app.get("/api/alerts")
    def alerts(severity: str | None = None, type: str | None = None, camera: str | None = None) -> list:
        return state.alerts(severity, type, camera)

    @app.get("/api/alerts/{alert_id}")
    def alert(alert_id: str) -> dict[str, Any]:
        doc = state.alert_view(alert_id)
        if doc is None:
            raise HTTPException(404, f"no alert {alert_id!r}")
        return doc

    @app.get("/api/alerts/{alert_id}/evidence.jpg")
    def evidence(alert_id: str, w: int = 960) -> Response:
        rec = state.alert(alert_id)
        if rec is None:
            raise HTTPException(404, f"no alert {alert_id!r}")
        frame = None
        ev = rec.evidence
        if ev is not None and ev.frame_ref is not None and console.frames is not None:
            frame = console.frames.fetch(ev.frame_ref)
        cam, _, _ = state.snapshot(rec.camera_id)
        with RENDER_SECONDS.labels("evidence").time():
            body = render.evidence(rec, cam, frame, width=max(64, min(w, 1920)))
        return Response(
            body,
            media_type="image/jpeg",
            # Immutable for one revision of the incident (the page asks with ?r=<revision>).
            headers={"Cache-Control": "max-age=600", "X-Evidence": "keyframe" if frame else "schematic"},
        )

    @app.post("/api/alerts/{alert_id}/ack")
    async def ack(alert_id: str, request: Request) -> JSONResponse:
        if not console.authorised(request.headers.get("authorization")):
            ACKS.labels("refused").inc()
            log.warning(
                "acknowledgement refused",
                extra={"alert_id": alert_id, "client": request.client.host if request.client else None},
            )
            reason = "the console is read-only" if console.read_only else "operator token required"
            client = request.client.host if request.client else "unknown"
            # In the background: the refusal must not wait on (or depend on) the audit trail being up.
            threading.Thread(
                target=_audit_refusal, args=(console.settings, f"console-client@{client}", alert_id, reason),
                name="audit-refusal", daemon=True,
            ).start()  # fmt: skip
            raise HTTPException(403, reason)
        rec = state.alert(alert_id)
        if rec is None:
            ACKS.labels("unknown").inc()
            raise HTTPException(404, f"no alert {alert_id!r}")
        body: dict[str, Any] = {}
        with contextlib.suppress(ValueError):
            body = await request.json() if await request.body() else {}
        by = str(body.get("by") or "operator")[:200]
        note = str(body.get("note") or "")[:2000]
        from processors.analytics.acks import AckError, publish_ack

        try:
            record = await asyncio.to_thread(publish_ack, console.settings, rec, by, note, source="console")
        except AckError as exc:
            ACKS.labels("failed").inc()
            raise HTTPException(503, str(exc)) from None
        ACKS.labels("written").inc()
        log.info("alert acknowledged", extra={"alert_id": alert_id, "by": by, "ack_id": record.ack_id})
        state.on_ack(record)  # the broker has it; the feed will read the same ack back (idempotent)
        return JSONResponse({"ack": asdict(record), "alert": state.alert_view(alert_id)})

    @app.get("/api/traffic")
    def traffic() -> dict[str, Any]:
        doc = dict(console.traffic.series())
        doc["locations"] = {
            c["camera_id"]: [c["latitude"], c["longitude"], c["name"]]
            for c in state.cameras()
            if c["latitude"] is not None
        }
        return doc

    @app.get("/api/stream")
    async def stream(request: Request) -> EventSourceResponse:
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[tuple[str, dict[str, Any]]] = asyncio.Queue(maxsize=10_000)

        def put(item: tuple[str, dict[str, Any]]) -> None:
            with contextlib.suppress(asyncio.QueueFull):  # a stalled browser misses updates, not memory
                queue.put_nowait(item)

        def listener(kind: str, doc: dict[str, Any]) -> None:
            with contextlib.suppress(RuntimeError):  # loop closed while shutting down
                loop.call_soon_threadsafe(put, (kind, doc))

        unsubscribe = state.subscribe(listener)
        shutdown = anyio.Event()  # set by sse-starlette when the server stops (SIGTERM)

        async def events() -> Any:
            SSE_CLIENTS.inc()
            try:
                next_cameras = 0.0
                while not shutdown.is_set():
                    wait = next_cameras - loop.time()
                    if wait <= 0:
                        yield {"event": "cameras", "data": json.dumps(state.cameras())}
                        next_cameras = loop.time() + 2.0
                        continue
                    try:
                        kind, doc = await asyncio.wait_for(queue.get(), min(wait, 0.5))
                    except TimeoutError:
                        continue
                    yield {"event": kind, "data": json.dumps(doc)}
            finally:
                unsubscribe()
                SSE_CLIENTS.dec()

        # The stream ends itself on shutdown (within 0.5 s), inside uvicorn's graceful-shutdown time.
        return EventSourceResponse(events(), ping=15, shutdown_event=shutdown, shutdown_grace_period=1.5)

    @app.get("/metrics", include_in_schema=False)
    def metrics() -> Response:
        return Response(generate_latest(REGISTRY), media_type=CONTENT_TYPE_LATEST)

    @app.get("/healthz", include_in_schema=False)
    def healthz() -> JSONResponse:
        try:
            ok, details = console.health()
        except Exception as exc:  # a failing check is itself unhealthy, never a crash
            ok, details = False, {"error": repr(exc)}
        doc = {"status": "ok" if ok else "unhealthy", "service": "console", "time": time.time(), **details}
        return JSONResponse(doc, status_code=200 if ok else 503)

    return app
