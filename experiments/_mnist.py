"""The MNIST settings that the MNIST experiments share, and the splits they describe."""

import dataclasses

from jaxens import data as data_lib


@dataclasses.dataclass(frozen=True)
class MnistData:
  """Where MNIST comes from and how it is split (``jaxens.data.load_mnist``)."""
  data_source: str = "auto"
  data_dir: str = None
  val_fraction: float = 0.25
  data_seed: int = 0
  # Subsets for quick runs (None: the whole split).
  n_train: int = None
  n_val: int = None
  n_test: int = None


def load(config: MnistData) -> data_lib.Splits:
  splits = data_lib.load_mnist(config.data_source, config.val_fraction, config.data_seed,
                               config.data_dir)
  return data_lib.subset(splits, config.n_train, config.n_val, config.n_test)
