"""Train and evaluate a whole ensemble of MLPs as one jitted program.

Every epoch is one compiled call: a ``lax.scan`` over the minibatches whose body ``vmap``s a
single-member training step over the E members. Member ``i`` draws everything (initial
weights, data order, dropout) from ``fold_in(PRNGKey(seed), i)``, so it trains identically
alone (``members=[i]``) or inside any ensemble. The member axis is axis 0 of every leaf and is
sharded over the available devices.

Example::

  splits = jaxens.data.load_mnist()
  cfg = TrainConfig(MLPConfig(), n_members=10)
  result = train(cfg, splits)
  probs = predict(cfg, result.best_params, result.best_state, splits.test[0])  # (10, N, 10)
"""

import dataclasses
import functools
import hashlib
import json
import os
import sys
from typing import Any, Callable, Mapping, NamedTuple, Optional, Union

import jax
import jax.numpy as jnp
import numpy as np
import optax
import tqdm
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from jaxens import _permutation
from jaxens import _validation
from jaxens import losses
from jaxens import nn
from jaxens import optim

DATA_ORDERS = ("shared", "independent", "bootstrap")
KEEP = ("best_val_loss", "last")
MEMBER_AXIS = "members"
HISTORY_KEYS = ("train_loss", "train_accuracy", "val_loss", "val_accuracy")
# Sub-streams of a member's key; the shared data order uses the root key's last stream.
_INIT, _DATA, _DROPOUT = 0, 1, 2
_SHARED_STREAM = _BOOTSTRAP_STREAM = 2**32 - 1
_EVAL_BATCH_SIZE = 1000


@dataclasses.dataclass(frozen=True)
class TrainConfig:
  """How to train an ensemble. The defaults are the published E1 pool.

  Attributes:
    model: the network of every member.
    optimizer: a name from ``jaxens.optim`` (``"adam"``, ``"momentum"``, ...) or any factory
      ``f(**optimizer_kwargs) -> optax.GradientTransformation``.
    optimizer_kwargs: keyword arguments of the optimizer, shared by all members.
    n_members: ensemble size E.
    batch_size, epochs: minibatch size and number of passes; an epoch has
      ``len(train) // batch_size`` steps (the last partial batch is dropped).
    seed: in ``[0, 2**32)``; member ``i`` uses ``fold_in(PRNGKey(seed), i)``.
    data_order: ``"shared"`` (all members see the same batches), ``"independent"`` (each
      member its own shuffle) or ``"bootstrap"`` (each member a resample with replacement,
      drawn once and reshuffled every epoch).
    overrides: optimizer kwargs that differ per member, each an array of length E, e.g.
      ``{"learning_rate": np.logspace(-4, -2, E)}``: a sweep trains as one ensemble.
    keep: which parameters ``best_params`` holds: the epoch with the lowest validation loss
      (``"best_val_loss"``) or the last epoch (``"last"``).
    l2: weight of ``nn.l2_penalty`` added to the training loss.
    max_norm: radius of the max-norm projection applied after every step, or None.
  """
  model: nn.MLPConfig = nn.MLPConfig()
  optimizer: Union[str, Callable[..., optax.GradientTransformation]] = "adam"
  optimizer_kwargs: Mapping[str, Any] = dataclasses.field(
      default_factory=lambda: {"learning_rate": 1e-3})
  n_members: int = 10
  batch_size: int = 32
  epochs: int = 3
  seed: int = 0
  data_order: str = "independent"
  overrides: Optional[Mapping[str, Any]] = None
  keep: str = "best_val_loss"
  l2: float = 0.0
  max_norm: Optional[float] = None


class TrainResult(NamedTuple):
  """What ``train`` returns. Every array has the member axis first.

  Attributes:
    params, state: the last epoch's parameters and BN statistics (E, ...).
    best_params, best_state: what ``cfg.keep`` selects (E, ...).
    history: ``{"train_loss", "train_accuracy", "val_loss", "val_accuracy"}``, each (E, epochs);
      train metrics are means over the epoch's minibatches, validation metrics are evaluated
      in eval mode at the end of the epoch.
    best_epoch: (E,) the epoch (0-based) that ``best_params`` comes from.
    diverged: (E,) True for a member whose loss or parameters became non-finite; such a member
      was rolled back to its state at the start of that epoch (its last finite end-of-epoch
      state), frozen there, and never replaced a checkpoint afterwards.
    members: (E,) the member indices, ``range(n_members)`` or ``members``.
  """
  params: Any
  state: Any
  best_params: Any
  best_state: Any
  history: dict
  best_epoch: np.ndarray
  diverged: np.ndarray
  members: np.ndarray


