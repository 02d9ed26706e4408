"""jaxens.optim against optax's built-ins, textbook loops, and optax's own checklist.

Comparisons run in float64 (``jax.enable_x64`` scoped to each test by the ``x64``
fixture) over 200 steps on two problems: a fixed gradient sequence whose coordinates
have scales from 1e-5 to 10, and a closed-loop ill-conditioned quadratic.
"""

import dataclasses
import os
from typing import Any, Callable

import chex
import jax
from jax.flatten_util import ravel_pytree
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxens import optim

STEPS = 200
MEMBERS = 4


@pytest.fixture
def x64():
  with jax.enable_x64(True):
    yield


@dataclasses.dataclass(frozen=True)
class Case:
  """One optimizer variant and per-member hyperparameters; optax's equivalent is the table's."""

  name: str
  alias: Callable[..., optax.GradientTransformation]
  kwargs: dict[str, Any]
  members: dict[str, tuple[float, ...]]  # MEMBERS values of each float hyperparameter

  def reference(self, **kwargs):
    return optim.equivalent(self.alias.__name__, "optax", **kwargs)()


CASES = [
    Case("momentum/optax", optim.momentum,
         dict(learning_rate=0.01, mu=0.9, lr_in_buffer=False),
         dict(learning_rate=(0.01, 0.02, 0.005, 0.0), mu=(0.9, 0.5, 0.0, 0.99))),
    Case("momentum/keras", optim.momentum,
         dict(learning_rate=0.01, mu=0.9, lr_in_buffer=True),
         dict(learning_rate=(0.01, 0.02, 0.005, 0.0), mu=(0.9, 0.5, 0.0, 0.99))),
    Case("nesterov/optax", optim.nesterov,
         dict(learning_rate=0.01, mu=0.9, lr_in_buffer=False),
         dict(learning_rate=(0.01, 0.02, 0.005, 0.0), mu=(0.9, 0.5, 0.0, 0.99))),
    Case("nesterov/keras", optim.nesterov,
         dict(learning_rate=0.01, mu=0.9, lr_in_buffer=True),
         dict(learning_rate=(0.01, 0.02, 0.005, 0.0), mu=(0.9, 0.5, 0.0, 0.99))),
    Case("rmsprop/out", optim.rmsprop,
         dict(learning_rate=0.01, rho=0.99, eps=1e-8, eps_in_sqrt=False),
         dict(learning_rate=(0.01, 0.02, 0.001, 0.005), rho=(0.99, 0.9, 0.0, 0.5),
              eps=(1e-8, 1e-3, 0.0, 1e-7))),
    Case("rmsprop/in", optim.rmsprop,
         dict(learning_rate=0.01, rho=0.9, eps=1e-7, eps_in_sqrt=True),
         dict(learning_rate=(0.01, 0.02, 0.001, 0.005), rho=(0.9, 0.99, 0.0, 0.5),
              eps=(1e-7, 1e-3, 1e-12, 1e-8))),
    Case("adam/paper", optim.adam,
         dict(learning_rate=0.05, b1=0.9, b2=0.999, eps=1e-8, eps_mode="paper"),
         dict(learning_rate=(0.05, 0.02, 0.01, 0.001), b1=(0.9, 0.0, 0.5, 0.99),
              b2=(0.999, 0.9, 0.0, 0.99), eps=(1e-8, 1e-3, 0.0, 1e-6))),
    Case("adam/keras", optim.adam,
         dict(learning_rate=0.05, b1=0.9, b2=0.999, eps=1e-7, eps_mode="keras"),
         dict(learning_rate=(0.05, 0.02, 0.01, 0.001), b1=(0.9, 0.0, 0.5, 0.99),
              b2=(0.999, 0.9, 0.5, 0.99), eps=(1e-7, 1e-3, 0.0, 1e-6))),
    Case("adagrad/in", optim.adagrad,
         dict(learning_rate=0.5, eps=1e-7, initial_accumulator=0.1, eps_in_sqrt=True),
         dict(learning_rate=(0.5, 0.3, 0.1, 0.01), eps=(1e-7, 1e-3, 0.0, 1e-10),
              initial_accumulator=(0.1, 0.0, 1.0, 0.01))),
    Case("adagrad/eps0", optim.adagrad,
         dict(learning_rate=0.5, eps=0.0, initial_accumulator=0.0, eps_in_sqrt=False),
         dict(learning_rate=(0.5, 0.3, 0.1, 0.01), eps=(0.0, 1e-3, 1e-10, 1e-7),
              initial_accumulator=(0.0, 0.1, 1.0, 0.01))),
    Case("adadelta", optim.adadelta,
         dict(learning_rate=1.0, rho=0.9, eps=1e-6),
         dict(learning_rate=(1.0, 0.5, 2.0, 0.1), rho=(0.9, 0.95, 0.0, 0.5),
              eps=(1e-6, 1e-4, 1e-8, 1e-7))),
    Case("adadelta/lr0.3", optim.adadelta,
         dict(learning_rate=0.3, rho=0.95, eps=1e-6),
         dict(learning_rate=(0.3, 0.5, 2.0, 0.1), rho=(0.95, 0.9, 0.0, 0.5),
              eps=(1e-6, 1e-4, 1e-8, 1e-7))),
]
CASE_IDS = [case.name for case in CASES]



