"""Command line shared by the experiment scripts.

    python -m experiments.<name> [--workdir DIR] [--config.<field>=<value> ...]

A value is read as a Python literal (``1e-3``, ``(784, 100, 10)``, ``True``, ``None``) and
otherwise kept as a string. Nested dataclass fields use dots: ``--config.model.norm=batch``.
"""

import argparse
import ast
import dataclasses
import json
import os
import sys
import time


def parse_value(text):
  """A flag's value: a Python literal, or else the text itself."""
  try:
    return ast.literal_eval(text)
  except (ValueError, SyntaxError):
    return text


def override(config, dotted_field, value):
  """Returns ``config`` with ``dotted_field`` (``a.b.c``) replaced by ``value``."""
  head, _, rest = dotted_field.partition(".")
  names = {f.name for f in dataclasses.fields(config)}
  if head not in names:
    raise ValueError(
        f"--config.{dotted_field}: {type(config).__name__} has no field {head!r}; "
        f"fields are {sorted(names)}")
  if rest:
    value = override(getattr(config, head), rest, value)
  return dataclasses.replace(config, **{head: value})


def parse_args(default_config, argv=None, *, default_workdir):
  """Returns ``(config, workdir)`` from ``--workdir`` and ``--config.<field>=<value>`` flags."""
  parser = argparse.ArgumentParser()
  parser.add_argument("--workdir", default=default_workdir)
  args, rest = parser.parse_known_args(argv)
  config = default_config
  for flag in rest:
    if not flag.startswith("--config.") or "=" not in flag:
      parser.error(f"unrecognised argument {flag!r}; expected --config.<field>=<value>")
    name, _, text = flag[len("--config."):].partition("=")
    config = override(config, name, parse_value(text))
  return config, args.workdir


def write_summary(workdir, summary):
  """Writes ``summary`` to ``<workdir>/summary.json`` and returns the path."""
  os.makedirs(workdir, exist_ok=True)
  path = os.path.join(workdir, "summary.json")
  with open(path, "w") as f:
    json.dump(summary, f, indent=2, default=_jsonable)
  return path


def _jsonable(value):
  if dataclasses.is_dataclass(value):
    return dataclasses.asdict(value)
  if hasattr(value, "tolist"):
    return value.tolist()
  return repr(value)


def markdown_table(headers, rows):
  """A GitHub-flavoured table a reader can paste into a README or a paper."""
  lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
  lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
  return "\n".join(lines)


class Stopwatch:
  """``with Stopwatch() as t: ...; t.seconds``."""

  def __enter__(self):
    self._start = time.perf_counter()
    return self

  def __exit__(self, *exc):
    self.seconds = time.perf_counter() - self._start


def use_every_core():
  """One XLA host device per CPU core, so that jaxens shards the members over every core.

  On a CPU-only machine XLA shows a single device that runs one program at a time, so a
  second core would sit idle. Call it before JAX computes anything; a device count already
  chosen (``jax_num_cpu_devices`` or ``--xla_force_host_platform_device_count``) is kept.
  """
  import jax
  if ("xla_force_host_platform_device_count" in os.environ.get("XLA_FLAGS", "")
      or jax.config.jax_num_cpu_devices > 0):
    return
  cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
  try:
    jax.config.update("jax_num_cpu_devices", cores)
  except RuntimeError:  # The backend is already running: keep its devices.
    pass


def main(default_config, run, print_summary, *, default_workdir, argv=None):
  """The body of every experiment's ``main``: parse flags, use every core, run, print the
  table and timing."""
  config, workdir = parse_args(default_config, argv, default_workdir=default_workdir)
  use_every_core()
  with Stopwatch() as wall:
    summary = run(config, workdir)
  print_summary(summary)
  print(f"wall time {wall.seconds:.1f} s; artefacts in {workdir}", file=sys.stderr)
  return summary
