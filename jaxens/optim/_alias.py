"""The six optimizers: a ``scale_by_*`` building block chained with the learning rate.

``learning_rate`` is a non-negative float, a schedule ``count -> rate`` (count 0 at the
first update), or a scalar array; under ``jax.vmap`` it (and every other float
hyperparameter) may be one traced value per ensemble member, with no recompilation
per value:

    jax.vmap(lambda lr, p, g, s: adam(lr).update(g, s, p))(lrs, params, grads, states)

Each docstring gives the settings that reproduce optax, torch.optim and Keras 3
exactly (the differences are measured in ``tests/test_optim_reference.py``).
"""

import optax

from jaxens.optim import _transforms


def _with_learning_rate(transform, learning_rate, rate_first=False):
  """``transform`` chained with the negated learning rate, after it unless ``rate_first``."""
  rate = _transforms.scale_by_learning_rate(learning_rate)
  return optax.chain(rate, transform) if rate_first else optax.chain(transform, rate)


def momentum(learning_rate, mu=0.9, lr_in_buffer=False):
  r"""SGD with heavy-ball momentum (Polyak 1964).

  .. math::

    m_t = \mu m_{t-1} + g_t, \qquad \theta_t = \theta_{t-1} - \eta_t m_t
    \qquad (\texttt{lr\_in\_buffer=False}, \text{the default}),

    v_t = \mu v_{t-1} - \eta_t g_t, \qquad \theta_t = \theta_{t-1} + v_t
    \qquad (\texttt{lr\_in\_buffer=True}).

  The two are identical for a constant rate (:math:`v = -\eta m`) and part under a
  schedule. The default is ``optax.sgd(lr, momentum=mu)`` and
  ``torch.optim.SGD(momentum=mu)``, which rescale the whole buffer by the current rate.
  ``lr_in_buffer=True`` is the textbook form and Keras' ``SGD(momentum=mu)`` (also with
  the legacy ``decay``, see :func:`inverse_time_decay`): a rate change affects only
  future gradients. (The default is also the faster one on XLA:CPU, where the plain
  ``theta + v`` of the other form runs at half the speed of ``theta - eta * m``.)

  Args:
    learning_rate: float, per-member array or schedule.
    mu: momentum coefficient in [0, 1).
    lr_in_buffer: multiply the buffer by the rate (optax/torch, the default) or put
      the rate inside the buffer (Keras/textbook).

  Returns:
    An :class:`optax.GradientTransformation`.

  Example:
    >>> import jax.numpy as jnp, optax
    >>> opt = momentum(0.1, mu=0.9)
    >>> params = jnp.ones(3)
    >>> updates, state = opt.update(2 * params, opt.init(params))
    >>> params = optax.apply_updates(params, updates)

  References:
    Polyak, `Some methods of speeding up the convergence of iteration methods
    <https://doi.org/10.1016/0041-5553(64)90137-5>`_, 1964.
    Sutskever et al., `On the importance of initialization and momentum in deep
    learning <https://proceedings.mlr.press/v28/sutskever13.html>`_, 2013.
  """
  return _with_learning_rate(
      _transforms.scale_by_momentum(mu), learning_rate, lr_in_buffer)


def nesterov(learning_rate, mu=0.9, lr_in_buffer=False):
  r"""SGD with Nesterov momentum, in the reparametrised form every library uses.

  The textbook look-ahead step
  :math:`v_t = \mu v_{t-1} - \eta_t \nabla L(\theta_{t-1} + \mu v_{t-1})`,
  :math:`\theta_t = \theta_{t-1} + v_t` is run on :math:`\phi = \theta + \mu v`, which
  needs the gradient at the current parameters only (Bengio et al. 2013):

  .. math::

    m_t = \mu m_{t-1} + g_t, \qquad \phi_t = \phi_{t-1} - \eta_t (g_t + \mu m_t)
    \qquad (\texttt{lr\_in\_buffer=False}, \text{optax, torch; the default}),

    v_t = \mu v_{t-1} - \eta_t g_t, \qquad \phi_t = \phi_{t-1} + \mu v_t - \eta_t g_t
    \qquad (\texttt{lr\_in\_buffer=True}, \text{Keras}).

  The parameters therefore equal the look-ahead loop's :math:`\theta_t + \mu v_t`.

  Args:
    learning_rate: float, per-member array or schedule.
    mu: momentum coefficient in [0, 1).
    lr_in_buffer: multiply the buffer by the rate (``optax.sgd(nesterov=True)``,
      ``torch.optim.SGD(nesterov=True)``, the default) or put the rate inside the
      buffer (Keras ``SGD(nesterov=True)``). Identical for a constant rate.

  Returns:
    An :class:`optax.GradientTransformation`.

  Example:
    >>> import jax.numpy as jnp
    >>> opt = nesterov(0.1, mu=0.9)
    >>> updates, state = opt.update(jnp.ones(3), opt.init(jnp.zeros(3)))

  References:
    Nesterov, A method of solving a convex programming problem with convergence rate
    O(1/k²), Soviet Mathematics Doklady 27, 1983.
    Bengio, Boulanger-Lewandowski and Pascanu, `Advances in optimizing recurrent
    networks <https://arxiv.org/abs/1212.0901>`_, 2013.
  """
  return _with_learning_rate(
      _transforms.scale_by_nesterov(mu), learning_rate, lr_in_buffer)


