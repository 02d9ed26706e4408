"""The six optimizers' building blocks, written from their update equations.

Each ``scale_by_*`` returns an :class:`optax.GradientTransformation` whose state is a
NamedTuple of arrays. The direction it emits is the *descent* step before the learning
rate: the aliases in ``_alias.py`` chain it with the (negated) learning rate, so that
optax's convention (updates are added to the parameters) holds.

Dtypes: the state keeps the dtype of the parameters it was initialised from and the
emitted updates keep the dtype of the incoming gradients, whatever the dtype of the
hyperparameters. So a float32 learning rate traced per member under ``jax.vmap``, or
one injected by ``optax.inject_hyperparams``, leaves bfloat16 parameters bfloat16.
Every hyperparameter may be a Python float or a traced scalar array.
"""

from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax

from jaxens.optim import _checks


def _ema(decay, average, value):
  r""":math:`\rho a + (1-\rho) x`, stored in the dtype of the running average ``a``."""
  return ((1 - decay) * value + decay * average).astype(average.dtype)


class ScaleByMomentumState(NamedTuple):
  """The momentum buffer of :func:`scale_by_momentum` and :func:`scale_by_nesterov`."""

  trace: optax.Updates


def scale_by_momentum(mu=0.9):
  r"""Heavy-ball momentum (Polyak 1964): the running sum of past directions.

  .. math::

    m_t = \mu\, m_{t-1} + u_t, \qquad m_0 = 0, \qquad \text{emits } m_t,

  where :math:`u_t` is the incoming update. Which :math:`u_t` it sees is what sets how a
  learning-rate schedule couples with the buffer:

  - after ``scale_by_learning_rate`` (:math:`u_t = -\eta_t g_t`), the buffer is the
    textbook/Keras velocity :math:`v_t = \mu v_{t-1} - \eta_t g_t` and
    :math:`\theta_t = \theta_{t-1} + v_t`;
  - before it, :math:`u_t = g_t` and the step is :math:`-\eta_t m_t`, as in
    ``optax.sgd`` and ``torch.optim.SGD``.

  The two agree for a constant learning rate since :math:`v_t = -\eta m_t`.

  Args:
    mu: momentum coefficient in [0, 1).

  Returns:
    An :class:`optax.GradientTransformation` with state :class:`ScaleByMomentumState`.

  Example:
    >>> import jax.numpy as jnp, optax
    >>> opt = optax.chain(scale_by_momentum(0.9), optax.scale(-0.1))
    >>> state = opt.init(jnp.zeros(2))
    >>> updates, state = opt.update(jnp.ones(2), state)

  References:
    Polyak, `Some methods of speeding up the convergence of iteration methods
    <https://doi.org/10.1016/0041-5553(64)90137-5>`_, 1964.
    Sutskever et al., `On the importance of initialization and momentum in deep
    learning <https://proceedings.mlr.press/v28/sutskever13.html>`_, 2013.
  """
  return _scale_by_trace(mu, nesterov=False)


def scale_by_nesterov(mu=0.9):
  r"""Nesterov's accelerated gradient in the reparametrised ("look-ahead free") form.

  The textbook step evaluates the gradient at the look-ahead point,
  :math:`v_t = \mu v_{t-1} - \eta\nabla L(\theta_{t-1} + \mu v_{t-1})`,
  :math:`\theta_t = \theta_{t-1} + v_t`. A gradient transformation only sees
  :math:`\nabla L` at the current parameters, so it tracks
  :math:`\phi_t = \theta_t + \mu v_t` instead (Bengio et al. 2013, eq. 7), for which

  .. math::

    m_t = \mu\, m_{t-1} + u_t, \qquad \text{emits } u_t + \mu\, m_t.

  With :math:`u_t = -\eta g_t` (learning rate first) this is Keras's
  :math:`\phi_t = \phi_{t-1} + \mu v_t - \eta g_t`; with :math:`u_t = g_t` and the rate
  after, it is ``optax.sgd(nesterov=True)`` and torch's
  :math:`\phi_t = \phi_{t-1} - \eta (g_t + \mu m_t)`. The parameters it produces equal the
  look-ahead loop's :math:`\theta_t + \mu v_t`, not its :math:`\theta_t`.

  Args:
    mu: momentum coefficient in [0, 1).

  Returns:
    An :class:`optax.GradientTransformation` with state :class:`ScaleByMomentumState`.

  Example:
    >>> import jax.numpy as jnp, optax
    >>> opt = optax.chain(scale_by_nesterov(0.9), optax.scale(-0.1))
    >>> updates, state = opt.update(jnp.ones(2), opt.init(jnp.zeros(2)))

  References:
    Nesterov, A method of solving a convex programming problem with convergence rate
    O(1/k²), Soviet Mathematics Doklady 27, 1983.
    Bengio, Boulanger-Lewandowski and Pascanu, `Advances in optimizing recurrent
    networks <https://arxiv.org/abs/1212.0901>`_, 2013.
    Sutskever et al., `On the importance of initialization and momentum in deep
    learning <https://proceedings.mlr.press/v28/sutskever13.html>`_, 2013.
  """
  return _scale_by_trace(mu, nesterov=True)


