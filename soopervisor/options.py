"""Run options, checked before anything is recorded, replaced or started.

A limit Docker would refuse, or that would silently mean something else
(``--cpus nan``, ``--timeout inf``, ``--memory lots``), is a usage error with a
hint (exit 2) here, not an engine error half-way through a run. The CLI, the
Python API (``soopervisor.run``) and the magics all pass through
:func:`check_limits`.

Secret values are read here as bytes (:func:`secret_bytes`): a value that is
not UTF-8 is still the value the container gets and must be masked as such.
"""
from __future__ import annotations

import math
import os
import re
import threading
from collections.abc import Iterable
from dataclasses import dataclass

from .errors import UsageError

__all__ = ["MIN_CPUS", "MIN_MEMORY", "Limits", "check_force", "check_limits", "check_network", "env_bytes",
           "parse_memory", "secret_bytes"]

#: Docker refuses a smaller memory limit ("Minimum memory limit allowed is 6MB")
MIN_MEMORY = 6 * 1024**2
#: Docker's --cpus goes in steps of 0.01
MIN_CPUS = 0.01
#: Docker keeps the limit in an int64
MAX_MEMORY = 2**63 - 1
#: the longest wait a timer can do (Python raises OverflowError beyond it, in the timer's thread)
MAX_TIMEOUT = threading.TIMEOUT_MAX

# units as Docker reads them (go-units RAMInBytes): all binary, "k", "kb" and "kib" alike
_UNITS = {"": 1, "b": 1}
for _i, _u in enumerate("kmgt", start=1):
    _UNITS.update({_u: 1024**_i, f"{_u}b": 1024**_i, f"{_u}ib": 1024**_i})
_SIZE = re.compile(r"(?P<number>\d+(?:\.\d*)?|\.\d+)\s*(?P<unit>[a-z]*)")

_MEMORY_HINT = "give a size with a unit, e.g. --memory 512m, 2g or 1.5g (b, k, m, g, t; at least 6m)"


@dataclass(frozen=True)
class Limits:
    """What a run may use; None: no limit."""

    timeout: float | None = None  # seconds
    cpus: float | None = None
    memory: int | None = None  # bytes


def check_limits(timeout: float | str | None = None, cpus: float | str | None = None,
                 memory: int | str | None = None) -> Limits:
    """The limits as numbers, or UsageError (exit 2) with a hint for the first one that is not valid.

    ``timeout`` in seconds, finite and > 0; ``cpus`` finite, at least 0.01 and at
    most this machine's CPU count; ``memory`` in bytes or a size with a unit
    (``512m``, ``1.5g``), at least 6 MiB. Numbers may come as text (the CLI's).
    """
    return Limits(
        timeout=None if timeout is None else _timeout(timeout),
        cpus=None if cpus is None else _cpus(cpus),
        memory=None if memory is None else parse_memory(memory),
    )


