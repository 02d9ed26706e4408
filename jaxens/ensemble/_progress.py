"""A progress bar over an epoch's steps, fed from inside the jitted scan."""

import sys

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