def _scale_by_trace(mu, nesterov):
  r"""The buffer :math:`m_t = \mu m_{t-1} + u_t` shared by momentum and Nesterov, which emit
  :math:`m_t` and :math:`u_t + \mu m_t` respectively."""
  _checks.check_decay("mu", mu)

  def init_fn(params):
    return ScaleByMomentumState(trace=optax.tree.zeros_like(params))

  def update_fn(updates, state, params=None):
    del params
    trace = jax.tree.map(
        lambda u, m: (u + mu * m).astype(m.dtype), updates, state.trace)
    if nesterov:
      updates = jax.tree.map(lambda u, m: (u + mu * m).astype(u.dtype), updates, trace)
    else:
      updates = jax.tree.map(lambda m, u: m.astype(u.dtype), trace, updates)
    return updates, ScaleByMomentumState(trace=trace)

  return optax.GradientTransformation(init_fn, update_fn)


class ScaleByRmspropState(NamedTuple):
  """Running average of squared gradients :math:`v` of :func:`scale_by_rmsprop`."""

  nu: optax.Updates


def scale_by_rmsprop(rho=0.9, eps=1e-8, eps_in_sqrt=False):
  r"""RMSProp (Tieleman and Hinton 2012): divide by a running RMS of the gradient.

  .. math::

    v_t = \rho\, v_{t-1} + (1-\rho)\, g_t^2, \quad v_0 = 0, \qquad
    \text{emits } \frac{g_t}{\sqrt{v_t} + \epsilon}
    \ \text{(OUT)} \quad\text{or}\quad \frac{g_t}{\sqrt{v_t + \epsilon}}
    \ \text{(IN, ``eps_in_sqrt=True``)}.

  OUT is the lecture's form and ``torch.optim.RMSprop(alpha=rho, eps=eps)``; IN is Keras 3
  ``RMSprop(rho=rho, epsilon=eps)`` and the default of ``optax.rmsprop``. With
  :math:`\epsilon > 0` no setting makes the two forms equal: they part where
  :math:`|g| \lesssim \sqrt{\epsilon}`.

  Args:
    rho: decay of the running average, in [0, 1).
    eps: non-negative term in the denominator.
    eps_in_sqrt: add ``eps`` inside the square root (IN) rather than outside (OUT).

  Returns:
    An :class:`optax.GradientTransformation` with state :class:`ScaleByRmspropState`.

  Example:
    >>> import jax.numpy as jnp
    >>> opt = scale_by_rmsprop(rho=0.9)
    >>> updates, state = opt.update(jnp.ones(2), opt.init(jnp.zeros(2)))

  References:
    Tieleman and Hinton, `Lecture 6.5, rmsprop: divide the gradient by a running average
    of its recent magnitude
    <https://www.cs.toronto.edu/~tijmen/csc321/slides/lecture_slides_lec6.pdf>`_, 2012.
    Graves, `Generating sequences with recurrent neural networks
    <https://arxiv.org/abs/1308.0850>`_, 2013.
  """
  _checks.check_decay("rho", rho)
  _checks.check_nonnegative("eps", eps)

  def init_fn(params):
    return ScaleByRmspropState(nu=optax.tree.zeros_like(params))

  def scaled(g, v):
    denominator = jnp.sqrt(v + eps) if eps_in_sqrt else jnp.sqrt(v) + eps
    return (g / denominator).astype(g.dtype)

  def update_fn(updates, state, params=None):
    del params
    nu = jax.tree.map(lambda g, v: _ema(rho, v, g * g), updates, state.nu)
    return jax.tree.map(scaled, updates, nu), ScaleByRmspropState(nu=nu)

  return optax.GradientTransformation(init_fn, update_fn)


