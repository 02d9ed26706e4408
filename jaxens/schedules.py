"""Learning-rate schedules from their papers, as optax schedules ``count -> rate``.

``count`` is optax's update counter: 0 at the first update. Every schedule works with the
optimizers of ``jaxens.optim`` and with optax's own (``optax.sgd(snapshot_cosine(0.1, 500))``),
and with ``jax.vmap`` over members when a rate is one traced value per member.

* :func:`inverse_time_decay`: the legacy Keras ``decay=`` argument.
* :func:`snapshot_cosine`: Huang et al.'s cyclic cosine annealing for snapshot ensembles.
* :func:`fge_triangular`: Garipov et al.'s triangular cycles for fast geometric ensembling;
  :func:`fge_collection_steps` says when their models are collected.
* :func:`swa`: Izmailov et al.'s decay to a constant (or cyclic) rate for weight averaging.

References:
  Huang et al., 2017, Snapshot Ensembles: Train 1, get M for free
  (https://arxiv.org/abs/1704.00109).
  Garipov et al., 2018, Loss Surfaces, Mode Connectivity, and Fast Ensembling of DNNs
  (https://arxiv.org/abs/1802.10026).
  Izmailov et al., 2018, Averaging Weights Leads to Wider Optima and Better Generalization
  (https://arxiv.org/abs/1803.05407).
"""

from typing import Optional

import jax.numpy as jnp
import numpy as np

from jaxens import _validation


def inverse_time_decay(learning_rate, decay):
  r"""The legacy Keras ``decay=`` argument as an optax schedule.

  .. math:: \eta_t = \frac{\eta}{1 + \text{decay}\cdot t}, \qquad t = 0, 1, \dots

  with :math:`t = 0` at the first update (Keras' ``iterations`` before it is
  incremented; optax schedules see the same count). Keras 3 silently ignores
  ``decay=``; its equivalent is
  ``keras.optimizers.schedules.InverseTimeDecay(lr, decay_steps=1, decay_rate=decay)``,
  and torch's is ``LambdaLR(opt, lambda s: 1 / (1 + decay * s))`` stepped every batch.
  The decayed rate replaces :math:`\eta` everywhere the optimizer uses it (inside the
  momentum buffer with ``lr_in_buffer=True``, in Adam's step, as AdaDelta's scale).
  Also importable as ``jaxens.optim.inverse_time_decay``.

  Args:
    learning_rate: non-negative initial rate :math:`\eta` (float or per-member array).
    decay: non-negative decay per update.

  Returns:
    A schedule ``count -> rate``.

  Example:
    >>> from jaxens.optim import adam
    >>> opt = adam(inverse_time_decay(1e-3, decay=1e-6))
  """
  _validation.check_nonnegative("learning_rate", learning_rate)
  _validation.check_nonnegative("decay", decay)

  def schedule(count):
    return learning_rate / (1 + decay * count)

  return schedule


def snapshot_cosine(lr0, steps_per_cycle):
  r"""Huang et al.'s cyclic cosine annealing (Snapshot Ensembles, eq. 2).

  .. math:: \alpha(t) = \frac{\alpha_0}{2}\left(\cos\left(
     \frac{\pi \,\mathrm{mod}(t, c)}{c}\right) + 1\right), \qquad c = \lceil T / M \rceil,

  for update ``t = 0, 1, ...``: the rate restarts at :math:`\alpha_0` every ``c`` updates and
  anneals towards 0; a snapshot is taken at the end of each cycle, after updates
  ``c, 2c, ...`` (``TrainConfig(snapshot_every=c)``).

  Args:
    lr0: the rate at the start of each cycle (float or per-member array), >= 0.
    steps_per_cycle: c, the updates per cycle (T total updates over M cycles).
  """
  _validation.check_nonnegative("lr0", lr0)
  _validation.check_int("steps_per_cycle", steps_per_cycle, 1)

  def schedule(count):
    phase = jnp.mod(count, steps_per_cycle) / steps_per_cycle
    return lr0 / 2 * (jnp.cos(jnp.pi * phase) + 1)

  return schedule