def test_every_optax_equivalent_is_tested():
  tested = [optim.equivalent_row(case.alias.__name__, "optax", **case.kwargs) for case in CASES]
  untested = [row for row in optim.EQUIVALENTS if row.library == "optax" and row not in tested]
  assert not untested, f"no case runs these rows: {untested}"


@pytest.mark.parametrize("optimizer,library,kwargs,match", [
    ("sgd", "optax", {}, "optimizer: expected one of"),
    ("adam", "flax", {}, "library: expected one of"),
    ("adam", "torch", dict(eps_mode="keras"), r"adam\(eps_mode='paper'\)"),
    ("adagrad", "keras", {}, r"adagrad\(eps_in_sqrt=True\)"),
])
def test_equivalent_raises_without_an_exact_mapping(optimizer, library, kwargs, match):
  with pytest.raises(ValueError, match=match):
    optim.equivalent(optimizer, library, learning_rate=0.1, **kwargs)

def _params_tree(dtype=jnp.float64):
  """A small pytree with 16 coordinates in two leaves."""
  return {"w": jnp.linspace(-1.0, 1.0, 12, dtype=dtype).reshape(3, 4),
          "b": jnp.array([0.5, -0.25, 2.0, 0.0], dtype)}


def _fixed_gradients():
  """200 gradients whose 16 coordinates have scales 1e-5 ... 10, stacked on axis 0."""
  rng = np.random.default_rng(0)
  scales = 10.0 ** np.linspace(-5, 1, 16)
  flat = rng.standard_normal((STEPS, 16)) * scales[None, :]
  _, unravel = ravel_pytree(_params_tree())
  return jax.vmap(unravel)(jnp.asarray(flat))


def _quadratic_loss():
  """½ (x − c)ᵀ A (x − c) over the flattened tree; A has eigenvalues 0.01 ... 10.

  The minimum is far (c ≈ 10) so that no adaptive method reaches it in 200 steps: near
  a minimum their sign-like oscillation is chaotic and amplifies rounding differences
  between two correct implementations exponentially (measured: RMSProp at lr 0.01
  from 1e-16 to 5e-3 within 200 steps when c ≈ 0).
  """
  rng = np.random.default_rng(1)
  basis, _ = np.linalg.qr(rng.standard_normal((16, 16)))
  hessian = jnp.asarray(basis @ np.diag(np.logspace(-2, 1, 16)) @ basis.T)
  target = jnp.asarray(10.0 + rng.standard_normal(16))

  def loss(params):
    residual = ravel_pytree(params)[0] - target
    return 0.5 * residual @ hessian @ residual

  return loss


def _trajectory(opt, params, problem):
  """Parameters after each of STEPS updates, flattened: ``(STEPS, 16)``."""
  if problem == "fixed":
    gradient_fn, xs = (lambda p, g: g), _fixed_gradients()
  else:
    loss = _quadratic_loss()
    gradient_fn, xs = (lambda p, _: jax.grad(loss)(p)), jnp.arange(STEPS)

  def step(carry, x):
    params, state = carry
    updates, state = opt.update(gradient_fn(params, x), state, params)
    params = optax.apply_updates(params, updates)
    return (params, state), ravel_pytree(params)[0]

  _, path = jax.lax.scan(step, (params, opt.init(params)), xs)
  return path