class ScaleByAdamState(NamedTuple):
  """Step count (1 at the first update once incremented) and the two moments of Adam."""

  count: jax.Array
  mu: optax.Updates
  nu: optax.Updates


def scale_by_adam(b1=0.9, b2=0.999, eps=1e-8, eps_mode="paper"):
  r"""Adam (Kingma and Ba 2015, Algorithm 1).

  .. math::

    m_t = \beta_1 m_{t-1} + (1-\beta_1) g_t, \qquad
    v_t = \beta_2 v_{t-1} + (1-\beta_2) g_t^2, \qquad t = 1, 2, \dots

  ``eps_mode="paper"`` emits Algorithm 1's
  :math:`\hat m_t / (\sqrt{\hat v_t} + \epsilon)` with
  :math:`\hat m_t = m_t / (1-\beta_1^t)` and :math:`\hat v_t = v_t / (1-\beta_2^t)`, as
  ``optax.adam`` and ``torch.optim.Adam`` do.

  ``eps_mode="keras"`` emits the reordered form of Section 2 that Keras implements,
  with :math:`\epsilon` playing the role of the paper's :math:`\hat\epsilon`:

  .. math::

    \frac{\sqrt{1-\beta_2^t}}{1-\beta_1^t}\,\frac{m_t}{\sqrt{v_t} + \hat\epsilon},

  which is Algorithm 1 with a growing :math:`\epsilon_t = \hat\epsilon/\sqrt{1-\beta_2^t}`.
  The two modes differ only through :math:`\epsilon`.

  Args:
    b1: decay of the first moment, in [0, 1).
    b2: decay of the second moment, in [0, 1).
    eps: non-negative :math:`\epsilon` (paper) or :math:`\hat\epsilon` (keras).
    eps_mode: ``"paper"`` or ``"keras"``.

  Returns:
    An :class:`optax.GradientTransformation` with state :class:`ScaleByAdamState`.

  Example:
    >>> import jax.numpy as jnp
    >>> opt = scale_by_adam()
    >>> updates, state = opt.update(jnp.ones(2), opt.init(jnp.zeros(2)))

  References:
    Kingma and Ba, `Adam: A method for stochastic optimization
    <https://arxiv.org/abs/1412.6980>`_, 2015.
  """
  _checks.check_decay("b1", b1)
  _checks.check_decay("b2", b2)
  _checks.check_nonnegative("eps", eps)
  _checks.check_choice("eps_mode", eps_mode, ("paper", "keras"))

  def init_fn(params):
    return ScaleByAdamState(
        count=jnp.zeros([], jnp.int32),
        mu=optax.tree.zeros_like(params),
        nu=optax.tree.zeros_like(params))

  def update_fn(updates, state, params=None):
    del params
    count = optax.safe_increment(state.count)
    mu = jax.tree.map(lambda g, m: _ema(b1, m, g), updates, state.mu)
    nu = jax.tree.map(lambda g, v: _ema(b2, v, g * g), updates, state.nu)
    correction1 = 1 - b1**count
    correction2 = 1 - b2**count
    if eps_mode == "paper":
      # Multiplying by the scalar reciprocals saves two vector divisions per coordinate (~20%
      # of the update's time in E1 training on a CPU) for a rounding-level change.
      inverse1, inverse2 = 1 / correction1, 1 / correction2
      step = lambda m, v: (m * inverse1) / (jnp.sqrt(v * inverse2) + eps)
    else:
      step_size = jnp.sqrt(correction2) / correction1
      step = lambda m, v: step_size * m / (jnp.sqrt(v) + eps)
    updates = jax.tree.map(lambda g, m, v: step(m, v).astype(g.dtype), updates, mu, nu)
    return updates, ScaleByAdamState(count=count, mu=mu, nu=nu)

  return optax.GradientTransformation(init_fn, update_fn)


class ScaleByAdagradState(NamedTuple):
  """Per-coordinate sum of squared gradients :math:`G` of :func:`scale_by_adagrad`."""

  sum_of_squares: optax.Updates