def rmsprop(learning_rate, rho=0.9, eps=1e-8, eps_in_sqrt=False):
  r"""RMSProp (Tieleman and Hinton 2012).

  .. math::

    v_t = \rho v_{t-1} + (1-\rho) g_t^2, \qquad
    \theta_t = \theta_{t-1} - \eta_t \frac{g_t}{\sqrt{v_t} + \epsilon}
    \quad\text{or, with ``eps_in_sqrt=True``,}\quad
    \theta_{t-1} - \eta_t \frac{g_t}{\sqrt{v_t + \epsilon}}.

  Exact mappings:

  - ``rmsprop(lr, rho, eps)`` = ``torch.optim.RMSprop(lr, alpha=rho, eps=eps)``
    = ``optax.rmsprop(lr, decay=rho, eps=eps, eps_in_sqrt=False)``;
  - ``rmsprop(lr, rho, eps, eps_in_sqrt=True)`` = Keras 3
    ``RMSprop(lr, rho=rho, epsilon=eps)`` = ``optax.rmsprop(lr, decay=rho, eps=eps)``.

  With :math:`\epsilon > 0` torch and Keras cannot be made equal. Defaults: the lecture's
  form (OUT) with :math:`\rho = 0.9`; torch's default :math:`\rho` is 0.99 and Keras'
  :math:`\epsilon` is 1e-7.

  Args:
    learning_rate: float, per-member array or schedule.
    rho: decay of the running average of :math:`g^2`, in [0, 1).
    eps: non-negative term in the denominator.
    eps_in_sqrt: add ``eps`` inside the square root.

  Returns:
    An :class:`optax.GradientTransformation`.

  Example:
    >>> import jax.numpy as jnp
    >>> opt = rmsprop(1e-3)
    >>> updates, state = opt.update(jnp.ones(3), opt.init(jnp.zeros(3)))

  References:
    Tieleman and Hinton, `Lecture 6.5, rmsprop
    <https://www.cs.toronto.edu/~tijmen/csc321/slides/lecture_slides_lec6.pdf>`_, 2012.
  """
  return _with_learning_rate(_transforms.scale_by_rmsprop(rho, eps, eps_in_sqrt), learning_rate)


def adam(learning_rate, b1=0.9, b2=0.999, eps=1e-8, eps_mode="paper"):
  r"""Adam (Kingma and Ba 2015).

  .. math::

    m_t = \beta_1 m_{t-1} + (1-\beta_1) g_t, \quad
    v_t = \beta_2 v_{t-1} + (1-\beta_2) g_t^2, \quad
    \hat m_t = \frac{m_t}{1-\beta_1^t}, \quad \hat v_t = \frac{v_t}{1-\beta_2^t},

    \theta_t = \theta_{t-1} - \eta_t \frac{\hat m_t}{\sqrt{\hat v_t} + \epsilon}
    \quad (\texttt{"paper"}), \qquad
    \theta_t = \theta_{t-1} - \eta_t \frac{\sqrt{1-\beta_2^t}}{1-\beta_1^t}
      \frac{m_t}{\sqrt{v_t} + \hat\epsilon} \quad (\texttt{"keras"}),

  with :math:`t = 1` at the first update and :math:`\hat\epsilon` = ``eps``.

  Exact mappings:

  - ``adam(lr, b1, b2, eps)`` = ``optax.adam(lr, b1, b2, eps)``
    = ``torch.optim.Adam(lr, betas=(b1, b2), eps=eps)``;
  - ``adam(lr, b1, b2, eps, eps_mode="keras")`` = Keras 3
    ``Adam(lr, beta_1=b1, beta_2=b2, epsilon=eps)`` (Keras' default ``eps`` is 1e-7).

  The modes differ only through :math:`\epsilon`: "keras" is "paper" with
  :math:`\epsilon_t = \hat\epsilon / \sqrt{1-\beta_2^t}`.

  Args:
    learning_rate: float, per-member array or schedule.
    b1: decay of the first moment, in [0, 1).
    b2: decay of the second moment, in [0, 1).
    eps: non-negative term in the denominator.
    eps_mode: ``"paper"`` (Algorithm 1) or ``"keras"`` (the Section 2 reordering).

  Returns:
    An :class:`optax.GradientTransformation`.

  Example:
    >>> import jax.numpy as jnp
    >>> opt = adam(1e-3)
    >>> updates, state = opt.update(jnp.ones(3), opt.init(jnp.zeros(3)))

  References:
    Kingma and Ba, `Adam: A method for stochastic optimization
    <https://arxiv.org/abs/1412.6980>`_, 2015.
  """
  return _with_learning_rate(_transforms.scale_by_adam(b1, b2, eps, eps_mode), learning_rate)


