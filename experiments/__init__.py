"""Experiment scripts. Importing this package exposes one XLA host device per CPU core.

jaxens shards the ensemble's member axis over all devices; on a CPU-only machine XLA shows a
single device that runs one program on one thread at a time, so a second core would sit idle.
Set before JAX starts, ``--xla_force_host_platform_device_count`` gives each core a device and
the members train in parallel. An ``XLA_FLAGS`` that already sets the count is left alone.
"""

import os
import sys


def _one_host_device_per_core():
  flags = os.environ.get("XLA_FLAGS", "")
  if "jax" in sys.modules or "xla_force_host_platform_device_count" in flags:
    return
  cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
  os.environ["XLA_FLAGS"] = f"{flags} --xla_force_host_platform_device_count={cores}".strip()


_one_host_device_per_core()