def scale_by_adagrad(eps=1e-10, initial_accumulator=0.0, eps_in_sqrt=False):
  r"""AdaGrad (Duchi et al. 2011, diagonal form): divide by the root of all squares.

  .. math::

    G_t = G_{t-1} + g_t^2, \quad G_0 = a, \qquad
    \text{emits } \frac{g_t}{\sqrt{G_t} + \epsilon}\ \text{(OUT)}
    \quad\text{or}\quad \frac{g_t}{\sqrt{G_t + \epsilon}}\ \text{(IN)},

  and 0 where :math:`G_t = 0` (only possible when every gradient so far was 0).

  The defaults (OUT, :math:`a = 0`, :math:`\epsilon = 10^{-10}`) are the paper's form and
  ``torch.optim.Adagrad``'s; then the first step is :math:`\eta\,\mathrm{sign}(g_1)`.
  ``optax.adagrad`` and Keras 3 ``Adagrad`` use IN with :math:`a = 0.1`,
  :math:`\epsilon = 10^{-7}`. Between the two sets of defaults :math:`a` dominates.

  Args:
    eps: non-negative term in the denominator.
    initial_accumulator: non-negative starting value :math:`a` of :math:`G`.
    eps_in_sqrt: add ``eps`` inside the square root (IN) rather than outside (OUT).

  Returns:
    An :class:`optax.GradientTransformation` with state :class:`ScaleByAdagradState`.

  Example:
    >>> import jax.numpy as jnp
    >>> opt = scale_by_adagrad()
    >>> updates, state = opt.update(jnp.ones(2), opt.init(jnp.zeros(2)))

  References:
    Duchi, Hazan and Singer, `Adaptive subgradient methods for online learning and
    stochastic optimization <https://jmlr.org/papers/v12/duchi11a.html>`_, 2011.
  """
  _checks.check_nonnegative("eps", eps)
  _checks.check_nonnegative("initial_accumulator", initial_accumulator)

  def init_fn(params):
    return ScaleByAdagradState(
        sum_of_squares=optax.tree.full_like(params, initial_accumulator))

  def scaled(g, total):
    denominator = jnp.sqrt(total + eps) if eps_in_sqrt else jnp.sqrt(total) + eps
    return jnp.where(total > 0, g / denominator, 0).astype(g.dtype)

  def update_fn(updates, state, params=None):
    del params
    sum_of_squares = jax.tree.map(
        lambda g, total: (total + g * g).astype(total.dtype),
        updates, state.sum_of_squares)
    updates = jax.tree.map(scaled, updates, sum_of_squares)
    return updates, ScaleByAdagradState(sum_of_squares=sum_of_squares)

  return optax.GradientTransformation(init_fn, update_fn)


class ScaleByAdadeltaState(NamedTuple):
  r"""Running averages :math:`E[g^2]` and :math:`E[\Delta x^2]` of AdaDelta."""

  e_g: optax.Updates
  e_x: optax.Updates


def scale_by_adadelta(rho=0.95, eps=1e-6):
  r"""AdaDelta (Zeiler 2012, Algorithm 1), emitting the unscaled step :math:`-\Delta x_t`.

  .. math::

    E[g^2]_t = \rho E[g^2]_{t-1} + (1-\rho) g_t^2, \qquad
    \Delta x_t = -\frac{\sqrt{E[\Delta x^2]_{t-1} + \epsilon}}
                       {\sqrt{E[g^2]_t + \epsilon}}\, g_t, \qquad
    E[\Delta x^2]_t = \rho E[\Delta x^2]_{t-1} + (1-\rho) \Delta x_t^2.

  The accumulator stores the *unscaled* :math:`\Delta x`, as the paper and optax, torch
  and Keras all do; a learning rate chained afterwards scales only the applied step
  (:math:`\theta_t = \theta_{t-1} + \eta\,\Delta x_t`; the paper has :math:`\eta = 1`).

  Args:
    rho: decay of both running averages, in [0, 1).
    eps: non-negative term inside both square roots.

  Returns:
    An :class:`optax.GradientTransformation` with state :class:`ScaleByAdadeltaState`.

  Example:
    >>> import jax.numpy as jnp
    >>> opt = scale_by_adadelta()
    >>> updates, state = opt.update(jnp.ones(2), opt.init(jnp.zeros(2)))

  References:
    Zeiler, `ADADELTA: An adaptive learning rate method
    <https://arxiv.org/abs/1212.5701>`_, 2012.
  """
  _checks.check_decay("rho", rho)
  _checks.check_nonnegative("eps", eps)

  def init_fn(params):
    return ScaleByAdadeltaState(
        e_g=optax.tree.zeros_like(params), e_x=optax.tree.zeros_like(params))

  def update_fn(updates, state, params=None):
    del params
    e_g = jax.tree.map(lambda g, e: _ema(rho, e, g * g), updates, state.e_g)
    updates = jax.tree.map(
        lambda g, eg, ex: (jnp.sqrt(ex + eps) / jnp.sqrt(eg + eps) * g).astype(g.dtype),
        updates, e_g, state.e_x)
    e_x = jax.tree.map(lambda d, e: _ema(rho, e, d * d), updates, state.e_x)
    return updates, ScaleByAdadeltaState(e_g=e_g, e_x=e_x)

  return optax.GradientTransformation(init_fn, update_fn)


