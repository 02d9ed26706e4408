"""Progress: a bar over an epoch's steps, fed from inside the jitted scan, or, when stderr is
not a terminal (a cluster job's log), one log line per epoch."""

import sys
import time

from absl import logging
import numpy as np
import tqdm


class Progress:
  """A tqdm bar over an epoch's steps showing the mean and worst member loss.

  The compiled program calls the class-level ``report``, which feeds whichever bar is active,
  so one compiled program serves every call of ``train``.
  """
  active = None

  def __init__(self, n_steps, every):
    self.every = every
    self.bar = tqdm.tqdm(total=n_steps, disable=None, leave=False, file=sys.stderr,
                         dynamic_ncols=True)
    Progress.active = self

  @staticmethod
  def report(loss):
    if Progress.active is not None:
      Progress.active.update(loss)

  def start(self, epoch, epochs):
    self.bar.reset()
    self.bar.set_description(f"epoch {epoch + 1}/{epochs}")

  def update(self, loss):
    loss = np.asarray(loss)
    self.bar.update(self.every)
    self.bar.set_postfix(mean_loss=f"{np.nanmean(loss):.4f}", worst_loss=f"{np.nanmax(loss):.4f}")

  def close(self):
    self.bar.close()
    Progress.active = None


def open_bar(n_steps):
  """A bar reporting about 100 times an epoch, or None when stderr is not a terminal."""
  bar = Progress(n_steps, every=max(1, n_steps // 100))
  if bar.bar.disable:
    bar.close()
    return None
  return bar


class EpochLog:
  """One ``absl.logging`` line per epoch with the epoch's time and the members' mean metrics,
  for runs whose stderr is not a terminal, where the bar is silent."""

  def __init__(self, epochs, n_members):
    self.epochs, self.n_members = epochs, n_members
    self._start = time.perf_counter()

  def epoch_done(self, epoch, history):
    means = ", ".join(
        f"{name} {np.nanmean(np.asarray(column[:self.n_members, epoch])):.4f}"
        for name, column in history.items())
    now = time.perf_counter()
    logging.info("jaxens: epoch %d/%d in %.1f s; mean over members: %s", epoch + 1,
                 self.epochs, now - self._start, means)
    self._start = now