@pytest.mark.usefixtures("x64")
@pytest.mark.parametrize("problem", ["fixed", "quadratic"])
@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
def test_matches_optax_builtin(case, problem):
  params = _params_tree()
  ours, theirs = jax.jit(lambda p: (
      _trajectory(case.alias(**case.kwargs), p, problem),
      _trajectory(case.reference(**case.kwargs), p, problem)))(params)
  movement = np.max(np.abs(np.asarray(ours[-1]) - np.asarray(ravel_pytree(params)[0])))
  assert movement > 1e-2, f"{case.name} barely moved ({movement}); the comparison is vacuous"
  np.testing.assert_array_less(np.max(np.abs(ours - theirs)), 1e-12)


@pytest.mark.usefixtures("x64")
@pytest.mark.parametrize("lr_in_buffer", [True, False])
def test_nesterov_equals_lookahead_loop_in_theta_plus_mu_v(lr_in_buffer):
  loss = _quadratic_loss()
  learning_rate, mu = 0.02, 0.9
  theta0 = _params_tree()

  def textbook(carry, _):
    theta, v = carry
    lookahead = jax.tree.map(lambda t, u: t + mu * u, theta, v)
    v = jax.tree.map(lambda u, g: mu * u - learning_rate * g, v, jax.grad(loss)(lookahead))
    theta = jax.tree.map(jnp.add, theta, v)
    reported = jax.tree.map(lambda t, u: t + mu * u, theta, v)
    return (theta, v), (ravel_pytree(theta)[0], ravel_pytree(reported)[0])

  _, (theta, theta_plus_mu_v) = jax.lax.scan(
      textbook, (theta0, jax.tree.map(jnp.zeros_like, theta0)), None, length=STEPS)
  library = _trajectory(optim.nesterov(learning_rate, mu, lr_in_buffer), theta0, "quadratic")
  np.testing.assert_array_less(np.max(np.abs(library - theta_plus_mu_v)), 1e-12)
  assert np.max(np.abs(library - theta)) > 1e-4  # the iterates themselves differ


@pytest.mark.usefixtures("x64")
@pytest.mark.parametrize("alias,reference", [
    (optim.momentum, lambda sched, mu: optax.sgd(sched, momentum=mu)),
    (optim.nesterov, lambda sched, mu: optax.sgd(sched, momentum=mu, nesterov=True)),
])
@pytest.mark.parametrize("problem", ["fixed", "quadratic"])
def test_schedule_coupling_with_the_momentum_buffer(alias, reference, problem):
  schedule, mu = optim.inverse_time_decay(0.05, decay=0.05), 0.9
  buffer_holds_rate = optax.chain(
      optax.scale_by_learning_rate(schedule),
      optax.trace(mu, nesterov=alias is optim.nesterov))  # the Keras behaviour
  params = _params_tree()
  run = jax.jit(lambda opt_fn, p: _trajectory(opt_fn(), p, problem), static_argnums=0)
  keras_mode = run(lambda: alias(schedule, mu, lr_in_buffer=True), params)
  optax_mode = run(lambda: alias(schedule, mu, lr_in_buffer=False), params)
  np.testing.assert_array_less(
      np.max(np.abs(keras_mode - run(lambda: buffer_holds_rate, params))), 1e-12)
  np.testing.assert_array_less(
      np.max(np.abs(optax_mode - run(lambda: reference(schedule, mu), params))), 1e-12)
  assert np.max(np.abs(keras_mode - optax_mode)) > 1e-3  # the two couplings really differ
  constant_keras = run(lambda: alias(0.05, mu, lr_in_buffer=True), params)
  constant_optax = run(lambda: alias(0.05, mu, lr_in_buffer=False), params)
  np.testing.assert_array_less(np.max(np.abs(constant_keras - constant_optax)), 1e-12)


