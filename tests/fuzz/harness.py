"""What the three harnesses share: running under atheris, and byte-level mutation of a valid seed."""

from __future__ import annotations

import importlib
import inspect
import sys
from collections.abc import Callable
from typing import Any


def mutate(seed: bytes, fdp: Any, max_edits: int = 8) -> bytes:
    """``seed`` with a few fuzzer-chosen edits (overwrite, insert, delete, truncate, bit flip).

    libFuzzer mutates the harness input, not our seed; this turns part of that input into edits of
    a valid message, so every run also explores near-valid records, not only random bytes.
    """
    out = bytearray(seed)
    for _ in range(fdp.ConsumeIntInRange(1, max_edits)):
        if not out:
            break
        op = fdp.ConsumeIntInRange(0, 4)
        pos = fdp.ConsumeIntInRange(0, len(out) - 1)
        if op == 0:
            out[pos] = fdp.ConsumeInt(1) & 0xFF
        elif op == 1:
            out[pos:pos] = fdp.ConsumeBytes(fdp.ConsumeIntInRange(1, 16))
        elif op == 2:
            del out[pos : pos + fdp.ConsumeIntInRange(1, 16)]
        elif op == 3:
            del out[pos:]
        else:
            out[pos] ^= 1 << fdp.ConsumeIntInRange(0, 7)
    return bytes(out)


def _instrument(module_name: str) -> None:
    """Coverage feedback for the functions and methods of one module (in place, after import)."""
    import atheris

    module = importlib.import_module(module_name)
    for obj in vars(module).values():
        if getattr(obj, "__module__", None) != module_name:
            continue
        if inspect.isfunction(obj):
            atheris.instrument_func(obj)
        elif inspect.isclass(obj):
            for member in vars(obj).values():
                if inspect.isfunction(member):
                    atheris.instrument_func(member)


def run(load: Callable[[], Callable[[bytes], None]], instrument: list[str]) -> None:
    """Fuzz ``load()``'s target until the budget ends, with coverage feedback from ``instrument``.

    Only the modules under test are instrumented: instrumenting every import costs seconds of
    start-up out of a 10 s budget.
    """
    import atheris

    target = load()
    for name in instrument:
        _instrument(name)
    atheris.Setup(sys.argv, target)
    atheris.Fuzz()