class _Carry(NamedTuple):
  """Everything that persists between epochs; also what a checkpoint holds."""
  params: Any
  state: Any
  opt_state: Any
  best_params: Any
  best_state: Any
  best_val_loss: jax.Array
  best_epoch: jax.Array
  alive: jax.Array
  history: dict


def member_key(seed, member):
  """The key of member ``member``: ``fold_in(PRNGKey(seed), member)``."""
  return jax.random.fold_in(jax.random.PRNGKey(seed), member)


def resolve_optimizer(optimizer):
  """A factory ``f(**kwargs) -> GradientTransformation`` from a name or a callable."""
  if callable(optimizer):
    return optimizer
  names = optim.OPTIMIZERS
  if optimizer not in names:
    raise ValueError(f"optimizer: expected one of {names} or a callable, got {optimizer!r}")
  return getattr(optim, optimizer)


def _validate(cfg, data, members):
  _validation.check_int("n_members", cfg.n_members, 1)
  _validation.check_int("epochs", cfg.epochs, 1)
  _validation.check_int("seed", cfg.seed, 0, 2**32 - 1)
  if cfg.data_order not in DATA_ORDERS:
    raise ValueError(f"data_order: expected one of {DATA_ORDERS}, got {cfg.data_order!r}")
  if cfg.keep not in KEEP:
    raise ValueError(f"keep: expected one of {KEEP}, got {cfg.keep!r}")
  if cfg.l2 < 0:
    raise ValueError(f"l2: expected a non-negative weight, got {cfg.l2}")
  if cfg.max_norm is not None and cfg.max_norm <= 0:
    raise ValueError(f"max_norm: expected a positive radius or None, got {cfg.max_norm}")
  resolve_optimizer(cfg.optimizer)
  for name, values in (cfg.overrides or {}).items():
    if np.shape(values) != (cfg.n_members,):
      raise ValueError(
          f"overrides[{name!r}]: expected an array of length n_members={cfg.n_members}, "
          f"got shape {np.shape(values)}")
  for split_name in ("train", "val"):
    x, y = getattr(data, split_name)
    if np.ndim(x) != 2 or np.shape(x)[1] != cfg.model.sizes[0]:
      raise ValueError(
          f"data.{split_name}: expected x of shape (N, {cfg.model.sizes[0]}), got {np.shape(x)}")
    if np.shape(y) != (np.shape(x)[0],):
      raise ValueError(f"data.{split_name}: expected y of shape ({np.shape(x)[0]},), "
                       f"got {np.shape(y)}")
  _validation.check_int("batch_size", cfg.batch_size, 1, np.shape(data.train[0])[0])  # n_train
  if cfg.keep == "best_val_loss" and np.shape(data.val[0])[0] == 0:
    raise ValueError("keep: 'best_val_loss' needs a validation set; use keep='last' "
                     "or load the data with val_fraction > 0")
  if members is not None:
    bad = [m for m in members if not 0 <= int(m) < cfg.n_members]
    if not len(members) or bad:
      raise ValueError(
          f"members: expected a non-empty list of indices in [0, {cfg.n_members}), got {members}")


def _member_hparams(cfg, members):
  return {name: np.asarray(values, np.float32)[members]
          for name, values in (cfg.overrides or {}).items()}


def _make_optimizer(cfg, hparams):
  return resolve_optimizer(cfg.optimizer)(**{**cfg.optimizer_kwargs, **hparams})


def _init_member(cfg, key, hparams):
  """A member's training state before its first epoch."""
  params, state = nn.mlp_init(jax.random.fold_in(key, _INIT), cfg.model)
  opt_state = _make_optimizer(cfg, hparams).init(params)
  nan_history = jnp.full((cfg.epochs,), jnp.nan)
  return _Carry(params, state, opt_state, best_params=params, best_state=state,
                best_val_loss=jnp.array(jnp.inf, jnp.float32), best_epoch=jnp.zeros((), jnp.int32),
                alive=jnp.array(True),
                history={k: nan_history for k in HISTORY_KEYS})