@pytest.mark.usefixtures("x64")
def test_inverse_time_decay_is_the_legacy_keras_decay():
  schedule = optim.inverse_time_decay(0.1, decay=0.01)
  counts = np.arange(50)
  np.testing.assert_allclose(
      jax.vmap(schedule)(jnp.asarray(counts)), 0.1 / (1.0 + 0.01 * counts), rtol=1e-15)
  legacy = lambda count: 0.1 / (1.0 + 0.01 * count)
  ours = jax.jit(lambda p: _trajectory(optim.adam(schedule), p, "quadratic"))(_params_tree())
  theirs = jax.jit(lambda p: _trajectory(optax.adam(legacy), p, "quadratic"))(_params_tree())
  np.testing.assert_array_less(np.max(np.abs(ours - theirs)), 1e-12)


def _static_kwargs(case):
  return {k: v for k, v in case.kwargs.items() if k not in case.members}


@pytest.mark.usefixtures("x64")
@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
def test_vmap_over_members_equals_separate_runs(case):
  static = _static_kwargs(case)
  params = _params_tree()

  def run(hyperparams):
    return _trajectory(case.alias(**static, **hyperparams), params, "quadratic")

  chex.clear_trace_counter()

  @jax.jit
  @chex.assert_max_traces(n=1)
  def vectorised(hyperparams):
    return jax.vmap(run)(hyperparams)

  stacked = {k: jnp.asarray(v) for k, v in case.members.items()}
  together = vectorised(stacked)
  alone = jax.jit(run)
  for member in range(MEMBERS):
    separate = alone({k: v[member] for k, v in stacked.items()})
    np.testing.assert_array_less(np.max(np.abs(together[member] - separate)), 1e-12)
  # Other per-member values reuse the compiled function (assert_max_traces would raise).
  vectorised({k: v[::-1] for k, v in stacked.items()})


@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
def test_second_jitted_step_does_not_retrace(case):
  opt = case.alias(**case.kwargs)
  params = _params_tree(jnp.float32)
  chex.clear_trace_counter()

  @jax.jit
  @chex.assert_max_traces(n=1)
  def step(params, state):
    updates, state = opt.update(jax.tree.map(jnp.sin, params), state, params)
    return optax.apply_updates(params, updates), state

  params, state = step(params, opt.init(params))
  step(params, state)


def _parabola():
  target = jnp.array([1.0, -1.0, 1.0])
  return jnp.array([-1.0, 10.0, 1.0]), target, lambda x: jnp.sum((x - target) ** 2)


def _rosenbrock():
  objective = lambda x: (1.0 - x[0]) ** 2 + 100.0 * (x[1] - x[0] ** 2) ** 2
  return jnp.zeros(2), jnp.ones(2), objective


# Settings (other hyperparameters at their defaults) at which each optimizer solves
# both problems in 10,000 float32 steps. AdaDelta with its paper defaults (lr 1, rho
# 0.95) is still at (0.48, 0.33) on Rosenbrock after 10,000 steps; lr 0.1, rho 0.9 is
# the setting optax's own test uses.
CONVERGENCE = [
    (optim.momentum, dict(learning_rate=1e-3)),
    (optim.momentum, dict(learning_rate=1e-3, lr_in_buffer=True)),
    (optim.nesterov, dict(learning_rate=1e-3)),
    (optim.rmsprop, dict(learning_rate=5e-3)),
    (optim.rmsprop, dict(learning_rate=5e-3, eps_in_sqrt=True)),
    (optim.adam, dict(learning_rate=0.1)),
    (optim.adam, dict(learning_rate=0.1, eps_mode="keras")),
    (optim.adagrad, dict(learning_rate=1.0)),
    (optim.adagrad, dict(learning_rate=1.0, initial_accumulator=0.1, eps_in_sqrt=True)),
    (optim.adadelta, dict(learning_rate=0.1, rho=0.9)),
]
CONVERGENCE_IDS = [f"{alias.__name__}-{i}" for i, (alias, _) in enumerate(CONVERGENCE)]


@pytest.mark.parametrize("problem", [_parabola, _rosenbrock], ids=["parabola", "rosenbrock"])
@pytest.mark.parametrize("alias,kwargs", CONVERGENCE, ids=CONVERGENCE_IDS)
def test_converges(alias, kwargs, problem):
  initial, optimum, objective = problem()
  opt = alias(**kwargs)

  def step(carry, _):
    params, state = carry
    updates, state = opt.update(jax.grad(objective)(params), state, params)
    return (optax.apply_updates(params, updates), state), None

  (final, _), _ = jax.jit(lambda p: jax.lax.scan(
      step, (p, opt.init(p)), None, length=10_000))(initial)
  np.testing.assert_allclose(final, optimum, rtol=3e-2, atol=3e-2)