def parse_memory(value: float | str) -> int:
    """A memory size in bytes: ``2g``, ``512MiB``, ``1.5g``, ``1048576`` (bytes); UsageError otherwise."""
    if isinstance(value, bool):
        raise _bad("memory", value, "is not a size", _MEMORY_HINT)
    if isinstance(value, (int, float)):
        if not math.isfinite(value):
            raise _bad("memory", value, "is not a size", _MEMORY_HINT)
        size = int(value)
    elif isinstance(value, str):
        m = _SIZE.fullmatch(value.strip().lower())
        if m is None or m.group("unit") not in _UNITS:
            raise _bad("memory", value, "is not a size", _MEMORY_HINT)
        # exact for any number of digits (no float rounding of "8589934592")
        whole, _, frac = m.group("number").partition(".")
        unit = _UNITS[m.group("unit")]
        size = int(whole or "0") * unit + (int(frac) * unit // 10 ** len(frac) if frac else 0)
    else:
        raise _bad("memory", value, "is not a size", _MEMORY_HINT)
    if size < MIN_MEMORY:
        raise _bad("memory", value, "is less than Docker's minimum of 6 MiB", _MEMORY_HINT)
    if size > MAX_MEMORY:
        raise _bad("memory", value, "is more than any machine has", _MEMORY_HINT)
    return size


def _number(name: str, value: float | str, hint: str) -> float:
    if isinstance(value, bool):
        raise _bad(name, value, "is not a number", hint)
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise _bad(name, value, "is not a number", hint) from None
    if not math.isfinite(number):
        raise _bad(name, value, "is not a finite number", hint)
    return number


def _timeout(value: float | str) -> float:
    hint = "give the longest the run may take in seconds, e.g. --timeout 3600; leave it out for no limit"
    seconds = _number("timeout", value, hint)
    if seconds <= 0:
        raise _bad("timeout", value, "must be more than 0 seconds", hint)
    if seconds > MAX_TIMEOUT:
        raise _bad("timeout", value, f"is more than the longest wait possible ({MAX_TIMEOUT:.0f} s)", hint)
    return seconds


def _cpus(value: float | str) -> float:
    available = os.cpu_count() or 1
    hint = (f"give how many CPUs the run may use, from {MIN_CPUS} to {available} "
            f"(this machine's CPUs), e.g. --cpus 2 or --cpus 0.5")
    cpus = _number("cpus", value, hint)
    if cpus < MIN_CPUS:
        raise _bad("cpus", value, f"is less than {MIN_CPUS}", hint)
    if cpus > available:
        raise _bad("cpus", value, f"is more than the {available} CPUs of this machine", hint)
    return cpus


def _bad(name: str, value: object, why: str, hint: str) -> UsageError:
    shown = repr(value) if isinstance(value, str) else str(value)
    if len(shown) > 40:  # a value pasted by mistake: enough to recognise it
        shown = shown[:37] + "..."
    return UsageError(f"--{name} {shown} {why}", hint)


# -- secrets -------------------------------------------------------------------------
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def env_bytes(name: str) -> bytes | None:
    """The environment variable ``name`` as the bytes the process was given; None when unset."""
    if os.supports_bytes_environ:
        return os.environb.get(os.fsencode(name))
    value = os.environ.get(name)  # Windows: the environment is text
    return None if value is None else value.encode("utf-8", "surrogateescape")


def secret_bytes(names: Iterable[str]) -> dict[str, bytes]:
    """The values of the host variables named by ``--secret``, as bytes; UsageError for a bad or missing name.

    Bytes, because a value need not be UTF-8 and the redactor must mask what
    the container really prints (``os.environ`` would give surrogate escapes).
    """
    values: dict[str, bytes] = {}
    for name in names:
        if not isinstance(name, str) or not _NAME.fullmatch(name):
            raise UsageError(f"invalid secret name {name!r}",
                             "use the name of an environment variable, e.g. --secret API_TOKEN")
        value = env_bytes(name)
        if value is None:
            raise UsageError(f"secret {name} is not set in this environment",
                             f"export {name}=... before running, or drop --secret {name}")
        values[name] = value
    return values


def limit_callback(ctx: object, param: object, value: str | None) -> float | int | None:
    """click callback for ``--timeout``, ``--cpus`` and ``--memory``: the value through :func:`check_limits`.

    Plain text options checked here, because click's FloatRange lets ``nan`` and
    ``inf`` through; the UsageError ends the command with exit 2 before
    anything else happens.
    """
    if value is None:
        return None
    name = getattr(param, "name", "")
    return getattr(check_limits(**{name: value}), name)


# -- the pipeline container's network --------------------------------------------------
#: Docker's network names: a letter or digit, then letters, digits, "_", "." and "-"
_NETWORK_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}")
_NETWORK_HINT = ("give default (the engine's default network), bridge, host, none (no network once the "
                 "environment is built) or the name of a Docker network, e.g. --network none")


def check_network(value: str | None) -> str:
    """The network the pipeline stage runs on: ``value``, else SOOPERVISOR_NETWORK, else ``default``.

    ``default``, ``bridge``, ``none``, ``host`` or a Docker network name (no
    spaces); anything else is a UsageError (exit 2). The environment build
    always keeps the engine's default network (it installs packages).
    """
    source = "--network"
    if value is None:
        value = os.environ.get("SOOPERVISOR_NETWORK") or None
        source = "SOOPERVISOR_NETWORK"
    if value is None:
        return "default"
    if not isinstance(value, str) or not _NETWORK_NAME.fullmatch(value):
        shown = repr(value)
        if len(shown) > 40:
            shown = shown[:37] + "..."
        raise UsageError(f"{source} {shown} is not a network", _NETWORK_HINT)
    return value


def network_callback(ctx: object, param: object, value: str | None) -> str | None:
    """click callback for ``--network``: checked at once (exit 2); None leaves it to SOOPERVISOR_NETWORK."""
    return None if value is None else check_network(value)


def choice_setting(variable: str, choices: tuple[str, ...], hint: str) -> str:
    """The environment variable ``variable``, one of ``choices`` (case-insensitive; unset or empty:
    the first); anything else is a UsageError naming it (exit 2), with ``hint``."""
    raw = os.environ.get(variable, "")
    value = raw.strip().lower() or choices[0]
    if value not in choices:
        raise UsageError(f"{variable}={raw[:40]!r} is not one of {', '.join(choices)}", hint)
    return value


# -- incremental or forced --------------------------------------------------------------
_TRUE = ("1", "true", "yes", "on")
_FALSE = ("0", "false", "no", "off", "")


def check_force(value: bool | None) -> bool:
    """Whether a run rebuilds every task: ``value``, else SOOPERVISOR_FORCE, else False (incremental).

    SOOPERVISOR_FORCE takes true/false, 1/0, yes/no (on/off); anything else is a
    UsageError naming it (exit 2), before anything is recorded.
    """
    if value is not None:
        if not isinstance(value, bool):
            raise UsageError(f"force must be true or false, not {value!r}", "force=True rebuilds every task")
        return value
    raw = os.environ.get("SOOPERVISOR_FORCE")
    if raw is None:
        return False
    word = raw.strip().lower()
    if word in _TRUE:
        return True
    if word in _FALSE:
        return False
    shown = repr(raw) if len(raw) <= 40 else repr(raw[:37] + "...")
    raise UsageError(f"SOOPERVISOR_FORCE {shown} is neither true nor false",
                     "SOOPERVISOR_FORCE=1 rebuilds every task; 0 (or unset) runs incrementally")
