"""Resolving the Apache Kafka broker jars from Maven Central into a local cache (once per version)."""

from __future__ import annotations

import fcntl
import logging
import shutil
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from infra.kafka.errors import KafkaRuntimeError
from infra.kafka.java import require_java, require_maven

log = logging.getLogger(__name__)

_MARKER = ".complete"


def kafka_home(cache_dir: Path, version: str) -> Path:
    """Where one Kafka version's jars are cached: ``<cache_dir>/kafka-<version>``."""
    return cache_dir / f"kafka-{version}"


def libs_dir(cache_dir: Path, version: str) -> Path:
    return kafka_home(cache_dir, version) / "libs"


def logging_backend(version: str) -> list[tuple[str, str, str]]:
    """Maven coordinates of the slf4j backend the broker needs; the Kafka POM carries none."""
    major = int(version.split(".")[0])
    if major != 3:
        # 4.x moved to log4j2 with a different config format; this runner writes log4j 1 configs.
        raise KafkaRuntimeError(
            f"Kafka {version} is not supported by the local runner; use a 3.x version (3.9.1)"
        )
    return [("org.slf4j", "slf4j-reload4j", "1.7.36")]


def render_pom(version: str) -> str:
    """A throwaway POM whose runtime dependencies are exactly the broker's classpath."""
    deps = [("org.apache.kafka", "kafka_2.13", version), *logging_backend(version)]
    dep_xml = "\n".join(
        f"    <dependency><groupId>{g}</groupId><artifactId>{a}</artifactId>"
        f"<version>{v}</version></dependency>"
        for g, a, v in deps
    )
    return (
        '<project xmlns="http://maven.apache.org/POM/4.0.0">\n'
        "  <modelVersion>4.0.0</modelVersion>\n"
        f"  <groupId>its</groupId><artifactId>kafka-runtime</artifactId><version>{version}</version>\n"
        "  <packaging>pom</packaging>\n"
        f"  <dependencies>\n{dep_xml}\n  </dependencies>\n"
        "</project>\n"
    )


@contextmanager
def file_lock(path: Path) -> Iterator[None]:
    """An exclusive lock between processes (two test sessions fetching at once must not mix files)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def jars_ready(cache_dir: Path, version: str) -> bool:
    return (libs_dir(cache_dir, version) / _MARKER).is_file()


def ensure_jars(cache_dir: Path, version: str, *, timeout: float = 900.0) -> Path:
    """Return the directory holding every jar of Kafka ``version``, fetching them with Maven if needed.

    Idempotent: a marker file is written only after a complete fetch; Maven's own ``~/.m2`` cache makes
    a refetch cheap. Jars land in a temporary folder first so that an interrupted fetch leaves nothing
    that looks usable.
    """
    home = kafka_home(cache_dir, version)
    libs = home / "libs"
    if (libs / _MARKER).is_file():
        return libs
    with file_lock(home / ".lock"):
        if (libs / _MARKER).is_file():  # another process finished while we waited
            return libs
        require_java()  # Maven itself runs on Java; fail with the install hint, not Maven's
        mvn = require_maven()
        (home / "pom.xml").write_text(render_pom(version))
        staging = home / "libs.partial"
        shutil.rmtree(staging, ignore_errors=True)
        mvn_log = home / "mvn.log"
        cmd = [
            str(mvn), "-q", "-B", "dependency:copy-dependencies",
            f"-DoutputDirectory={staging.name}", "-DincludeScope=runtime",
        ]  # fmt: skip
        log.info("fetching Kafka jars with Maven", extra={"version": version, "dir": str(libs)})
        started = time.monotonic()
        try:
            with mvn_log.open("w") as out:
                proc = subprocess.run(
                    cmd, cwd=home, stdout=out, stderr=subprocess.STDOUT, timeout=timeout, check=False
                )
        except subprocess.TimeoutExpired as exc:
            raise KafkaRuntimeError(
                f"Maven did not finish fetching Kafka {version} in {timeout:.0f} s"
            ) from exc
        jars = sorted(staging.glob("*.jar")) if staging.is_dir() else []
        if proc.returncode != 0 or not any(j.name == f"kafka_2.13-{version}.jar" for j in jars):
            tail = "\n".join(mvn_log.read_text(errors="replace").splitlines()[-30:])
            raise KafkaRuntimeError(
                f"Maven could not fetch org.apache.kafka:kafka_2.13:{version} (exit {proc.returncode}); "
                f"is Maven Central reachable? Full log: {mvn_log}\n{tail}"
            )
        shutil.rmtree(libs, ignore_errors=True)
        staging.rename(libs)
        (libs / _MARKER).write_text("\n".join(j.name for j in jars) + "\n")
        log.info(
            "Kafka jars ready",
            extra={"version": version, "jars": len(jars), "seconds": round(time.monotonic() - started, 1)},
        )
        return libs
