"""The supervisor restarts a dead component, lets a finished job be, and stops everything it started."""

from __future__ import annotations

import signal
import sys
import time

import pytest

from its.supervisor import Component, Supervisor

pytestmark = pytest.mark.unit

LOOP = "\nwhile True: time.sleep(0.1)"
GRACEFUL = [
    sys.executable,
    "-c",
    "import signal, sys, time\nsignal.signal(signal.SIGTERM, lambda *a: sys.exit(0))" + LOOP,
]
IGNORING = [sys.executable, "-c", "import signal, time\nsignal.signal(signal.SIGTERM, signal.SIG_IGN)" + LOOP]


def test_dead_component_is_restarted_and_all_stop(tmp_path) -> None:
    with Supervisor(tmp_path) as sup:
        sup.start(Component("svc", GRACEFUL))
        sup.start(Component("job", [sys.executable, "-c", "print('done')"], finite=True))
        first_pid = sup.components["svc"].process.pid
        time.sleep(0.5)
        sup.kill("svc", signal.SIGKILL)
        time.sleep(0.3)
        assert sup.poll() == ["svc"]
        assert sup.components["svc"].process.pid != first_pid and sup.running("svc")
        assert sup.components["svc"].restarts == 1
        assert sup.components["job"].exit_code == 0 and sup.components["job"].restarts == 0
        time.sleep(1.0)  # let the new process install its SIGTERM handler before we send one
        codes = sup.stop(timeout=5)
    assert codes["svc"] == 0  # SIGTERM handled: a clean exit
    assert (tmp_path / "job.log").read_text().strip() == "done"


def test_component_that_ignores_sigterm_is_killed(tmp_path) -> None:
    sup = Supervisor(tmp_path)
    sup.start(Component("stubborn", IGNORING))
    time.sleep(0.5)
    codes = sup.stop(timeout=1)
    assert codes["stubborn"] == -signal.SIGKILL


def test_gives_up_after_max_restarts(tmp_path) -> None:
    sup = Supervisor(tmp_path)
    sup.start(Component("crash", [sys.executable, "-c", "raise SystemExit(3)"], max_restarts=1))
    time.sleep(0.5)
    assert sup.poll() == ["crash"]
    time.sleep(0.5)
    assert sup.poll() == []
    assert sup.components["crash"].exit_code == 3 and sup.components["crash"].restarts == 1
    sup.stop()
