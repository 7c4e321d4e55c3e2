"""Video sources through OpenCV/FFmpeg: a file (optionally looped), an RTSP/HTTP URL, a capture device
index, or a folder of images. Each yields decoded BGR frames with their capture time (ms, UTC).

Live sources (URL, device) read on a thread of their own into a one-frame mailbox, so a slow consumer
never stalls the stream (stale frames are replaced and counted), and a lost stream reconnects with
exponential backoff and jitter. Only the redacted URL ever reaches a log line or an error message.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from producers.redact import redact_text, redact_url, url_secrets

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff"}
NETWORK_SCHEMES = ("rtsp://", "rtsps://", "rtmp://", "http://", "https://", "udp://", "tcp://")


class SourceError(RuntimeError):
    """A source that cannot deliver frames at all (missing file, not a video, no decodable frame)."""


def now_ms() -> int:
    return time.time_ns() // 1_000_000


@dataclass(slots=True)
class Captured:
    """One decoded frame: BGR pixels, capture time (ms since the epoch, UTC), index in its pass."""

    image: np.ndarray
    ts_ms: int
    index: int


@dataclass(slots=True)
class SourceStats:
    """Counters every source keeps (read by metrics and heartbeats; written by one thread)."""

    frames_read: int = 0
    decode_errors: int = 0
    reconnects: int = 0
    stale_dropped: int = 0  # live frames replaced before the consumer took them
    connected: bool = False
    last_error: str | None = None
    errors: list[str] = field(default_factory=list)  # recent distinct errors, newest last

    def error(self, message: str) -> None:
        self.last_error = message
        if not self.errors or self.errors[-1] != message:
            self.errors = [*self.errors[-9:], message]


class Backoff:
    """Exponential backoff with +/- ``jitter`` fraction: initial, 2x, 4x ... capped at ``maximum``."""

    def __init__(
        self, initial: float, maximum: float, jitter: float = 0.3, rng: random.Random | None = None
    ) -> None:
        self.initial, self.maximum, self.jitter = initial, maximum, jitter
        self.attempt = 0
        self._rng = rng or random.Random()

    def next(self) -> float:
        base = min(self.maximum, self.initial * (2**self.attempt))
        self.attempt += 1
        # Jitter spreads the reconnects of many cameras that lost one switch at the same moment.
        return max(0.0, base * (1 + self._rng.uniform(-self.jitter, self.jitter)))

    def reset(self) -> None:
        self.attempt = 0


Want = Callable[[int], bool]  # capture time (ms) -> does the consumer want this frame's pixels?


class Source:
    """Base: ``frames(stop, want)`` yields ``Captured`` until the source ends or ``stop`` is set.

    A source with ``filters = True`` asks ``want(ts_ms)`` for every decoded frame and skips the
    colour conversion of frames nobody wants (2 of 3 at 30 -> 10 fps); other sources yield every
    frame and leave the choice to the caller.
    """

    live = False
    filters = False

    def __init__(self, name: str) -> None:
        self.name = name  # redacted: safe for logs, metrics and records
        self.stats = SourceStats()

    def frames(self, stop: threading.Event, want: Want | None = None) -> Iterator[Captured]:
        raise NotImplementedError

    def close(self) -> None:
        """Release the underlying capture (idempotent)."""


def _pace(stop: threading.Event, start_mono: float, offset_ms: float) -> bool:
    """Sleep until ``offset_ms`` after ``start_mono``; True if stopped meanwhile."""
    delay = start_mono + offset_ms / 1000.0 - time.monotonic()
    return stop.wait(delay) if delay > 0 else stop.is_set()


class FileSource(Source):
    """A video file. Capture time = start time + the frame's presentation time (+ completed loops)."""

    filters = True

    def __init__(self, path: Path, *, loop: bool = False, realtime: bool = True) -> None:
        super().__init__(str(path))
        self.path, self.loop, self.realtime = path, loop, realtime
        if not path.is_file():
            raise SourceError(f"video file not found: {path}")
        probe = cv2.VideoCapture(str(path))
        try:
            if not probe.isOpened():
                raise SourceError(f"cannot open {path} as a video (not a video, or an unsupported codec)")
            self.fps = probe.get(cv2.CAP_PROP_FPS) or 25.0
            self.frame_count = int(probe.get(cv2.CAP_PROP_FRAME_COUNT) or 0)
        finally:
            probe.release()
        self._cap: cv2.VideoCapture | None = None

    def frames(self, stop: threading.Event, want: Want | None = None) -> Iterator[Captured]:
        start_ms, start_mono = now_ms(), time.monotonic()
        offset_ms = 0.0  # time of all completed passes
        interval = 1000.0 / self.fps
        passes = 0
        while not stop.is_set():
            cap = self._cap = cv2.VideoCapture(str(self.path))
            index, last_pts = 0, -interval
            try:
                while not stop.is_set():
                    if not cap.grab():  # demux + decode; the BGR conversion waits for retrieve()
                        break
                    pts = cap.get(cv2.CAP_PROP_POS_MSEC)
                    if not pts > last_pts:  # missing or broken timestamps: fall back to the frame rate
                        pts = last_pts + interval
                    last_pts = pts
                    t = offset_ms + pts
                    ts_ms = start_ms + round(t)
                    self.stats.frames_read += 1
                    self.stats.connected = True
                    index += 1
                    if want is not None and not want(ts_ms):
                        continue
                    ok, image = cap.retrieve()
                    if not ok or image is None:
                        self.stats.decode_errors += 1
                        self.stats.error(f"{self.path.name}: undecodable frame {index - 1} (skipped)")
                        continue
                    if self.realtime and _pace(stop, start_mono, t):
                        return
                    yield Captured(image, ts_ms, index - 1)
            finally:
                cap.release()
                self._cap = None
            if stop.is_set():
                return
            if index == 0:
                raise SourceError(f"no decodable frame in {self.path}")
            if self.frame_count and index < self.frame_count - 1:
                # The container promised more: a truncated upload or a corrupt tail.
                self.stats.decode_errors += 1
                self.stats.error(
                    f"{self.path.name}: stream ended at frame {index} of {self.frame_count} "
                    "(truncated or corrupt file)"
                )
                log.warning(
                    "video ended early",
                    extra={"source": self.name, "frames": index, "expected": self.frame_count},
                )
            passes += 1
            if not self.loop:
                return
            offset_ms += last_pts + interval

    def close(self) -> None:
        if self._cap is not None:
            self._cap.release()