def fge_triangular(lr_high, lr_low, steps_per_cycle):
  r"""Garipov et al.'s triangular cycle for fast geometric ensembling (FGE, section 4).

  With :math:`t(i) = (\mathrm{mod}(i - 1, c) + 1) / c` for iteration :math:`i = 1, 2, \dots`
  (optax's ``count = i - 1``):

  .. math::
     \alpha(i) = \begin{cases}
       (1 - 2t(i))\,\alpha_1 + 2t(i)\,\alpha_2 & 0 < t(i) \le \tfrac12 \\
       (2 - 2t(i))\,\alpha_2 + (2t(i) - 1)\,\alpha_1 & \tfrac12 < t(i) \le 1
     \end{cases}

  so the rate falls linearly from :math:`\alpha_1` to :math:`\alpha_2` over the first half of
  each cycle and climbs back over the second. Models are collected where the rate is lowest,
  ``t(i) = 1/2``: after updates ``c/2, c + c/2, ...`` (:func:`fge_collection_steps`). FGE
  starts from a pre-trained network; ``optax.join_schedules`` puts a pre-training schedule
  before it.

  Args:
    lr_high: :math:`\alpha_1`, the rate at the ends of a cycle, >= 0.
    lr_low: :math:`\alpha_2`, the rate in its middle, >= 0.
    steps_per_cycle: c, an even number of updates >= 2.
  """
  _validation.check_nonnegative("lr_high", lr_high)
  _validation.check_nonnegative("lr_low", lr_low)
  _validation.check_int("steps_per_cycle", steps_per_cycle, 2)
  if steps_per_cycle % 2:
    raise ValueError(f"steps_per_cycle: expected an even number, so that a cycle has a lowest "
                     f"step, got {steps_per_cycle}")

  def schedule(count):
    t = (jnp.mod(count, steps_per_cycle) + 1) / steps_per_cycle
    falling = (1 - 2 * t) * lr_high + 2 * t * lr_low
    rising = (2 - 2 * t) * lr_low + (2 * t - 1) * lr_high
    return jnp.where(t <= 0.5, falling, rising)

  return schedule


def fge_collection_steps(steps_per_cycle, total_steps, start=0):
  """The update counts after which FGE collects a model: ``start + k c + c/2 <= total_steps``.

  ``start`` is the number of pre-training updates before the first cycle. The result is what
  ``TrainConfig(snapshot_every=...)`` takes.
  """
  _validation.check_int("steps_per_cycle", steps_per_cycle, 2)
  return tuple(int(s) for s in range(start + steps_per_cycle // 2, total_steps + 1,
                                     steps_per_cycle))


def swa(lr_pre, lr_swa, swa_start_step, cycle_steps: Optional[int] = None):
  r"""Izmailov et al.'s SWA schedule (their code's ``schedule``; cyclic variant, eq. 1).

  With :math:`s` the update count and :math:`r = \alpha_\mathrm{swa} / \alpha_\mathrm{pre}`,
  before ``swa_start_step`` (:math:`s_0`) the rate is held, then decays linearly to the SWA rate:

  .. math:: \alpha(s) = \alpha_\mathrm{pre} \cdot \begin{cases}
       1 & s / s_0 \le 0.5 \\
       1 - (1 - r)\,(s / s_0 - 0.5) / 0.4 & 0.5 < s / s_0 \le 0.9 \\
       r & s / s_0 > 0.9
     \end{cases}

  and from :math:`s_0` on it is the constant :math:`\alpha_\mathrm{swa}`, or with
  ``cycle_steps`` = c the cyclic rate
  :math:`\alpha(s) = (1 - t)\,\alpha_\mathrm{pre} + t\,\alpha_\mathrm{swa}`,
  :math:`t = (\mathrm{mod}(s - s_0, c) + 1) / c`, whose lowest point ends each cycle (average
  there: ``TrainConfig(swa_start=s_0 + c, swa_every=c)``). With the constant rate the paper
  averages once per epoch from :math:`s_0` on.

  Args:
    lr_pre: the rate before the decay, > 0.
    lr_swa: the SWA rate, >= 0.
    swa_start_step: :math:`s_0` >= 1, where averaging starts.
    cycle_steps: None for a constant SWA rate, else the cycle length c >= 1.
  """
  _validation.check_nonnegative("lr_swa", lr_swa)
  _validation.check_int("swa_start_step", swa_start_step, 1)
  array = _validation.concrete(lr_pre)
  if array is not None and not np.all(array > 0):
    raise ValueError(f"lr_pre: expected a value > 0, got {lr_pre!r}")
  if cycle_steps is not None:
    _validation.check_int("cycle_steps", cycle_steps, 1)

  def schedule(count):
    t = count / swa_start_step
    ratio = lr_swa / lr_pre
    factor = jnp.where(t <= 0.5, 1.0,
                       jnp.where(t <= 0.9, 1.0 - (1.0 - ratio) * (t - 0.5) / 0.4, ratio))
    if cycle_steps is None:
      after = lr_swa * jnp.ones_like(t)
    else:
      phase = (jnp.mod(count - swa_start_step, cycle_steps) + 1) / cycle_steps
      after = (1 - phase) * lr_pre + phase * lr_swa
    return jnp.where(count < swa_start_step, lr_pre * factor, after)

  return schedule
