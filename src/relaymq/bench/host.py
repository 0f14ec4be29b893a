"""The host under the machine: how much CPU time the hypervisor took from it.

Owns :func:`steal_seconds`. On a virtual machine the host can run something
else on a vCPU while the guest has work for it; the guest's kernel counts that
time as "steal". A run during which the host took much of it measured the
host's load as much as RelayMQ: the bench reports it per phase and warns.
"""

from __future__ import annotations

import psutil

STEAL_WARNING_PERCENT = 5.0
"""A phase whose steal time reached this share of the machine's CPU time is warned about."""


def steal_seconds() -> float | None:
    """CPU seconds the hypervisor took since boot, all CPUs together (``None``
    where the kernel does not count them: not Linux)."""
    return getattr(psutil.cpu_times(), "steal", None)
