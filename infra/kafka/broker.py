"""The local Apache Kafka broker process: KRaft, one combined broker+controller node on one machine.

State lives under ``<data_dir>/kafka``::

    config/server.properties, config/log4j.properties   rewritten on every start
    data/                                              log.dirs (formatted once, meta.properties)
    logs/server.log, logs/kafka.out                    broker log (rolling) and JVM stdout/stderr
    kafka.pid, kafka.state.json                        the running process, its version and bootstrap
"""

from __future__ import annotations

import base64
import contextlib
import json
import logging
import os
import re
import signal
import socket
import subprocess
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient, NewTopic

from infra.kafka.acls import acl_table, create_acls, upsert_scram_users
from infra.kafka.config import log4j_properties, render_properties, server_properties
from infra.kafka.errors import KafkaRuntimeError
from infra.kafka.jars import ensure_jars, file_lock
from infra.kafka.java import require_java
from infra.kafka.security import BrokerSecurity, Via
from infra.process import process_alive

if TYPE_CHECKING:
    from its.settings import Settings

log = logging.getLogger(__name__)

_VERSION_LINE = re.compile(r"Kafka version: (\S+)")
_PROBE_TOPIC = "__its_readiness_probe"


@dataclass(frozen=True, slots=True)
class KafkaStatus:
    """What ``its kafka status`` shows about the local broker process."""

    running: bool
    pid: int | None
    version: str | None  # from the broker's own "Kafka version: X" log line
    bootstrap: str
    controller: str
    cluster_id: str | None
    data_dir: Path
    log_file: Path
    started_at: float | None  # epoch seconds
    secure: bool = False  # SASL_SSL + mutual TLS + ACLs (``LocalKafka(secure=True)``)
    mtls_bootstrap: str | None = None

    def as_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["data_dir"], out["log_file"] = str(self.data_dir), str(self.log_file)
        return out