class ScaleByLearningRateState(NamedTuple):
  """Number of updates so far; a schedule sees 0 at the first update."""

  count: jax.Array


def scale_by_learning_rate(learning_rate):
  r"""Multiplies updates by :math:`-\eta_t`, keeping each update's dtype.

  Unlike ``optax.scale_by_learning_rate``, a learning rate given as an array (one value
  per member under ``jax.vmap``, or injected by ``optax.inject_hyperparams``) does not
  promote bfloat16 updates to float32.

  Args:
    learning_rate: a non-negative float or scalar array, or a schedule
      ``count -> rate`` that sees 0 at the first update.

  Returns:
    An :class:`optax.GradientTransformation`; its state is
    :class:`ScaleByLearningRateState` for a schedule and ``optax.EmptyState`` otherwise.
  """
  _checks.check_nonnegative("learning_rate", learning_rate)

  def scale(updates, rate):
    return jax.tree.map(lambda u: (-rate * u).astype(u.dtype), updates)

  if not callable(learning_rate):
    return optax.GradientTransformation(
        optax.init_empty_state,
        lambda updates, state, params=None: (scale(updates, learning_rate), state))

  def init_fn(params):
    del params
    return ScaleByLearningRateState(count=jnp.zeros([], jnp.int32))

  def update_fn(updates, state, params=None):
    del params
    updates = scale(updates, learning_rate(state.count))
    return updates, ScaleByLearningRateState(count=optax.safe_increment(state.count))

  return optax.GradientTransformation(init_fn, update_fn)


#: The state of :func:`add_gradient_noise`: ``optax.AddNoiseState``'s count and PRNG key.
AddGradientNoiseState = optax.AddNoiseState


def add_gradient_noise(eta=0.01, gamma=0.55, seed=0):
  r"""Adds annealed Gaussian noise to the gradient (Neelakantan et al. 2015).

  .. math::

    \tilde g_t = g_t + \mathcal N(0, \sigma_t^2), \qquad
    \sigma_t^2 = \frac{\eta}{(1+t)^\gamma}, \qquad t = 0, 1, \dots

  with :math:`t = 0` at the first update, independently for every coordinate. Chain it
  before an optimizer: ``optax.chain(add_gradient_noise(), adam(1e-3))``.

  This is ``optax.add_noise(eta, gamma, seed)``, draw for draw, except that it checks
  its hyperparameters when built and keeps each gradient's dtype: optax promotes
  bfloat16 gradients to the dtype of an array ``eta`` or ``gamma`` (e.g. one per member).

  Args:
    eta: non-negative base variance :math:`\eta` (the paper tries 0.01, 0.3 and 1.0).
    gamma: non-negative decay exponent :math:`\gamma` (the paper uses 0.55).
    seed: an integer seed (a traced integer is fine, e.g. one per member under
      ``jax.vmap``) or a typed PRNG key from ``jax.random.key``.

  Returns:
    An :class:`optax.GradientTransformation` with state :class:`AddGradientNoiseState`.

  Example:
    >>> import jax.numpy as jnp
    >>> noise = add_gradient_noise(eta=0.01, gamma=0.55, seed=0)
    >>> noisy, state = noise.update(jnp.zeros(3), noise.init(jnp.zeros(3)))

  References:
    Neelakantan et al., `Adding gradient noise improves learning for very deep networks
    <https://arxiv.org/abs/1511.06807>`_, 2015.
  """
  _checks.check_nonnegative("eta", eta)
  _checks.check_nonnegative("gamma", gamma)
  noise = optax.add_noise(eta, gamma, seed)

  def update_fn(updates, state, params=None):
    noisy, state = noise.update(updates, state, params)
    return jax.tree.map(lambda n, g: n.astype(g.dtype), noisy, updates), state

  return optax.GradientTransformation(noise.init, update_fn)
