"""Live sources over loopback: an HTTP stream that ends is reconnected with backoff; a publisher whose
broker never answers keeps capture unblocked and drops the oldest non-keyframes first, counted."""

from __future__ import annotations

import functools
import socket
import threading
import time
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer

import pytest

from producers.publisher import OutRecord, Publisher
from producers.sources import Backoff, LiveSource, SourceError, open_source
from tests.edge_helpers import CLIP

pytestmark = pytest.mark.integration


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class _Quiet(SimpleHTTPRequestHandler):
    def log_message(self, *args: object) -> None:
        return


class _Server(ThreadingHTTPServer):
    def handle_error(self, request: object, client_address: object) -> None:
        return  # the capture closes the connection mid-transfer on stop: not an error here


@pytest.fixture()
def http_clip_url():
    handler = functools.partial(_Quiet, directory=str(CLIP.parent))
    server = _Server(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/{CLIP.name}?token=s3cret"
    finally:
        server.shutdown()
        server.server_close()


def test_unreachable_rtsp_gives_up_after_max_attempts_without_leaking_credentials() -> None:
    """An unreachable URL with credentials: the name, the errors and the reconnect count are safe."""
    src = open_source(
        f"rtsp://admin:hunter2@127.0.0.1:{_closed_port()}/x",
        open_timeout_s=1,
        backoff=Backoff(0.05, 0.1),
        max_attempts=2,
    )
    assert "hunter2" not in src.name and "admin" not in src.name
    with pytest.raises(SourceError) as err:
        list(src.frames(threading.Event()))
    assert "hunter2" not in str(err.value) and "gave up after 2 attempts" in str(err.value)
    assert src.stats.reconnects == 1 and all("hunter2" not in e for e in src.stats.errors)


def test_http_stream_reconnects_after_the_stream_ends(http_clip_url) -> None:
    src = open_source(http_clip_url, backoff=Backoff(0.1, 0.5, 0.3))
    assert isinstance(src, LiveSource) and "s3cret" not in src.name and "token=***" in src.name
    stop = threading.Event()
    got = []
    start = time.monotonic()
    for cap in src.frames(stop):
        got.append(cap)
        if src.stats.reconnects >= 1 and len(got) >= 20 and src.stats.frames_read > 377:
            stop.set()
        if time.monotonic() - start > 60:
            break
    assert src.stats.reconnects >= 1, "the stream ended once and came back"
    assert src.stats.frames_read > 377  # more than one pass of the clip
    ts = [c.ts_ms for c in got]
    assert ts == sorted(ts)  # wall-clock capture times of a live source
    # The consumer here is slower than decoding: stale frames were replaced, counted, not queued.
    # (at most one frame was still in the mailbox when the consumer stopped)
    assert 0 <= src.stats.frames_read - (src.stats.stale_dropped + len(got)) <= 1


def test_slow_kafka_never_blocks_capture_and_drops_non_keyframes_first(tmp_path) -> None:
    with socket.socket() as silent:  # accepts connections, never answers: Kafka "slow" forever
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        pub = Publisher(
            {"bootstrap.servers": f"127.0.0.1:{silent.getsockname()[1]}"},
            tmp_path / "spool",
            queue_max_records=10,
            inflight_max=5,
            spool_after_s=3600,  # never declared unreachable: the queue bound must do the work
        ).start()
        slowest = 0.0
        for seq in range(300):
            t0 = time.perf_counter()
            pub.submit(
                OutRecord("its.frames.v1", b"cam", b"x" * 1000, "cam", droppable=seq % 10 != 0, seq=seq)
            )
            slowest = max(slowest, time.perf_counter() - t0)
            time.sleep(0.001)
        time.sleep(0.2)
        kept = [r.seq for r in list(pub.queue._q)]
        dropped = dict(pub.stats.dropped)
        pub.close(timeout=0.5)
    assert slowest < 0.05, f"submit blocked for {slowest:.3f} s"
    # 270 non-keyframes, 30 keyframes, room for 10 queued + 5 in flight: non-keyframes go first
    # (all but the few that were sent); a keyframe is dropped only once the queue holds nothing else.
    assert dropped["queue_full_nonkey"] >= 260
    assert kept and all(s % 10 == 0 for s in kept)
    assert dropped.get("queue_full", 0) <= 30 - sum(1 for s in kept if s % 10 == 0)
    assert pub.dropped_for("cam") == sum(dropped.values())