@pytest.mark.parametrize("dtype", [jnp.bfloat16, jnp.float32])
@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
def test_dtypes_are_preserved(case, dtype):
  params = _params_tree(dtype)
  grads = jax.tree.map(jnp.cos, params)
  opt = case.alias(**case.kwargs)
  state = opt.init(params)
  updates, new_state = jax.jit(opt.update)(grads, state, params)
  chex.assert_trees_all_equal_dtypes(grads, updates)
  chex.assert_trees_all_equal_dtypes(state, new_state)
  chex.assert_trees_all_equal_dtypes(params, optax.apply_updates(params, updates))

  # Per-member float32 hyperparameters traced under vmap must not promote the state.
  static = _static_kwargs(case)
  hyper = {k: jnp.asarray(v, jnp.float32) for k, v in case.members.items()}
  stacked = jax.tree.map(lambda x: jnp.stack([x] * MEMBERS), params)

  def member_step(hyperparams, params):
    member_opt = case.alias(**static, **hyperparams)
    state = member_opt.init(params)
    return state, member_opt.update(jax.tree.map(jnp.cos, params), state, params)

  state, (updates, new_state) = jax.jit(jax.vmap(member_step))(hyper, stacked)
  chex.assert_trees_all_equal_dtypes(stacked, updates)
  chex.assert_trees_all_equal_dtypes(state, new_state)


@pytest.mark.usefixtures("x64")
@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
def test_float64_hyperparameters_keep_float32_state(case):
  params = _params_tree(jnp.float32)
  hyper = {k: jnp.asarray(v[0], jnp.float64) for k, v in case.members.items()}
  opt = case.alias(**_static_kwargs(case), **hyper)
  state = opt.init(params)
  updates, new_state = jax.jit(opt.update)(jax.tree.map(jnp.cos, params), state, params)
  chex.assert_trees_all_equal_dtypes(params, updates)
  chex.assert_trees_all_equal_dtypes(state, new_state)


@pytest.mark.usefixtures("x64")
@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
def test_works_under_inject_hyperparams(case):
  params = _params_tree()
  injected = optax.inject_hyperparams(case.alias)(**case.kwargs)
  ours, plain = jax.jit(lambda p: (
      _trajectory(injected, p, "quadratic"),
      _trajectory(case.alias(**case.kwargs), p, "quadratic")))(params)
  np.testing.assert_array_less(np.max(np.abs(ours - plain)), 1e-12)

  state = injected.init(params)
  state.hyperparams["learning_rate"] = jnp.zeros([])
  updates, _ = jax.jit(injected.update)(jax.tree.map(jnp.cos, params), state, params)
  chex.assert_trees_all_equal(updates, jax.tree.map(jnp.zeros_like, params))


def test_gradient_noise_variance_decays_as_published():
  eta, gamma = 0.01, 0.55
  noise = optim.add_gradient_noise(eta, gamma, seed=0)
  grads = {"a": jnp.full((20_000,), 3.0), "b": jnp.zeros((200, 100))}

  def step(state, _):
    noisy, state = noise.update(grads, state)
    return state, jax.tree.map(lambda n, g: n - g, noisy, grads)

  _, draws = jax.jit(lambda s: jax.lax.scan(step, s, None, length=100))(noise.init(grads))
  for t in (0, 9, 99):
    expected = np.sqrt(eta / (1 + t) ** gamma)
    for leaf in jax.tree.leaves(draws):
      np.testing.assert_allclose(np.std(leaf[t]), expected, rtol=0.05)
      assert abs(np.mean(leaf[t])) < 5 * expected / np.sqrt(leaf[t].size)
  correlation = np.corrcoef(draws["a"][0], draws["b"][0].ravel())[0, 1]
  assert abs(correlation) < 0.05  # leaves draw independent noise
  assert abs(np.corrcoef(draws["a"][0], draws["a"][1])[0, 1]) < 0.05  # so do steps


