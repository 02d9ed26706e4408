"""What experiments and benchmarks write and print: summaries, metric logs, tables, timings.

Metric logs. Every experiment writes its per-epoch (or per-step) metrics twice:

- ``metrics.csv``, one row per run, member and step (``pandas.read_csv`` reads it as is);
- TensorBoard event files under ``tensorboard/<run>/member_<i>/``, one scalar tag per metric,
  so that TensorBoard overlays the members of a run in one chart. They are written by
  ``tensorboardX``, a protobuf-only writer that needs neither TensorFlow nor PyTorch (the
  ``clu`` writers need one of them).
"""

import csv
import dataclasses
import json
import os
import time

import numpy as np

STEP_COLUMNS = ("run", "member", "step")


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


def history_rows(history, run="", first_step=1, steps=None):
  """Long-format rows from an ensemble history: ``{metric: (members, steps)}`` arrays; the
  columns are steps ``first_step, first_step + 1, ...`` or the given ``steps``.

  Example:
    >>> rows = history_rows({"val_loss": np.array([[0.5, 0.4]])}, run="adam")
    >>> rows[1]
    {'run': 'adam', 'member': 0, 'step': 2, 'val_loss': 0.4}
  """
  arrays = {name: np.asarray(values, np.float64) for name, values in history.items()}
  n_members, n_steps = next(iter(arrays.values())).shape[:2]
  steps = first_step + np.arange(n_steps) if steps is None else np.asarray(steps)
  return [{"run": run, "member": member, "step": int(steps[step]),
           **{name: float(values[member, step]) for name, values in arrays.items()}}
          for member in range(n_members) for step in range(n_steps)]


def write_metrics(workdir, rows):
  """Writes ``rows`` (dicts with ``run``, ``member``, ``step`` and scalar metrics) to
  ``<workdir>/metrics.csv`` and as TensorBoard events; returns the CSV's path."""
  import tensorboardX  # pylint: disable=g-import-not-at-top

  os.makedirs(workdir, exist_ok=True)
  metric_names = list(dict.fromkeys(k for row in rows for k in row if k not in STEP_COLUMNS))
  path = os.path.join(workdir, "metrics.csv")
  with open(path, "w", newline="") as f:
    writer = csv.DictWriter(f, fieldnames=[*STEP_COLUMNS, *metric_names])
    writer.writeheader()
    writer.writerows(rows)
  writers = {}
  for row in rows:
    logdir = os.path.join(workdir, "tensorboard", str(row["run"]), f"member_{row['member']}")
    if logdir not in writers:
      writers[logdir] = tensorboardX.SummaryWriter(logdir)
    for name in metric_names:
      if name in row:
        writers[logdir].add_scalar(name, row[name], global_step=row["step"])
  for writer in writers.values():
    writer.close()
  return path


def plot_members(ax, per_member, label, **style):
  """One line per member of ``per_member`` (members, steps) against steps 1, 2, ..., labelled
  once, so that a legend shows one entry per group of members."""
  per_member = np.asarray(per_member)
  steps = np.arange(1, per_member.shape[1] + 1)
  for i, values in enumerate(per_member):
    ax.plot(steps, values, label=label if i == 0 else None, **{"alpha": 0.6, **style})


def plot_band(ax, steps, per_member, label, **style):
  """The mean over members of ``per_member`` (members, steps) against ``steps``, with a band
  of +- one standard deviation."""
  per_member = np.asarray(per_member, np.float64)
  mean, std = per_member.mean(axis=0), per_member.std(axis=0)
  line, = ax.plot(steps, mean, label=label, **style)
  ax.fill_between(steps, mean - std, mean + std, color=line.get_color(), alpha=0.25, linewidth=0)


def mean_std(values, digits=4):
  """``"mean ± std"`` of ``values`` (population std), for tables."""
  values = np.asarray(values, np.float64)
  return f"{values.mean():.{digits}f} ± {values.std():.{digits}f}"


def markdown_table(headers, rows):
  """A GitHub-flavoured table a reader can paste into a README or a paper.

  Example:
    >>> print(markdown_table(("a", "b"), [(1, 2)]))
    | a | b |
    |---|---|
    | 1 | 2 |
  """
  lines = [markdown_row(headers), "|" + "---|" * len(headers)]
  return "\n".join(lines + [markdown_row(row) for row in rows])


def markdown_row(cells):
  """One row of :func:`markdown_table`, for tables printed a row at a time."""
  return "| " + " | ".join(str(c) for c in cells) + " |"


class Stopwatch:
  """Wall time of a block: ``with Stopwatch() as t: ...`` then ``t.seconds``; inside the
  block, ``t.elapsed()`` is the time so far."""

  def __enter__(self):
    self._start = time.perf_counter()
    return self

  def elapsed(self):
    return time.perf_counter() - self._start

  def __exit__(self, *exc):
    self.seconds = self.elapsed()


def seconds(fn, *args):
  """``(seconds, fn(*args))``, waiting for JAX's asynchronous results before stopping."""
  import jax  # pylint: disable=g-import-not-at-top

  with Stopwatch() as watch:
    out = jax.block_until_ready(fn(*args))
  return watch.seconds, out
