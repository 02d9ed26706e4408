"""jaxens.schedules against their papers' closed forms at hand-picked steps."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxens import optim
from jaxens import schedules


def test_snapshot_cosine_restarts_every_cycle():
  schedule = schedules.snapshot_cosine(0.2, steps_per_cycle=4)
  # alpha0/2 (cos(pi mod(t, 4) / 4) + 1) at t = 0..8.
  expected = [0.2, 0.1 * (np.cos(np.pi / 4) + 1), 0.1, 0.1 * (np.cos(3 * np.pi / 4) + 1)] * 2
  np.testing.assert_allclose([schedule(t) for t in range(8)], expected, rtol=1e-6)
  np.testing.assert_allclose(schedule(8), 0.2, rtol=1e-6)


def test_fge_triangular_falls_to_the_low_rate_mid_cycle_and_climbs_back():
  schedule = schedules.fge_triangular(0.05, 0.0005, steps_per_cycle=4)
  # t(i) = (mod(i-1, 4) + 1)/4 for i = count + 1: 1/4, 1/2, 3/4, 1.
  a1, a2 = 0.05, 0.0005
  expected = [0.5 * a1 + 0.5 * a2, a2, 0.5 * a2 + 0.5 * a1, a1]
  np.testing.assert_allclose([schedule(c) for c in range(8)], expected * 2, rtol=1e-6)
  # The lowest rate is used by update counts 1, 5, 9, ...: after updates 2, 6, 10.
  assert schedules.fge_collection_steps(4, 10) == (2, 6, 10)
  assert schedules.fge_collection_steps(4, 11, start=3) == (5, 9)


def test_swa_holds_decays_then_stays_or_cycles():
  constant = schedules.swa(0.1, 0.01, swa_start_step=100)
  # s/s0 <= 0.5: 0.1; 0.7: 0.1 (1 - 0.9 * 0.2 / 0.4) = 0.055; > 0.9 and after s0: 0.01.
  np.testing.assert_allclose([constant(s) for s in (0, 50, 70, 95, 100, 1000)],
                             [0.1, 0.1, 0.055, 0.01, 0.01, 0.01], rtol=1e-6)
  cyclic = schedules.swa(0.1, 0.01, swa_start_step=100, cycle_steps=4)
  # From s0: (1 - t) 0.1 + t 0.01 with t = (mod(s - 100, 4) + 1)/4.
  np.testing.assert_allclose([cyclic(s) for s in (99, 100, 101, 103, 104)],
                             [0.01, 0.0775, 0.055, 0.01, 0.0775], rtol=1e-6)


def test_schedules_drive_jaxens_and_optax_optimizers_and_vmap_over_members():
  schedule = schedules.snapshot_cosine(0.5, 3)
  for optimizer in (optax.sgd(schedule), optim.momentum(schedule, mu=0.0)):
    params = jnp.zeros(2)
    state = optimizer.init(params)
    for count in range(4):
      updates, state = optimizer.update(jnp.ones(2), state, params)
      np.testing.assert_allclose(updates, -schedule(count) * np.ones(2), rtol=1e-6)
  per_member = jax.vmap(lambda lr: schedules.fge_triangular(lr, lr / 10, 2)(1))(
      jnp.array([0.1, 0.2]))
  np.testing.assert_allclose(per_member, [0.1, 0.2], rtol=1e-6)


def test_inverse_time_decay_keeps_its_optim_alias():
  assert optim.inverse_time_decay is schedules.inverse_time_decay


@pytest.mark.parametrize("make,message", [
    (lambda: schedules.snapshot_cosine(-0.1, 4), "lr0: expected a value >= 0"),
    (lambda: schedules.snapshot_cosine(0.1, 0), "steps_per_cycle: expected an integer >= 1"),
    (lambda: schedules.fge_triangular(0.1, 0.01, 3), "steps_per_cycle: expected an even number"),
    (lambda: schedules.swa(0.0, 0.01, 10), "lr_pre: expected a value > 0"),
    (lambda: schedules.swa(0.1, 0.01, 0), "swa_start_step: expected an integer >= 1"),
    (lambda: schedules.swa(0.1, 0.01, 10, cycle_steps=0), "cycle_steps: expected an integer"),
])
def test_bad_arguments_are_named(make, message):
  with pytest.raises(ValueError, match=message):
    make()