class FolderSource(Source):
    """A folder of images in name order, timed at ``fps``; undecodable files are counted and skipped."""

    def __init__(self, path: Path, *, fps: float = 10.0, loop: bool = False, realtime: bool = True) -> None:
        super().__init__(str(path))
        self.path, self.fps, self.loop, self.realtime = path, fps, loop, realtime
        self.files = sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        if not self.files:
            raise SourceError(f"no images ({', '.join(sorted(IMAGE_SUFFIXES))}) in folder {path}")

    def frames(self, stop: threading.Event, want: Want | None = None) -> Iterator[Captured]:
        start_ms, start_mono = now_ms(), time.monotonic()
        interval = 1000.0 / self.fps
        slot = 0
        while not stop.is_set():
            good = 0
            for index, file in enumerate(self.files):
                t = slot * interval
                slot += 1
                image = cv2.imread(str(file), cv2.IMREAD_COLOR)
                if image is None or image.size == 0:
                    self.stats.decode_errors += 1
                    self.stats.error(f"undecodable image {file.name} (skipped)")
                    log.warning("undecodable image skipped", extra={"source": self.name, "file": file.name})
                    continue
                if self.realtime and _pace(stop, start_mono, t):
                    return
                good += 1
                self.stats.frames_read += 1
                self.stats.connected = True
                yield Captured(image, start_ms + round(t), index)
                if stop.is_set():
                    return
            if good == 0:
                raise SourceError(f"no decodable image in folder {self.path}")
            if not self.loop:
                return