def _epoch_order(cfg, key, root_key, epoch, n_train, n_steps):
  """The (n_steps, batch_size) training indices of one member for one epoch."""
  data_key = jax.random.fold_in(key, _DATA)
  if cfg.data_order == "shared":
    data_key = jax.random.fold_in(root_key, _SHARED_STREAM)
  epoch_key = jax.random.fold_in(data_key, epoch)
  order = _permutation.permutation(epoch_key, n_train)
  if cfg.data_order == "bootstrap":
    # One resample per member for the whole run, reshuffled every epoch.
    resample = jax.random.randint(
        jax.random.fold_in(data_key, _BOOTSTRAP_STREAM), (n_train,), 0, n_train)
    order = resample[order]
  return order[:n_steps * cfg.batch_size].reshape(n_steps, cfg.batch_size)


def _train_step(cfg, member_state, batch, step):
  """One optimisation step of one member: the stepped ``(params, state, opt_state)`` and the
  minibatch loss and accuracy."""
  params, state, opt_state, key, hparams = member_state
  x, y = batch
  rng = None
  if cfg.model.stochastic:
    rng = jax.random.fold_in(jax.random.fold_in(key, _DROPOUT), step)

  def loss_fn(p):
    logits, new_state = nn.mlp_apply(cfg.model, p, state, x, train=True, rng=rng)
    data_loss = losses.log_loss_from_logits(logits, y)
    penalty = cfg.l2 * nn.l2_penalty(p) if cfg.l2 else 0.0
    return data_loss + penalty, (new_state, data_loss, losses.accuracy(logits, y))

  (_, (new_state, loss, acc)), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
  updates, new_opt_state = _make_optimizer(cfg, hparams).update(grads, opt_state, params)
  new_params = optax.apply_updates(params, updates)
  if cfg.max_norm is not None:
    new_params = nn.max_norm(new_params, cfg.max_norm)
  return (new_params, new_state, new_opt_state), loss, acc


def _all_finite(tree):
  """Whether every entry of every leaf of one member's ``tree`` is finite.

  One reduction over the concatenated leaves: XLA fuses the concatenation into it, and one
  kernel compiles in half the time of a reduction per leaf.
  """
  return jnp.all(jnp.isfinite(jnp.concatenate([jnp.ravel(leaf) for leaf in jax.tree.leaves(tree)])))


def _where_members(mask, new, old):
  """``new`` for the members where ``mask`` (E,) is True, else ``old``, leaf by leaf."""
  return jax.tree.map(
      lambda n, o: jnp.where(mask.reshape((-1,) + (1,) * (n.ndim - 1)), n, o), new, old)


def eval_loss(model_cfg, state, params, x, y):
  """Mean log-loss of one member on ``(x, y)`` in evaluation mode (BN population statistics).

  ``state`` comes before ``params`` so that ``functools.partial(eval_loss, model_cfg, state)``
  is the ``loss_fn(params, x, y)`` that ``jaxens.sharpness`` perturbs. ``loss_fn`` is a
  static argument there: build the partial inside your own jitted (e.g. vmapped over members)
  function, as the experiments do, or reuse one partial; a new partial per eager call compiles
  anew.
  """
  return losses.log_loss_from_logits(
      nn.mlp_apply(model_cfg, params, state, x, train=False)[0], y)


def evaluate(model_cfg, params, state, x, y, batch_size=1000):
  """Eval-mode ``(mean log-loss, accuracy)`` of one member on ``(x, y)``, ``batch_size`` rows
  at a time so memory stays bounded; ``jax.vmap`` it over stacked members."""
  logits = _logits_in_batches(model_cfg, params, state, x, batch_size)
  return losses.log_loss_from_logits(logits, y), losses.accuracy(logits, y)