def test_gradient_noise_seeds_and_members():
  grads = jnp.zeros(64, jnp.bfloat16)

  @jax.jit
  def first_draw(seed):
    noise = optim.add_gradient_noise(seed=seed)
    return noise.update(grads, noise.init(grads))[0]

  chex.assert_trees_all_equal(first_draw(3), first_draw(3))
  assert first_draw(3).dtype == jnp.bfloat16
  assert not np.array_equal(first_draw(3), first_draw(4))
  per_member = jax.jit(jax.vmap(first_draw))(jnp.arange(3))
  for member in range(3):
    chex.assert_trees_all_equal(per_member[member], first_draw(member))
  chex.assert_trees_all_equal(first_draw(jax.random.key(3)), first_draw(3))



@pytest.mark.parametrize("eta", [0.3, np.float32(0.3)], ids=["float", "array"])
@pytest.mark.parametrize("dtype", [jnp.bfloat16, jnp.float32])
@pytest.mark.parametrize("typed_key", [False, True])
def test_gradient_noise_is_optax_add_noise(typed_key, dtype, eta):
  seed = jax.random.key(3) if typed_key else 3
  grads = _params_tree(dtype)
  ours, theirs = optim.add_gradient_noise(eta, 0.55, seed), optax.add_noise(eta, 0.55, seed)
  our_state, their_state = ours.init(grads), theirs.init(grads)
  for _ in range(3):
    noisy, our_state = ours.update(grads, our_state)
    expected, their_state = theirs.update(grads, their_state)
    # An array eta makes optax promote bfloat16 to float32; jaxens keeps the dtype.
    chex.assert_trees_all_equal(
        noisy, jax.tree.map(lambda e, g: e.astype(g.dtype), expected, grads), strict=True)
  assert type(our_state) is type(their_state)
  chex.assert_trees_all_equal(our_state, their_state)

@pytest.mark.parametrize("build", [
    lambda: optim.momentum(-0.1),
    lambda: optim.momentum(0.1, mu=1.0),
    lambda: optim.nesterov(-1e-3),
    lambda: optim.nesterov(0.1, mu=-0.1),
    lambda: optim.rmsprop(-0.1),
    lambda: optim.rmsprop(0.1, rho=1.0),
    lambda: optim.rmsprop(0.1, eps=-1e-8),
    lambda: optim.adam(-0.1),
    lambda: optim.adam(0.1, b1=1.0),
    lambda: optim.adam(0.1, b2=1.5),
    lambda: optim.adam(0.1, b2=-0.1),
    lambda: optim.adam(0.1, eps=-1.0),
    lambda: optim.adam(0.1, eps_mode="tf"),
    lambda: optim.adagrad(-0.1),
    lambda: optim.adagrad(0.1, eps=-1.0),
    lambda: optim.adagrad(0.1, initial_accumulator=-0.1),
    lambda: optim.adadelta(-1.0),
    lambda: optim.adadelta(rho=1.0),
    lambda: optim.adadelta(eps=-1e-6),
    lambda: optim.adam(np.array([0.1, -0.1, 0.2])),
    lambda: optim.adam(jnp.array([0.1, 0.2]), b1=jnp.array([0.9, 1.0])),
    lambda: optim.momentum(float("nan")),
    lambda: optim.inverse_time_decay(-0.1, 0.01),
    lambda: optim.inverse_time_decay(0.1, -0.01),
    lambda: optim.add_gradient_noise(eta=-0.01),
    lambda: optim.add_gradient_noise(gamma=-0.55),
])
def test_bad_hyperparameters_raise_when_built(build):
  with pytest.raises(ValueError):
    build()


def test_schedules_and_traced_values_are_not_checked():
  optim.adam(lambda count: -1.0)  # a schedule is not called at build time
  params = jnp.ones(3)

  @jax.jit
  def traced(lr):
    opt = optim.momentum(lr)
    return opt.update(params, opt.init(params))[0]

  np.testing.assert_allclose(traced(-1.0), params)  # no error on a traced value


def test_readme_shows_the_current_table_of_equivalents():
  readme = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "README.md")
  with open(readme) as f:
    assert optim.equivalents_table() in f.read()
