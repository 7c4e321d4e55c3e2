"""Finding the tools the local broker needs: a Java 17+ runtime and Maven, with install hints."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from functools import lru_cache
from pathlib import Path

from infra.kafka.errors import KafkaPrerequisiteError

MIN_JAVA = 17
_JAVA_HINT = "install a Java 17+ runtime (Debian/Ubuntu: apt-get install openjdk-17-jre-headless)"
_MAVEN_HINT = "install Maven (Debian/Ubuntu: apt-get install maven)"


def find_java() -> Path:
    """The ``java`` executable: ``$JAVA_HOME/bin/java`` if set, else the one on PATH."""
    java_home = os.environ.get("JAVA_HOME")
    if java_home and (Path(java_home) / "bin" / "java").is_file():
        return Path(java_home) / "bin" / "java"
    found = shutil.which("java")
    if not found:
        raise KafkaPrerequisiteError(f"`java` is not on PATH: {_JAVA_HINT}")
    return Path(found)


def parse_java_major(version_output: str) -> int:
    """Major version from ``java -version`` output ("1.8.0_392" is 8, "17.0.15" is 17)."""
    match = re.search(r'version "(\d+)(?:\.(\d+))?', version_output)
    if not match:
        raise KafkaPrerequisiteError(f"cannot read the Java version from: {version_output.strip()[:200]!r}")
    major = int(match.group(1))
    return int(match.group(2) or 0) if major == 1 else major


@lru_cache(maxsize=4)
def _java_major(java: Path) -> int:
    # `java -version` writes to stderr; cached because a JVM start costs ~0.1-0.5 s.
    proc = subprocess.run([str(java), "-version"], capture_output=True, text=True, timeout=60, check=False)
    return parse_java_major(proc.stderr + proc.stdout)


def require_java() -> Path:
    """The ``java`` executable, checked to be version 17 or newer."""
    java = find_java()
    major = _java_major(java)
    if major < MIN_JAVA:
        raise KafkaPrerequisiteError(
            f"{java} is Java {major}; Kafka here needs Java {MIN_JAVA}+: {_JAVA_HINT}"
        )
    return java


def require_maven() -> Path:
    """The ``mvn`` executable (only needed while the Kafka jars are not cached yet)."""
    found = shutil.which("mvn")
    if not found:
        raise KafkaPrerequisiteError(
            f"`mvn` is not on PATH and the Kafka jars are not cached yet: {_MAVEN_HINT}"
        )
    return Path(found)