class LiveSource(Source):
    """An RTSP/HTTP URL or a device index, read on its own thread; reconnects forever with backoff."""

    live = True

    def __init__(
        self,
        target: str | int,
        *,
        open_timeout_s: float = 5.0,
        backoff: Backoff | None = None,
        max_attempts: int | None = None,
    ) -> None:
        super().__init__(redact_url(target) if isinstance(target, str) else f"device:{target}")
        self._target = target  # the only place the credentials live
        self._secrets = url_secrets(target) if isinstance(target, str) else []
        self.open_timeout_ms = int(open_timeout_s * 1000)
        self.backoff = backoff or Backoff(0.5, 30.0)
        self.max_attempts = max_attempts  # consecutive failed opens before giving up; None: never
        self._cond = threading.Condition()
        self._latest: tuple[np.ndarray, int] | None = None
        self._ended: BaseException | None = None
        self._cap: cv2.VideoCapture | None = None

    def _open(self) -> cv2.VideoCapture:
        if isinstance(self._target, int):
            return cv2.VideoCapture(self._target)
        params = [
            cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, self.open_timeout_ms,
            cv2.CAP_PROP_READ_TIMEOUT_MSEC, self.open_timeout_ms,
        ]  # fmt: skip
        return cv2.VideoCapture(self._target, cv2.CAP_FFMPEG, params)

    def _fail(self, message: str) -> None:
        message = redact_text(message, self._secrets)
        self.stats.connected = False
        self.stats.error(message)

    def _reader(self, stop: threading.Event) -> None:
        """Open, read into the mailbox, reconnect on loss; ``stop`` here is the generator's halt event."""
        failures = 0
        index = 0
        try:
            while not stop.is_set():
                try:
                    cap = self._open()
                except cv2.error as exc:  # FFmpeg errors may echo the URL: redacted in _fail
                    cap = None
                    self._fail(f"cannot open {self.name}: {exc}")
                if cap is None or not cap.isOpened():
                    if cap is not None:
                        cap.release()
                        self._fail(f"cannot open {self.name} (unreachable, refused or not a stream)")
                    failures += 1
                    if self.max_attempts is not None and failures >= self.max_attempts:
                        raise SourceError(f"{self.stats.last_error}; gave up after {failures} attempts")
                    self.stats.reconnects += 1
                    delay = self.backoff.next()
                    log.warning(
                        "source unavailable; retrying",
                        extra={
                            "source": self.name,
                            "error": self.stats.last_error,
                            "retry_in_s": round(delay, 2),
                        },
                    )
                    if stop.wait(delay):
                        return
                    continue
                self._cap = cap
                self.stats.connected = True
                log.info("source connected", extra={"source": self.name})
                while not stop.is_set():
                    ok, image = cap.read()
                    if not ok or image is None:
                        self._fail(f"stream {self.name} lost (read failed)")
                        break
                    failures = 0
                    self.backoff.reset()
                    self.stats.frames_read += 1
                    with self._cond:
                        if self._latest is not None:
                            self.stats.stale_dropped += 1
                        self._latest = (image, now_ms())
                        self._cond.notify()
                    index += 1
                cap.release()
                self._cap = None
                if stop.is_set():
                    return
                self.stats.reconnects += 1
                delay = self.backoff.next()
                log.warning(
                    "stream lost; reconnecting", extra={"source": self.name, "retry_in_s": round(delay, 2)}
                )
                if stop.wait(delay):
                    return
        except BaseException as exc:
            self._ended = exc
        finally:
            with self._cond:
                if self._ended is None:
                    self._ended = StopIteration()
                self._cond.notify_all()

    def frames(self, stop: threading.Event, want: Want | None = None) -> Iterator[Captured]:
        halt = threading.Event()  # ends the reader when the caller stops or abandons this generator
        thread = threading.Thread(target=self._reader, args=(halt,), name="live-source", daemon=True)
        thread.start()
        index = 0
        try:
            while True:
                with self._cond:
                    while self._latest is None and self._ended is None and not stop.is_set():
                        self._cond.wait(0.2)
                    item, self._latest = self._latest, None
                    ended = self._ended
                if stop.is_set():
                    return
                if item is not None:
                    yield Captured(item[0], item[1], index)
                    index += 1
                    continue
                if ended is not None:
                    if isinstance(ended, SourceError):
                        raise ended
                    if not isinstance(ended, StopIteration):
                        raise SourceError(f"{self.name}: {redact_text(repr(ended), self._secrets)}")
                    return
        finally:
            halt.set()
            thread.join(timeout=1.0)

    def close(self) -> None:
        if self._cap is not None:
            self._cap.release()


def open_source(
    spec: str,
    *,
    loop: bool = False,
    realtime: bool = True,
    folder_fps: float = 10.0,
    open_timeout_s: float = 5.0,
    backoff: Backoff | None = None,
    max_attempts: int | None = None,
) -> Source:
    """The source ``spec`` names: a URL, a device index (``0``, ``/dev/video0``), a folder or a file.

    Raises ``SourceError`` with a clear message for a missing path or a file that is not a video.
    """
    spec = spec.strip()
    if spec.lower().startswith(NETWORK_SCHEMES):
        return LiveSource(spec, open_timeout_s=open_timeout_s, backoff=backoff, max_attempts=max_attempts)
    if spec.isdigit():
        return LiveSource(int(spec), backoff=backoff, max_attempts=max_attempts)
    if spec.startswith("/dev/video") and spec[10:].isdigit():
        return LiveSource(int(spec[10:]), backoff=backoff, max_attempts=max_attempts)
    path = Path(spec).expanduser()
    if path.is_dir():
        return FolderSource(path, fps=folder_fps, loop=loop, realtime=realtime)
    if not path.exists():
        raise SourceError(f"source not found: {redact_url(spec)} (no such file or folder, and not a URL)")
    return FileSource(path, loop=loop, realtime=realtime)