def adagrad(learning_rate, eps=1e-10, initial_accumulator=0.0, eps_in_sqrt=False):
  r"""AdaGrad (Duchi et al. 2011).

  .. math::

    G_t = G_{t-1} + g_t^2, \quad G_0 = a, \qquad
    \theta_t = \theta_{t-1} - \eta_t \frac{g_t}{\sqrt{G_t} + \epsilon}
    \quad\text{or, with ``eps_in_sqrt=True``,}\quad
    \theta_{t-1} - \eta_t \frac{g_t}{\sqrt{G_t + \epsilon}}.

  Exact mappings:

  - ``adagrad(lr, eps, a)`` = ``torch.optim.Adagrad(lr, initial_accumulator_value=a,
    eps=eps)`` (the defaults here are torch's: :math:`a = 0`, :math:`\epsilon = 10^{-10}`);
  - ``adagrad(lr, eps, a, eps_in_sqrt=True)`` = ``optax.adagrad(lr, a, eps)`` = Keras 3
    ``Adagrad(lr, initial_accumulator_value=a, epsilon=eps)`` (their defaults:
    :math:`a = 0.1`, :math:`\epsilon = 10^{-7}`).

  Between torch's and Keras' defaults :math:`a` is the largest difference: with
  :math:`a = 0` the first step is :math:`\eta\,\mathrm{sign}(g_1)`.

  Args:
    learning_rate: float, per-member array or schedule.
    eps: non-negative term in the denominator.
    initial_accumulator: non-negative initial :math:`G_0`.
    eps_in_sqrt: add ``eps`` inside the square root.

  Returns:
    An :class:`optax.GradientTransformation`.

  Example:
    >>> import jax.numpy as jnp
    >>> opt = adagrad(0.1)
    >>> updates, state = opt.update(jnp.ones(3), opt.init(jnp.zeros(3)))

  References:
    Duchi, Hazan and Singer, `Adaptive subgradient methods for online learning and
    stochastic optimization <https://jmlr.org/papers/v12/duchi11a.html>`_, 2011.
  """
  return _with_learning_rate(
      _transforms.scale_by_adagrad(eps, initial_accumulator, eps_in_sqrt), learning_rate)


def adadelta(learning_rate=1.0, rho=0.95, eps=1e-6):
  r"""AdaDelta (Zeiler 2012).

  .. math::

    E[g^2]_t = \rho E[g^2]_{t-1} + (1-\rho) g_t^2, \qquad
    \Delta x_t = -\frac{\sqrt{E[\Delta x^2]_{t-1} + \epsilon}}
                       {\sqrt{E[g^2]_t + \epsilon}}\, g_t,

    E[\Delta x^2]_t = \rho E[\Delta x^2]_{t-1} + (1-\rho) \Delta x_t^2, \qquad
    \theta_t = \theta_{t-1} + \eta_t \Delta x_t.

  The paper has :math:`\eta = 1`; the accumulator always holds the unscaled
  :math:`\Delta x`. ``adadelta(lr, rho, eps)`` = ``optax.adadelta(lr, rho, eps)``
  = ``torch.optim.Adadelta(lr, rho, eps)`` = Keras 3 ``Adadelta(lr, rho, epsilon=eps)``.
  Defaults are the paper's MNIST settings (:math:`\rho = 0.95`, :math:`\epsilon = 10^{-6}`);
  beware that ``optax.adadelta()``'s default ``learning_rate=None`` ascends the
  gradient and Keras' default rate is 1e-3.

  Args:
    learning_rate: float, per-member array or schedule (1.0 in the paper).
    rho: decay of both running averages, in [0, 1).
    eps: non-negative term inside both square roots.

  Returns:
    An :class:`optax.GradientTransformation`.

  Example:
    >>> import jax.numpy as jnp
    >>> opt = adadelta()
    >>> updates, state = opt.update(jnp.ones(3), opt.init(jnp.zeros(3)))

  References:
    Zeiler, `ADADELTA: An adaptive learning rate method
    <https://arxiv.org/abs/1212.5701>`_, 2012.
  """
  return _with_learning_rate(_transforms.scale_by_adadelta(rho, eps), learning_rate)
