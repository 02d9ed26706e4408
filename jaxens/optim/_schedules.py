"""Learning-rate schedules that the reference code relies on."""

from jaxens.optim import _checks


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

  Args:
    learning_rate: non-negative initial rate :math:`\eta` (float or per-member array).
    decay: non-negative decay per update.

  Returns:
    A schedule ``count -> rate``.

  Example:
    >>> from jaxens.optim import adam
    >>> opt = adam(inverse_time_decay(1e-3, decay=1e-6))
  """
  _checks.check_nonnegative("learning_rate", learning_rate)
  _checks.check_nonnegative("decay", decay)

  def schedule(count):
    return learning_rate / (1 + decay * count)

  return schedule