def _port_in_use(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        # SO_REUSEADDR: a socket in TIME_WAIT from the previous broker must not count as taken.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return True
    return False


def _tail(path: Path, lines: int) -> list[str]:
    if not path.is_file():
        return []
    with path.open("rb") as handle:
        handle.seek(0, os.SEEK_END)
        size = handle.tell()
        handle.seek(max(0, size - 256 * 1024))  # the last lines fit well within 256 KiB
        text = handle.read().decode("utf-8", errors="replace")
    return text.splitlines()[-lines:]


class LocalKafka:
    """A real Apache Kafka broker (KRaft, single node) run from jars fetched from Maven Central."""

    def __init__(
        self,
        data_dir: Path,
        cache_dir: Path,
        version: str = "3.9.1",
        port: int = 9092,
        controller_port: int = 9093,
        *,
        host: str = "127.0.0.1",
        heap: str = "768m",
        extra_properties: dict[str, str] | None = None,
        secure: bool = False,
        mtls_port: int | None = None,
        registry_topic: str = "_its_schemas",
        jvm_options: tuple[str, ...] = (),
    ) -> None:
        if port == controller_port:
            raise KafkaRuntimeError(f"broker port and controller port are both {port}; they must differ")
        if secure and mtls_port in (None, port, controller_port):
            raise KafkaRuntimeError(
                "a secure broker needs an mTLS port other than its broker/controller ports"
            )
        self.data_dir = Path(data_dir).expanduser().resolve()
        self.cache_dir = Path(cache_dir).expanduser().resolve()
        self.version = version
        self.host = host
        self.port = port
        self.controller_port = controller_port
        self.heap = heap
        self.extra_properties = dict(extra_properties or {})
        self.secure = secure
        self.mtls_port = mtls_port
        self.registry_topic = registry_topic  # the schema registry principal's topic (ACL)
        self.jvm_options = tuple(jvm_options)  # e.g. a short-lived test broker's JIT settings
        self._proc: subprocess.Popen[bytes] | None = None

    @classmethod
    def from_settings(cls, settings: Settings, *, secure: bool = False) -> LocalKafka:
        host, port = settings.kafka_host_port
        return cls(
            settings.data_path,
            settings.cache_path,
            settings.kafka_version,
            port,
            settings.kafka_controller_port,
            host=host,
            secure=secure,
            mtls_port=settings.kafka_mtls_port if secure else None,
            registry_topic=settings.schema_registry_topic,
        )

    # Paths ------------------------------------------------------------------------------------------
    @property
    def home(self) -> Path:
        return self.data_dir / "kafka"

    @property
    def config_file(self) -> Path:
        return self.home / "config" / "server.properties"

    @property
    def log4j_file(self) -> Path:
        return self.home / "config" / "log4j.properties"

    @property
    def log_dirs(self) -> Path:
        return self.home / "data"

    @property
    def logs_dir(self) -> Path:
        return self.home / "logs"

    @property
    def log_file(self) -> Path:
        return self.logs_dir / "server.log"

    @property
    def stdout_file(self) -> Path:
        return self.logs_dir / "kafka.out"

    @property
    def pid_file(self) -> Path:
        return self.home / "kafka.pid"

    @property
    def state_file(self) -> Path:
        return self.home / "kafka.state.json"

    @property
    def bootstrap(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def mtls_bootstrap(self) -> str | None:
        return f"{self.host}:{self.mtls_port}" if self.secure else None

    # Security (secure mode) -------------------------------------------------------------------------
    @property
    def security(self) -> BrokerSecurity:
        """Certificates, passwords and signing keys of this broker (``secure=True`` only)."""
        if not self.secure:
            raise KafkaRuntimeError("this broker runs without security (start it with secure=True)")
        return BrokerSecurity(self.home, self.host)

    def client_config(self, principal: str = "admin", via: Via = "sasl") -> dict[str, object]:
        """librdkafka settings to connect as ``principal``; plain ``bootstrap.servers`` without security."""
        if not self.secure:
            return {"bootstrap.servers": self.bootstrap}
        assert self.mtls_bootstrap is not None
        return self.security.client_config(
            principal, bootstrap=self.bootstrap, mtls_bootstrap=self.mtls_bootstrap, via=via
        )

    def client_env(self, principal: str, via: Via = "sasl") -> dict[str, str]:
        """``ITS_*`` environment of a component that connects as ``principal`` (secure mode)."""
        assert self.mtls_bootstrap is not None
        return self.security.client_env(
            principal, bootstrap=self.bootstrap, mtls_bootstrap=self.mtls_bootstrap, via=via
        )

    def apply_security(self, timeout: float = 30.0) -> int:
        """SCRAM users and ACLs of every principal (idempotent; run at start and after ``add_edge_site``)."""
        admin = AdminClient(
            self.client_config("admin", via="mtls"), logger=logging.getLogger("infra.kafka.librdkafka")
        )
        upsert_scram_users(admin, self.security.passwords(), timeout)
        return create_acls(admin, acl_table(self.registry_topic, self.security.edge_sites()), timeout)

    def add_edge_site(self, camera_prefix: str) -> str:
        """Onboard an edge site: certificate, SCRAM user and WRITE ACLs; returns its principal."""
        principal = self.security.add_edge_site(camera_prefix)
        if self.is_running():
            self.apply_security()
        return principal

    # Preparation ------------------------------------------------------------------------------------
    def ensure_jars(self) -> Path:
        """The jar directory for this version, fetched with Maven on first use."""
        return ensure_jars(self.cache_dir, self.version)

    def write_config(self) -> Path:
        """(Re)write server.properties and log4j.properties; ports may change between starts."""
        self.config_file.parent.mkdir(parents=True, exist_ok=True)
        self.logs_dir.mkdir(parents=True, exist_ok=True)
        extra = dict(self.extra_properties)
        if self.secure:
            assert self.mtls_port is not None
            self.security.ensure()
            secure = self.security.server_properties(
                self.host, self.port, self.mtls_port, self.controller_port
            )
            extra = {**secure, **extra}
        props = server_properties(
            host=self.host,
            port=self.port,
            controller_port=self.controller_port,
            log_dirs=self.log_dirs,
            extra=extra,
        )
        self.config_file.write_text(render_properties(props))
        self.log4j_file.write_text(log4j_properties())
        return self.config_file

    def _java_cmd(self, main_class: str, *args: str, heap: str | None = None) -> list[str]:
        java = require_java()
        libs = self.ensure_jars()
        cmd = [str(java)]
        if heap:
            cmd += ["-Xms256m", f"-Xmx{heap}"]
        cmd += [
            "-XX:+UseG1GC",
            "-XX:MaxGCPauseMillis=20",
            "-XX:+ExitOnOutOfMemoryError",  # a half-dead broker is worse than a dead one
            "-Djava.awt.headless=true",
            *self.jvm_options,
            f"-Dlog4j.configuration=file:{self.log4j_file}",
            f"-Dkafka.logs.dir={self.logs_dir}",
            "-cp",
            f"{libs}/*",  # the JVM expands the wildcard itself (no shell involved)
            main_class,
            *args,
        ]
        return cmd

    def cluster_id(self) -> str | None:
        """The cluster id in ``meta.properties``, or None before the storage is formatted."""
        meta = self.log_dirs / "meta.properties"
        if not meta.is_file():
            return None
        for line in meta.read_text().splitlines():
            if line.startswith("cluster.id="):
                return line.split("=", 1)[1].strip()
        return None

    def format_storage(self) -> str:
        """Format the KRaft log directory once; returns the cluster id."""
        existing = self.cluster_id()
        if existing:
            return existing
        self.write_config()
        tool = "kafka.tools.StorageTool"
        if self.secure:
            # Kafka's Uuid text form (16 random bytes, URL-safe base64, no padding) without a JVM start.
            cluster_id = ""
            while not cluster_id or cluster_id.startswith("-"):
                cluster_id = base64.urlsafe_b64encode(os.urandom(16)).decode().rstrip("=")
        else:
            uuid = subprocess.run(
                self._java_cmd(tool, "random-uuid"), capture_output=True, text=True, timeout=120, check=False
            )
            cluster_id = (
                uuid.stdout.strip().splitlines()[-1] if uuid.returncode == 0 and uuid.stdout.strip() else ""
            )
        if not cluster_id:
            raise KafkaRuntimeError(f"StorageTool random-uuid failed: {(uuid.stderr or uuid.stdout)[-2000:]}")
        fmt = subprocess.run(
            self._java_cmd(tool, "format", "-t", cluster_id, "-c", str(self.config_file)),
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        if fmt.returncode != 0:
            raise KafkaRuntimeError(f"StorageTool format failed: {(fmt.stderr or fmt.stdout)[-2000:]}")
        log.info("formatted Kafka storage", extra={"cluster_id": cluster_id, "log_dirs": str(self.log_dirs)})
        return cluster_id

    # Process ----------------------------------------------------------------------------------------
    def pid(self) -> int | None:
        """The pid of this data directory's running broker, or None (stale pid files are ignored)."""
        try:
            pid = int(self.pid_file.read_text().strip())
        except (OSError, ValueError):
            return None
        if not process_alive(pid):
            return None
        cmdline = Path(f"/proc/{pid}/cmdline")
        if cmdline.exists():
            # Guard against pid reuse: the process must be a broker started with our config file.
            try:
                args = cmdline.read_bytes().split(b"\0")
            except OSError:
                return None
            if b"kafka.Kafka" not in args or str(self.config_file).encode() not in args:
                return None
        return pid

    def is_running(self) -> bool:
        return self.pid() is not None

    def start(self, timeout: float = 120.0) -> KafkaStatus:
        """Start the broker in the background and wait until it serves metadata and creates topics.

        A no-op if this data directory's broker is already running. Raises ``KafkaRuntimeError`` with
        the last log lines if the broker exits or is not ready within ``timeout`` seconds.
        """
        self.home.mkdir(parents=True, exist_ok=True)
        with file_lock(self.home / ".start.lock"):
            pid = self.pid()
            if pid is not None:
                log.info("Kafka already running", extra={"pid": pid, "bootstrap": self.bootstrap})
                return self.status()
            ports = [("broker", self.port), ("controller", self.controller_port)]
            if self.secure and self.mtls_port is not None:
                ports.append(("mTLS", self.mtls_port))
            for name, port in ports:
                if _port_in_use(self.host, port):
                    raise KafkaRuntimeError(
                        f"{self.host}:{port} ({name} port) is in use by another process, not by the broker "
                        f"of {self.data_dir}; stop that process or pick other ports "
                        "(ITS_KAFKA_BOOTSTRAP=127.0.0.1:<port>, ITS_KAFKA_CONTROLLER_PORT=<port>)"
                    )
            started = time.monotonic()
            self.ensure_jars()
            cluster_id = self.format_storage()
            self.write_config()
            cmd = self._java_cmd("kafka.Kafka", str(self.config_file), heap=self.heap)
            with self.stdout_file.open("ab") as out:
                # New session: the broker outlives this CLI and ignores its terminal's Ctrl-C.
                self._proc = subprocess.Popen(
                    cmd,
                    cwd=self.home,
                    stdin=subprocess.DEVNULL,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                    close_fds=True,
                )
            self.pid_file.write_text(f"{self._proc.pid}\n")
            log.info("Kafka starting", extra={"pid": self._proc.pid, "bootstrap": self.bootstrap})
            try:
                self._wait_ready(cluster_id, started + timeout)
                if self.secure:
                    self.apply_security()
            except BaseException:
                self.stop(timeout=10)
                raise
            version = self._version_from_log()
            if version and version != self.version:
                log.warning(
                    "broker reports another version", extra={"expected": self.version, "actual": version}
                )
            state = {
                "pid": self._proc.pid,
                "version": version,
                "bootstrap": self.bootstrap,
                "controller": f"{self.host}:{self.controller_port}",
                "cluster_id": cluster_id,
                "started_at": time.time(),
                "secure": self.secure,
                "mtls_bootstrap": self.mtls_bootstrap,
            }
            self.state_file.write_text(json.dumps(state, indent=2) + "\n")
            log.info(
                "Kafka ready",
                extra={**state, "seconds": round(time.monotonic() - started, 1)},
            )
            return self.status()

    def _wait_ready(self, cluster_id: str, deadline: float) -> None:
        """Poll until metadata comes from *our* cluster and the controller accepts a topic creation."""
        # Secure mode: the admin's certificate on the mTLS listener works before any SCRAM user exists.
        conf = (
            self.client_config("admin", via="mtls") if self.secure else {"bootstrap.servers": self.bootstrap}
        )
        admin = AdminClient(
            {**conf, "socket.timeout.ms": 2000}, logger=logging.getLogger("infra.kafka.librdkafka")
        )
        last_error = "no answer yet"
        while True:
            assert self._proc is not None
            code = self._proc.poll()
            if code is not None:
                context = self._failure_context()
                raise KafkaRuntimeError(
                    f"Kafka exited with code {code} while starting; last log lines:\n{context}"
                )
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise KafkaRuntimeError(
                    f"Kafka was not ready at {self.bootstrap} in time ({last_error}); "
                    f"last log lines:\n{self._failure_context()}"
                )
            try:
                meta = admin.list_topics(timeout=min(2.0, remaining))
                if meta.cluster_id != cluster_id:
                    raise KafkaRuntimeError(
                        f"{self.bootstrap} answers for cluster {meta.cluster_id}, not ours ({cluster_id})"
                    )
                # validate_only goes through the KRaft controller without leaving a topic behind.
                futures = admin.create_topics(
                    [NewTopic(_PROBE_TOPIC, 1, 1)], validate_only=True, request_timeout=min(5.0, remaining)
                )
                futures[_PROBE_TOPIC].result(timeout=min(6.0, remaining + 1))
                return
            except KafkaException as exc:
                last_error = str(exc.args[0] if exc.args else exc)
            time.sleep(0.25)

    def _failure_context(self, lines: int = 40) -> str:
        out = [*_tail(self.log_file, lines), *(f"[kafka.out] {x}" for x in _tail(self.stdout_file, 15))]
        return "\n".join(out) or f"(no log output; see {self.logs_dir})"

    def stop(self, timeout: float = 30.0) -> bool:
        """Stop the broker (SIGTERM, then SIGKILL after ``timeout``). Returns False if it was not running."""
        pid = self.pid()
        if pid is None:
            self._clear_state()
            return False
        log.info("Kafka stopping", extra={"pid": pid})
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)  # controlled shutdown: flushes logs, no recovery next start
        if not self._wait_exit(pid, timeout):
            log.warning("Kafka ignored SIGTERM; killing it", extra={"pid": pid, "timeout_s": timeout})
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            if not self._wait_exit(pid, 10.0):
                raise KafkaRuntimeError(f"Kafka (pid {pid}) is still alive after SIGKILL")
        self._clear_state()
        log.info("Kafka stopped", extra={"pid": pid})
        return True

    def _wait_exit(self, pid: int, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._proc is not None and self._proc.pid == pid:
                self._proc.poll()  # reap our own child so it does not linger as a zombie
            if not process_alive(pid):
                return True
            time.sleep(0.1)
        return False

    def _clear_state(self) -> None:
        self.pid_file.unlink(missing_ok=True)
        self.state_file.unlink(missing_ok=True)
        self._proc = None

    # Reporting --------------------------------------------------------------------------------------
    def _version_from_log(self) -> str | None:
        """The version the broker logged at start ("Kafka version: X"), newest log file first."""
        candidates = [self.log_file, *sorted(self.logs_dir.glob("server.log.*"))]
        for path in candidates:
            if not path.is_file():
                continue
            found = None
            with path.open("r", errors="replace") as handle:
                for line in handle:
                    match = _VERSION_LINE.search(line)
                    if match:
                        found = match.group(1)
            if found:
                return found
        return None

    def status(self) -> KafkaStatus:
        """The local broker's state, from the pid file, the state file and the broker log."""
        pid = self.pid()
        state: dict[str, Any] = {}
        if pid is not None:
            with contextlib.suppress(OSError, ValueError):
                state = json.loads(self.state_file.read_text())
        version = state.get("version") or (self._version_from_log() if pid is not None else None)
        return KafkaStatus(
            running=pid is not None,
            pid=pid,
            version=version,
            bootstrap=self.bootstrap,
            controller=f"{self.host}:{self.controller_port}",
            cluster_id=self.cluster_id(),
            data_dir=self.home,
            log_file=self.log_file,
            started_at=state.get("started_at"),
            secure=bool(state.get("secure", self.secure)),
            mtls_bootstrap=state.get("mtls_bootstrap", self.mtls_bootstrap),
        )

    def tail_log(self, lines: int = 50, *, stdout: bool = False) -> list[str]:
        """The last ``lines`` lines of ``server.log`` (or of the JVM's stdout with ``stdout=True``)."""
        return _tail(self.stdout_file if stdout else self.log_file, lines)
