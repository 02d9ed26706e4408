"""What ``train`` takes and returns."""

import dataclasses
from typing import Any, Callable, Mapping, NamedTuple, Optional, Sequence, Union

import numpy as np
import optax

from jaxens import models
from jaxens import nn

DATA_ORDERS = ("shared", "independent", "bootstrap")
KEEP = ("best_val_loss", "last")
#: Per-member overrides that the trainer itself applies; all others go to the optimizer, or
#: to the model when ``Model.hyperparams`` names them.
REGULARISER_OVERRIDES = ("l1", "l2", "max_norm")
DEFAULT_OPTIMIZER_KWARGS = {"learning_rate": 1e-3}
#: The automatic ``member_block`` on a CPU: parameter bytes of one block on one device. 1 MiB
#: holds 2 members of the E1 MLP (0.4 MB each), the fastest block measured at E=30 and E=100 on
#: a 2-core VM with 32 MiB of L3 (``benchmarks.ensemble_train --scaling-only --member-block``).
MEMBER_BLOCK_BYTES = 2**20
#: ... used only when every device holds at least this many blocks.
MIN_BLOCKS = 4


@dataclasses.dataclass(frozen=True)
class TrainConfig:
  """How to train an ensemble. The defaults are the published E1 pool.

  Attributes:
    model: the network of every member: an ``nn.MLPConfig``, a ``jaxens.models.Model``
      (``models.from_linen``, ``models.from_nnx``) or an ``(init, apply)`` pair.
    optimizer: a name from ``jaxens.optim`` (``"adam"``, ``"momentum"``, ...), any factory
      ``f(**optimizer_kwargs) -> optax.GradientTransformation``, or a ready
      ``optax.GradientTransformation`` (then ``optimizer_kwargs`` must stay None and no
      optimizer kwarg may vary per member).
    optimizer_kwargs: keyword arguments of the optimizer, shared by all members; None means
      ``{"learning_rate": 1e-3}`` for a name or a factory.
    loss: ``"cross_entropy"`` (integer labels; metrics loss and accuracy), ``"mse"`` (float
      targets (N,) or (N, k); metrics loss and RMSE) or any jittable
      ``loss(out, y) -> per-example loss`` (metric: the loss).
    n_members: ensemble size E.
    batch_size, epochs: minibatch size and number of passes; an epoch has
      ``len(train) // batch_size`` steps (the last partial batch is dropped).
    seed: in ``[0, 2**32)``; member ``i`` uses ``fold_in(PRNGKey(seed), i)``.
    data_order: ``"shared"`` (all members see the same batches), ``"independent"`` (each
      member its own shuffle) or ``"bootstrap"`` (each member a resample with replacement,
      drawn once and reshuffled every epoch).
    overrides: values that differ per member, each an array of length E: optimizer kwargs
      (``{"learning_rate": np.logspace(-4, -2, E)}``), ``"l1"``, ``"l2"``, ``"max_norm"``, and the
      model's ``hyperparams`` (``"dropout"`` for the built-in MLP). A sweep trains as one
      ensemble.
    keep: which parameters ``best_params`` holds: the epoch with the lowest validation loss
      (``"best_val_loss"``) or the last epoch (``"last"``).
    l1: weight of ``nn.l1_penalty`` (the sum of absolute kernel entries) added to the
      training loss.
    l2: weight of ``nn.l2_penalty`` (the sum of squared kernels) added to the training loss.
    max_norm: radius of the max-norm projection applied after every step, or None.
    probe: a jittable ``probe(params, state, batch, step) -> pytree`` run inside the compiled
      epoch for every member, every ``probe_every`` steps: at global steps ``0, k, 2k, ...``
      (0-based) it sees one member's parameters and model state after ``step`` updates, and the
      minibatch ``(x, y)`` that step ``step`` trains on. Its outputs are stacked into
      ``TrainResult.probes``. A probe that needs fixed data (a test subset) closes over it.
    probe_every: k, the steps between two probes (required with ``probe``).
    snapshot_every: store every member's parameters and state after every k-th update (an
      int k: after updates ``k, 2k, ...``) or after the listed updates (a sequence of
      counts in ``[1, total updates]``), inside the compiled epoch: snapshot ensembles
      (``schedules.snapshot_cosine``) and FGE (``schedules.fge_collection_steps``). They come
      back as ``TrainResult.snapshots``. Memory: E x K copies of the parameters and state,
      held on the devices with the members; ``train`` raises a ``ValueError`` before training
      if they would not fit in the memory that the device reports.
    swa_start, swa_every: stochastic weight averaging (Izmailov et al. 2018): after update
      ``swa_start`` and every ``swa_every`` updates after it, each member folds its
      parameters into a running average ``w_swa <- (n w_swa + w) / (n + 1)`` kept in the
      carry (one more copy of the parameters). ``TrainResult.swa_params`` holds it and
      ``swa_state`` the model state re-estimated for it over the training inputs
      (``models.population_state``: batch norm's statistics, as the paper recomputes them).
    member_block: how many members each device trains at once. A device's members train in
      blocks of this size, one block after another, each through the whole epoch, so that a
      block's parameters and optimizer state stay in the CPU's caches from step to step (the
      member axis is padded to fill the last block). None: on a CPU, the largest block whose
      parameters take at most ``MEMBER_BLOCK_BYTES`` when a device holds at least
      ``MIN_BLOCKS`` of them, else every member at once; on other backends, every member at
      once.
      It changes only the speed, not the results (beyond float rounding).
    xla_cpu_options: on a CPU, compile with LLVM -O1 and 512-bit vectors (faster to compile,
      faster element-wise work; float rounding differs from XLA's defaults). False keeps
      XLA's defaults. Other backends always keep theirs.
  """
  model: Any = nn.MLPConfig()
  optimizer: Union[str, Callable[..., optax.GradientTransformation],
                   optax.GradientTransformation] = "adam"
  optimizer_kwargs: Optional[Mapping[str, Any]] = None
  loss: Union[str, Callable[..., Any]] = "cross_entropy"
  n_members: int = 10
  batch_size: int = 32
  epochs: int = 3
  seed: int = 0
  data_order: str = "independent"
  overrides: Optional[Mapping[str, Any]] = None
  keep: str = "best_val_loss"
  l1: float = 0.0
  l2: float = 0.0
  max_norm: Optional[float] = None
  probe: Optional[Callable[..., Any]] = None
  probe_every: Optional[int] = None
  snapshot_every: Optional[Union[int, Sequence[int]]] = None
  swa_start: Optional[int] = None
  swa_every: Optional[int] = None
  member_block: Optional[int] = None
  xla_cpu_options: bool = True

  @property
  def network(self) -> models.Model:
    """``model`` as a ``jaxens.models.Model``."""
    return models.resolve(self.model)

  def n_probes(self, steps_per_epoch: int) -> int:
    """How many probes a run records: one at every ``probe_every``-th step,
    ``ceil(epochs * steps_per_epoch / probe_every)``."""
    if self.probe is None:
      return 0
    return -(-self.epochs * steps_per_epoch // self.probe_every)

  def snapshot_steps(self, steps_per_epoch: int) -> tuple:
    """The update counts after which snapshots are taken (empty without snapshots)."""
    total = self.epochs * steps_per_epoch
    if self.snapshot_every is None:
      return ()
    if isinstance(self.snapshot_every, int):
      return tuple(range(self.snapshot_every, total + 1, self.snapshot_every))
    return tuple(int(s) for s in self.snapshot_every)

  def swa_steps(self, steps_per_epoch: int) -> tuple:
    """The update counts after which the weight average takes the parameters in."""
    if self.swa_start is None:
      return ()
    return tuple(range(self.swa_start, self.epochs * steps_per_epoch + 1, self.swa_every))

  @property
  def resolved_optimizer_kwargs(self) -> Mapping[str, Any]:
    if self.optimizer_kwargs is None and not isinstance(self.optimizer,
                                                        optax.GradientTransformation):
      return DEFAULT_OPTIMIZER_KWARGS
    return self.optimizer_kwargs or {}


class TrainResult(NamedTuple):
  """What ``train`` returns. Every array has the member axis first.

  Attributes:
    params, state: the last epoch's parameters and model state (BN statistics) (E, ...).
    best_params, best_state: what ``cfg.keep`` selects (E, ...).
    history: per-epoch metrics, each (E, epochs): ``train_<m>`` (means over the epoch's
      minibatches) and ``val_<m>`` (evaluation mode, at the end of the epoch), where the
      metrics ``m`` follow the loss: ``loss, accuracy`` for cross-entropy, ``loss, rmse`` for
      MSE, ``loss`` for a callable.
    best_epoch: (E,) the epoch (0-based) that ``best_params`` comes from.
    diverged: (E,) True for a member whose loss, parameters or optimizer state became
      non-finite; such a member was rolled back to its state at the start of that epoch (its
      last finite end-of-epoch state), frozen there, and never replaced a checkpoint
      afterwards.
    members: (E,) the member indices, ``range(n_members)`` or ``members``.
    n_devices: how many devices trained the members (the member axis is padded to a
      multiple of it; padded members never appear in a result).
    probes: with ``cfg.probe``, its outputs with every leaf of shape (E, n_probes, ...), probe
      ``j`` taken at global step ``j * probe_every``; ``probe_steps`` lists those steps. Float
      leaves are NaN where a member diverged (from the epoch it diverged in), integer leaves 0.
      None without a probe.
    probe_steps: (n_probes,) the global step of each probe, or None.
    snapshots: with ``cfg.snapshot_every``, ``{"params": ..., "state": ...}`` with every leaf
      of shape (E, K, ...): snapshot ``j`` is taken after update ``snapshot_steps[j]``. A
      member that diverged has NaN snapshots from the epoch it diverged in. None without.
    snapshot_steps: (K,) the update counts of the snapshots, or None.
    swa_params: with ``cfg.swa_start``, each member's weight average (E, ...); None without.
    swa_state: the model state re-estimated for ``swa_params`` (E, ...).
    swa_count: (E,) how many parameter sets each average holds.
  """
  params: Any
  state: Any
  best_params: Any
  best_state: Any
  history: dict
  best_epoch: np.ndarray
  diverged: np.ndarray
  members: np.ndarray
  n_devices: int = 1
  probes: Any = None
  probe_steps: Optional[np.ndarray] = None
  snapshots: Any = None
  snapshot_steps: Optional[np.ndarray] = None
  swa_params: Any = None
  swa_state: Any = None
  swa_count: Optional[np.ndarray] = None