def _logits_in_batches(model_cfg, params, state, x, batch_size):
  n = x.shape[0]
  n_batches = -(-n // batch_size)
  padded = jnp.pad(x, ((0, n_batches * batch_size - n), (0, 0)))
  logits = jax.lax.map(
      lambda xb: nn.mlp_apply(model_cfg, params, state, xb, train=False)[0],
      padded.reshape(n_batches, batch_size, -1))
  return logits.reshape(n_batches * batch_size, -1)[:n]


def _program_key(cfg):
  """What the compiled epoch depends on: the config less its seed and member count.

  Returns None when an optimizer kwarg is unhashable (an array, say); such a config is
  compiled afresh on every call.
  """
  key = (dataclasses.replace(cfg, seed=0, n_members=1, optimizer_kwargs=(), overrides=None),
         tuple(sorted(cfg.optimizer_kwargs.items())))
  try:
    hash(key)
  except TypeError:
    return None
  return key


def _cached_per_config(make):
  """Memoises ``make(cfg, *args)`` on ``_program_key(cfg)``, so repeated calls skip compilation."""
  @functools.lru_cache(maxsize=32)
  def cached(key, *args):
    return make(dataclasses.replace(key[0], optimizer_kwargs=dict(key[1])), *args)

  def get(cfg, *args):
    key = _program_key(cfg)
    return make(cfg, *args) if key is None else cached(key, *args)
  return get


def _compiler_options():
  """XLA:CPU options for the init and epoch programs; other backends keep their defaults.

  LLVM -O1 compiles them ~40% faster than the default -O2, to identical bits (no fast-math)
  and with equally fast epochs, since the matmuls are library calls. 512-bit vectors make the
  element-wise work (Adam, activations) ~14% faster per epoch on an AVX-512 CPU and fall back
  to the widest vectors a CPU has; they change float rounding, not the determinism of a run.
  (-O0 would compile the init program a third faster, but it stops contracting multiply-adds,
  so the initial weights would no longer equal a plain ``nn.mlp_init`` call's.)
  """
  if jax.default_backend() != "cpu":
    return None
  return {"xla_backend_optimization_level": 1, "xla_cpu_prefer_vector_width": 512}


@_cached_per_config
def _init_fn(cfg):
  """The jitted ``(seed, members, hparams) -> (root_key, keys, carry)`` of the whole ensemble.

  One program makes the root key (``PRNGKey(seed)`` for a uint32 seed), derives the member
  keys and builds the carry: as eager ops each would compile on its own.
  """
  def init(seed, members, hparams):
    root_key = jax.random.PRNGKey(seed)
    keys = jax.vmap(lambda i: jax.random.fold_in(root_key, i))(members)
    return root_key, keys, jax.vmap(lambda key, h: _init_member(cfg, key, h))(keys, hparams)
  return jax.jit(init, compiler_options=_compiler_options())


@_cached_per_config
def _epoch_fn(cfg, n_train, n_val, eval_batch_size, report_every):
  """The jitted program that trains every member for one epoch and evaluates it.

  Every ``report_every`` steps (if not None) it sends the members' losses to the active
  progress bar.
  """
  n_steps = n_train // cfg.batch_size

  def epoch_fn(carry, keys, hparams, root_key, epoch, x_train, y_train, x_val, y_val):
    # Divergence is handled per epoch, not per step, to keep selections off the hot loop: a
    # member whose loss turns non-finite at any step (non-finite parameters make the next
    # loss non-finite too) is rolled back to its state at the start of the epoch and frozen.
    orders = jax.vmap(
        lambda k: _epoch_order(cfg, k, root_key, epoch, n_train, n_steps))(keys)
    orders = jnp.swapaxes(orders, 0, 1)  # (n_steps, E, batch)

    def scan_body(inner, step_order):
      params, state, opt_state, finite, step = inner
      batch = (x_train[step_order], y_train[step_order])
      (params, state, opt_state), loss, acc = jax.vmap(
          lambda *a: _train_step(cfg, a[:5], a[5], step))(
              params, state, opt_state, keys, hparams, batch)
      finite = finite & jnp.isfinite(loss)
      if report_every is not None:
        jax.lax.cond(step % report_every == report_every - 1,
                     lambda: jax.debug.callback(_Progress.report, loss), lambda: None)
      return (params, state, opt_state, finite, step + 1), (loss, acc)

    first_step = epoch * n_steps
    init = (carry.params, carry.state, carry.opt_state, carry.alive, first_step)
    (params, state, opt_state, finite, _), (step_loss, step_acc) = jax.lax.scan(
        scan_body, init, orders)
    train_loss = jnp.mean(step_loss, axis=0)
    train_acc = jnp.mean(step_acc, axis=0)
    if n_val:
      val_loss, val_acc = jax.vmap(
          lambda p, s: evaluate(cfg.model, p, s, x_val, y_val, eval_batch_size))(params, state)
    else:
      val_loss = val_acc = jnp.full_like(train_loss, jnp.nan)
    alive = (finite & jax.vmap(_all_finite)((params, state, opt_state))
             & (jnp.isfinite(val_loss) | (n_val == 0)))
    params, state, opt_state = _where_members(
        alive, (params, state, opt_state), (carry.params, carry.state, carry.opt_state))
    if cfg.keep == "best_val_loss":
      improved = alive & (val_loss < carry.best_val_loss)
    else:
      improved = alive
    metrics = {"train_loss": train_loss, "train_accuracy": train_acc,
               "val_loss": val_loss, "val_accuracy": val_acc}
    history = {name: carry.history[name].at[:, epoch].set(metrics[name]) for name in HISTORY_KEYS}
    return _Carry(params, state, opt_state, _where_members(improved, params, carry.best_params),
                  _where_members(improved, state, carry.best_state),
                  jnp.where(improved, val_loss, carry.best_val_loss),
                  jnp.where(improved, epoch, carry.best_epoch), alive, history)

  # Donating the carry halves peak memory on accelerators; the CPU backend cannot donate.
  return jax.jit(epoch_fn, donate_argnums=(0,) if jax.default_backend() != "cpu" else (),
                 compiler_options=_compiler_options())


def _members_mesh(n_members):
  """A 1-D mesh over as many devices as evenly divide the member axis."""
  devices = jax.devices()
  n_devices = max(d for d in range(1, len(devices) + 1) if n_members % d == 0)
  return Mesh(np.asarray(devices[:n_devices]), (MEMBER_AXIS,))


def _shard_members(tree, mesh):
  """Places every leaf with its axis 0 split over the mesh's ``members`` axis."""
  sharding = NamedSharding(mesh, PartitionSpec(MEMBER_AXIS))
  return jax.device_put(tree, sharding)


def _replicate(tree, mesh):
  return jax.device_put(tree, NamedSharding(mesh, PartitionSpec()))


class _Progress:
  """A tqdm bar over an epoch's steps, fed from inside the jitted scan.

  The compiled program calls the class-level ``report``, which feeds whichever bar is active,
  so one compiled program serves every call of ``train``.
  """
  active = None

  def __init__(self, n_steps, every):
    self.every = every
    self.bar = tqdm.tqdm(total=n_steps, disable=None, leave=False, file=sys.stderr,
                         dynamic_ncols=True)
    _Progress.active = self

  @staticmethod
  def report(loss):
    if _Progress.active is not None:
      _Progress.active.update(loss)

  def start(self, epoch, epochs):
    self.bar.reset()
    self.bar.set_description(f"epoch {epoch + 1}/{epochs}")

  def update(self, loss):
    loss = np.asarray(loss)
    self.bar.update(self.every)
    self.bar.set_postfix(mean_loss=f"{np.nanmean(loss):.4f}", worst_loss=f"{np.nanmax(loss):.4f}")

  def close(self):
    self.bar.close()
    _Progress.active = None


def _config_fingerprint(cfg, members):
  description = json.dumps(
      {"config": repr(dataclasses.replace(cfg, overrides=None)),
       "overrides": {k: np.asarray(v).tolist() for k, v in (cfg.overrides or {}).items()},
       "members": list(map(int, members))}, sort_keys=True)
  return hashlib.sha256(description.encode()).hexdigest()


def train(cfg, data, *, workdir=None, resume=False, members=None, progress=True):
  """Trains the ensemble ``cfg`` on ``data`` and returns a ``TrainResult``.

  Args:
    cfg: a ``TrainConfig``.
    data: a ``jaxens.data.Splits`` ``(train, val, test)`` of ``(x, y)`` pairs; the test split
      is not used.
    workdir: if given, the whole training state is checkpointed there with orbax after every
      epoch (``<workdir>/checkpoints``).
    resume: continue from the last complete checkpoint in ``workdir``; the result is identical
      to an uninterrupted run.
    members: train only these member indices, with the same keys as in the full run.
    progress: show a tqdm bar (mean and worst member loss); it is silent when stderr is not a
      terminal.
  """
  _validate(cfg, data, members)
  if resume and workdir is None:
    raise ValueError("resume: needs a workdir to resume from")
  members = (np.arange(cfg.n_members, dtype=np.int32) if members is None
             else np.asarray(members, np.int32))
  n_members = len(members)
  mesh = _members_mesh(n_members)
  x_train, y_train = _replicate(tuple(data.train), mesh)
  x_val, y_val = _replicate(tuple(data.val), mesh)
  n_train, n_val = x_train.shape[0], x_val.shape[0]

  hparams = _shard_members(_member_hparams(cfg, members), mesh)
  root_key, keys, carry = _init_fn(cfg)(np.uint32(cfg.seed), _shard_members(members, mesh),
                                        hparams)
  keys, carry = _shard_members((keys, carry), mesh)

  checkpoints = _Checkpoints(workdir, _config_fingerprint(cfg, members)) if workdir else None
  start_epoch = 0
  if resume:
    start_epoch, carry = checkpoints.restore(carry)

  n_steps = n_train // cfg.batch_size
  report = _Progress(n_steps, every=max(1, n_steps // 100)) if progress else None
  if report is not None and report.bar.disable:
    report.close()
    report = None
  epoch_fn = _epoch_fn(cfg, n_train, n_val, _EVAL_BATCH_SIZE,
                       None if report is None else report.every)
  try:
    for epoch in range(start_epoch, cfg.epochs):
      if report is not None:
        report.start(epoch, cfg.epochs)
      carry = epoch_fn(carry, keys, hparams, root_key, epoch, x_train, y_train, x_val, y_val)
      if checkpoints is not None:
        checkpoints.save(epoch + 1, carry)
  finally:
    if report is not None:
      report.close()
    if checkpoints is not None:
      checkpoints.close()

  diverged = ~np.asarray(carry.alive)
  if diverged.any():
    print(f"jaxens: members {members[diverged].tolist()} diverged (non-finite loss); "
          "each was frozen at its state from the start of the epoch it diverged in.",
          file=sys.stderr)
  return TrainResult(
      params=carry.params, state=carry.state, best_params=carry.best_params,
      best_state=carry.best_state, history={k: np.asarray(v) for k, v in carry.history.items()},
      best_epoch=np.asarray(carry.best_epoch), diverged=diverged, members=members)


class _Checkpoints:
  """Orbax checkpoints of the whole ``_Carry``, one per completed epoch.

  Orbax writes each step into a temporary directory and renames it only once every file is
  written, so an interrupted save never appears as a complete checkpoint.
  """

  def __init__(self, workdir, fingerprint):
    import orbax.checkpoint as ocp  # Heavy import, needed only with a workdir.
    self._ocp = ocp
    self._fingerprint = fingerprint
    directory = os.path.join(os.path.abspath(workdir), "checkpoints")
    self._manager = ocp.CheckpointManager(
        directory, options=ocp.CheckpointManagerOptions(
            max_to_keep=2, enable_async_checkpointing=False, cleanup_tmp_directories=True),
        item_names=("carry", "meta"))

  def save(self, epoch, carry):
    self._manager.save(epoch, args=self._ocp.args.Composite(
        carry=self._ocp.args.StandardSave(carry),
        meta=self._ocp.args.JsonSave({"fingerprint": self._fingerprint, "epoch": epoch})))
    self._manager.wait_until_finished()

  def restore(self, like):
    """Returns ``(epochs_done, carry)`` from the latest checkpoint, or ``(0, like)``."""
    epoch = self._manager.latest_step()
    if epoch is None:
      return 0, like
    abstract = jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=a.sharding),
                            like)
    restored = self._manager.restore(epoch, args=self._ocp.args.Composite(
        carry=self._ocp.args.StandardRestore(abstract), meta=self._ocp.args.JsonRestore()))
    if restored.meta["fingerprint"] != self._fingerprint:
      raise ValueError(
          "resume: the checkpoint in workdir was written by a different TrainConfig or member "
          "set; use a fresh workdir or resume=False")
    return epoch, _Carry(**restored.carry) if isinstance(restored.carry, dict) else restored.carry

  def close(self):
    self._manager.close()


def predict(cfg, params, state, x, batch_size=1000):
  """Class probabilities of every member, ``(E, N, C)``, in evaluation mode.

  Args:
    cfg: a ``TrainConfig`` or ``MLPConfig``.
    params, state: stacked member parameters and BN statistics (leading axis E).
    x: ``(N, D)`` inputs.
    batch_size: examples per forward pass, to bound memory.
  """
  model_cfg = cfg.model if isinstance(cfg, TrainConfig) else cfg
  x = jnp.asarray(x)
  if x.ndim != 2 or x.shape[1] != model_cfg.sizes[0]:
    raise ValueError(f"x: expected shape (N, {model_cfg.sizes[0]}), got {tuple(x.shape)}")
  if batch_size < 1:
    raise ValueError(f"batch_size: expected a positive integer, got {batch_size}")
  return _predict(model_cfg, params, state, x, min(batch_size, max(1, x.shape[0])))


@functools.partial(jax.jit, static_argnums=(0, 4))
def _predict(model_cfg, params, state, x, batch_size):
  logits = jax.vmap(lambda p, s: _logits_in_batches(model_cfg, p, s, x, batch_size))(params, state)
  return jax.nn.softmax(logits, axis=-1)
