"""jaxens.select: the options without a counterpart in the AutoML loops' transcriptions (tie
breakers and tolerance, use_best, subsamples, exact accuracy, predict), half-precision pools,
the true-class entry point, bad options, and a pool sharded over 4 CPU devices."""

import os
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxens import select
from test_select import random_pool


def test_use_best_keeps_the_first_lowest_step():
  # Without replacement the two good models are used up first, then the path gets worse.
  preds, y = random_pool(0, n_models=5, n_samples=40, n_classes=3)
  labels_onehot = np.eye(3)[y]
  preds[0] = 0.9 * labels_onehot + 0.1 / 3
  preds[3] = 0.8 * labels_onehot + 0.2 / 3
  sel = select.greedy(preds, y, replacement=False, max_iter=4, use_best=True)
  last = select.greedy(preds, y, replacement=False, max_iter=4)
  np.testing.assert_array_equal(sel.loss, last.loss)
  assert int(last.best_step) == 4 and int(sel.best_step) == int(np.argmin(sel.loss)) < 4
  np.testing.assert_array_equal(sel.final_weights, sel.weights[sel.best_step])
  np.testing.assert_array_equal(last.final_weights, last.weights[-1])
  assert set(np.flatnonzero(sel.final_weights).tolist()) <= {0, 3}


def test_random_tie_breaker_draws_among_copies_with_its_seed():
  preds, y = random_pool(1, n_models=4, n_samples=30)
  preds = np.concatenate([preds, preds])  # model m + 4 is a copy of model m: every step ties
  first = select.greedy(preds, y, max_iter=6)
  assert np.all(np.concatenate([first.init, first.order]) < 4)
  picks = []
  for seed in range(4):
    sel = select.greedy(preds, y, max_iter=6, tie_breaker="random", seed=seed)
    again = select.greedy(preds, y, max_iter=6, tie_breaker="random", seed=seed)
    np.testing.assert_array_equal(sel.order, again.order)
    picked = np.concatenate([sel.init, sel.order])
    np.testing.assert_array_equal(picked % 4, np.concatenate([first.init, first.order]))
    np.testing.assert_array_equal(sel.loss, first.loss)
    picks.append(picked)
  picks = np.concatenate(picks)
  assert np.any(picks < 4) and np.any(picks >= 4)


def test_fewest_models_prefers_a_used_model_over_a_lower_index():
  # Model 0 is a copy of model 2 with a larger penalty: 2 beats it outright in the first
  # step, and once the penalty's share (1e-2 / size) drops under the tolerance, 0 and 2 tie.
  preds, y = random_pool(2, n_models=3, n_samples=30)
  preds[0] = preds[2]
  options = dict(max_iter=30, penalty=np.array([1.0, 0.0, 0.0]), penalty_weight=1e-2,
                 tie_tolerance=1e-3)
  first = select.greedy(preds, y, **options)
  fewest = select.greedy(preds, y, tie_breaker="fewest_models", **options)
  assert int(first.order[0]) == int(fewest.order[0]) == 2
  assert 0 in np.asarray(first.order).tolist()
  assert 0 not in np.asarray(fewest.order).tolist()


def test_tie_tolerance_ties_a_model_with_its_shuffled_copy():
  # Model 1 holds model 0's true-class probabilities in another sample order: equal losses in
  # exact arithmetic, which float32 sums in different orders may tell apart.
  rng = np.random.default_rng(3)
  tcs = []
  for _ in range(8):
    column = rng.uniform(0.05, 1.0, size=1001).astype(np.float32)
    tcs.append(np.stack([column, rng.permutation(column), np.full(1001, 0.01, np.float32)], 1))
  exact = [int(select.greedy_from_true_class(tc, max_iter=0).init[0]) for tc in tcs]
  tolerant = [int(select.greedy_from_true_class(tc, max_iter=0, tie_tolerance=1e-6).init[0])
              for tc in tcs]
  assert 1 in exact  # rounding decides some of the exact ties
  assert tolerant == [0] * len(tcs)


def test_subsample_selects_on_the_documented_rows():
  preds, y = random_pool(4, n_models=5, n_samples=50)
  rows = np.sort(np.random.default_rng(7).choice(50, 20, replace=False))
  sub = select.greedy(preds, y, max_iter=5, subsample_size=20, seed=7)
  direct = select.greedy(preds[:, rows], y[rows], max_iter=5, seed=7)
  np.testing.assert_array_equal(sub.order, direct.order)
  np.testing.assert_array_equal(sub.loss, direct.loss)
  whole = select.greedy(preds, y, max_iter=5, subsample_size=50)
  np.testing.assert_array_equal(whole.loss, select.greedy(preds, y, max_iter=5).loss)


def test_accuracy_is_an_exact_fraction():
  # 659 of 1000 samples wrong: a float32 mean gives 0.65899998, the exact count 0.659.
  y = np.zeros(1000, np.int32)
  preds = np.zeros((1, 1000, 2))
  preds[0, :, 0] = np.where(np.arange(1000) < 341, 0.9, 0.1)
  preds[0, :, 1] = 1 - preds[0, :, 0]
  with jax.enable_x64(True):
    assert float(select.greedy(preds, y, loss="accuracy", max_iter=0).loss[0]) == 0.659
  assert select.greedy(preds.astype(np.float32), y, loss="accuracy",
                       max_iter=0).loss[0] == np.float32(0.659)


def test_predict_is_the_weighted_mean():
  preds, y = random_pool(5, n_models=4, n_samples=20)
  sel = select.greedy(preds, y, max_iter=5)
  new = random_pool(6, n_models=4, n_samples=9)[0]
  expected = np.einsum("m,mnc->nc", np.asarray(sel.final_weights, np.float64), new)
  np.testing.assert_allclose(sel.predict(new), expected, rtol=1e-6)
  assert sel.predict(new[..., 0]).shape == (9,)
  with pytest.raises(ValueError, match="^preds:"):
    sel.predict(new[:3])


def test_bfloat16_softmax_pool_is_accepted_and_scored_in_float32():
  logits = jax.random.normal(jax.random.key(0), (5, 64, 10))
  probs = jax.nn.softmax(logits).astype(jnp.bfloat16)
  worst = float(jnp.max(jnp.abs(jnp.sum(probs.astype(jnp.float32), -1) - 1)))
  assert select.PROB_SUM_TOL < worst <= select.prob_sum_tolerance(jnp.bfloat16)
  y = jax.random.randint(jax.random.key(1), (64,), 0, 10)
  half = select.greedy(probs, y, max_iter=6)
  # The float32 copy of the pool would fail float32's row-sum tolerance; its true class
  # needs none.
  true_class = jnp.take_along_axis(probs.astype(jnp.float32), y[None, :, None], axis=2)
  single = select.greedy_from_true_class(true_class[..., 0].T, max_iter=6)
  assert half.loss.dtype == jnp.float32
  np.testing.assert_array_equal(half.order, single.order)
  np.testing.assert_array_equal(half.loss, single.loss)


def test_float16_zero_probability_is_clipped_in_float32():
  # Model 0 is the best but gives one sample's true class probability 0: the 1e-8 clip,
  # which underflows in float16, must still hold in float32.
  preds, y = random_pool(8, n_models=4, n_samples=32, n_classes=2)
  preds[0] = 0.95 * np.eye(2)[y] + 0.025
  preds[0, 0] = np.eye(2)[1 - y[0]]
  half = select.greedy(preds.astype(np.float16), y, max_iter=3)
  single = select.greedy(preds.astype(np.float16).astype(np.float32), y, max_iter=3)
  assert int(half.init[0]) == 0 and np.all(np.isfinite(half.loss))
  np.testing.assert_array_equal(half.loss, single.loss)


def test_true_class_matrix_equals_the_full_pool():
  preds, y = random_pool(9, n_models=6, n_samples=50, n_classes=4)
  true_class = np.take_along_axis(preds, y[None, :, None], axis=2)[..., 0].T
  options = dict(max_iter=7, init_size=2, sample_weight=np.linspace(0, 1, 50))
  full = select.greedy(preds, y, **options)
  direct = select.greedy_from_true_class(true_class, **options)
  for field in ("weights", "order", "init", "final_weights"):
    np.testing.assert_array_equal(getattr(direct, field), getattr(full, field))
  np.testing.assert_allclose(direct.loss, full.loss, rtol=1e-6)


GOOD_PROBS, GOOD_LABELS = random_pool(0, n_models=3, n_samples=5, n_classes=3)


@pytest.mark.parametrize("kwargs, argument", [
    (dict(tie_breaker="last"), "tie_breaker"),
    (dict(tie_tolerance=-1e-6), "tie_tolerance"),
    (dict(use_best=1), "use_best"),
    (dict(sample_weight=np.ones(4)), "sample_weight"),
    (dict(sample_weight=-np.ones(5)), "sample_weight"),
    (dict(sample_weight=np.zeros(5)), "sample_weight"),
    (dict(loss=lambda p, t: jnp.mean(p), sample_weight=np.ones(5)), "sample_weight"),
    (dict(subsample_size=0), "subsample_size"),
    (dict(clip=0.0), "clip"),
    (dict(clip=0.5), "clip"),
    (dict(renormalise=True, loss="accuracy"), "renormalise"),
    (dict(renormalise=True, preds=GOOD_PROBS[..., 0]), "renormalise"),
    (dict(loss="pinball", quantile=1.0, preds=GOOD_PROBS[..., 0], y=np.zeros(5)), "quantile"),
    (dict(loss="mae", preds=GOOD_PROBS, y=np.zeros(5)), "y"),
])
def test_bad_options_raise_value_error_naming_the_argument(kwargs, argument):
  args = dict(preds=GOOD_PROBS, y=GOOD_LABELS) | kwargs
  with pytest.raises(ValueError, match=f"^{argument}:"):
    select.greedy(args.pop("preds"), args.pop("y"), **args)


@pytest.mark.parametrize("true_class, argument", [
    (np.full((5, 3), 1.5), "true_class"),
    (np.ones(5), "true_class"),
])
def test_true_class_bad_input(true_class, argument):
  with pytest.raises(ValueError, match=f"^{argument}:"):
    select.greedy_from_true_class(true_class)


_SHARDED = textwrap.dedent("""
    import jax
    jax.config.update("jax_num_cpu_devices", 4)
    import numpy as np
    from jax.sharding import Mesh, NamedSharding, PartitionSpec as P
    from jaxens import select
    rng = np.random.default_rng(0)
    tc = rng.uniform(0.01, 1.0, size=(64, 8)).astype(np.float32)
    logits = rng.normal(size=(8, 64, 3)).astype(np.float32)
    probs = np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)
    y = rng.integers(0, 3, size=64)
    mesh = Mesh(np.array(jax.devices()), ("d",))
    runs = [
        (lambda a: select.greedy_from_true_class(a, max_iter=6), tc, P(None, "d")),
        (lambda a: select.greedy_from_true_class(a, max_iter=6), tc, P("d", None)),
        (lambda a: select.greedy(a, y, loss="accuracy", max_iter=6), probs, P("d")),
    ]
    for run, pool, spec in runs:
      sharded = jax.device_put(pool, NamedSharding(mesh, spec))
      assert len(sharded.sharding.device_set) == 4
      one, four = run(jax.device_put(pool, jax.devices()[0])), run(sharded)
      for field in ("weights", "order", "init", "final_weights", "best_step"):
        np.testing.assert_array_equal(getattr(one, field), getattr(four, field))
      # Sums over samples split across devices round in another order.
      np.testing.assert_allclose(one.loss, four.loss, rtol=1e-6)
    # The member-split pool is never gathered: no all-gather of a matrix in the program.
    pool = jax.device_put(tc, NamedSharding(mesh, P(None, "d")))
    cfg = select._Static("log_loss", 1, True, 6, "first", False, False, 4, True,
                         select._members_are_split(pool, 1))
    scalars = select._Scalars(*(np.float32(v) for v in (0.0, 1e-8, 0.0, 0.5)))
    hlo = select._greedy_jit.lower(pool, None, np.zeros(8, np.float32), None, scalars,
                                   jax.random.key(0), cfg=cfg, use_best=False).compile()
    gathers = [line for line in hlo.as_text().splitlines() if "all-gather(" in line
               and "," in line.split("all-gather(")[0].split("[")[-1]]
    assert cfg.sharded_members and not gathers, gathers
    print("ok")
""")


def test_pool_sharded_over_four_devices_selects_as_one():
  env = dict(os.environ, JAX_PLATFORMS="cpu")
  env.pop("XLA_FLAGS", None)
  done = subprocess.run([sys.executable, "-c", _SHARDED], env=env, capture_output=True,
                        text=True, timeout=300, check=False)
  assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr[-3000:]


def test_streamed_true_class_matrix_selects_like_the_full_pool(tmp_path):
  from jaxens import ensemble, nn
  cfg = nn.MLPConfig(sizes=(4, 8, 3))
  params, state = jax.vmap(lambda k: nn.mlp_init(k, cfg))(
      jax.random.split(jax.random.key(0), 4))
  x = jax.random.normal(jax.random.key(1), (40, 4))
  y = np.asarray(jax.random.randint(jax.random.key(2), (40,), 0, 3))
  probs = ensemble.predict(cfg, params, state, x)
  path = str(tmp_path / "tc.npy")
  streamed = ensemble.predict_true_class(cfg, params, state, x, y, member_chunk=2, out=path)
  assert isinstance(streamed, np.memmap)
  expected = np.take_along_axis(np.asarray(probs), y[None, :, None], axis=2)[..., 0].T
  np.testing.assert_array_equal(np.load(path, mmap_mode="r"), expected)
  from_file = select.greedy_from_true_class(np.load(path, mmap_mode="r"), max_iter=5)
  in_memory = select.greedy_from_true_class(expected, max_iter=5)
  np.testing.assert_array_equal(from_file.order, in_memory.order)
  np.testing.assert_array_equal(from_file.loss, in_memory.loss)


def test_chunked_selection_on_a_memory_map_equals_in_memory(tmp_path):
  rng = np.random.default_rng(10)
  true_class = rng.uniform(0.01, 1.0, size=(203, 6)).astype(np.float32)
  path = tmp_path / "tc.npy"
  np.save(path, true_class)
  options = dict(max_iter=8, init_size=2, penalty=rng.uniform(size=6), penalty_weight=0.05,
                 use_best=True, tie_breaker="fewest_models", tie_tolerance=1e-7)
  in_memory = select.greedy_from_true_class(true_class, **options)
  mapped = np.load(path, mmap_mode="r")
  chunked = select.greedy_from_true_class(mapped, chunk_size=50, **options)  # 4 + a tail of 3
  for field in ("weights", "order", "init", "best_step", "final_weights"):
    np.testing.assert_array_equal(getattr(chunked, field), getattr(in_memory, field))
  np.testing.assert_allclose(chunked.loss, in_memory.loss, rtol=1e-6)
  # A first pick by the step's rule (init_size=1), with seeded random ties.
  options.update(init_size=1, tie_breaker="random", seed=3)
  in_memory = select.greedy_from_true_class(true_class, **options)
  chunked = select.greedy_from_true_class(mapped, chunk_size=50, **options)
  np.testing.assert_array_equal(chunked.weights, in_memory.weights)
  np.testing.assert_allclose(chunked.loss, in_memory.loss, rtol=1e-6)
  with pytest.raises(ValueError, match="^chunk_size:"):
    select.greedy_from_true_class(mapped, chunk_size=50, n_bags=2)


@pytest.mark.parametrize("confident", [False, True])
def test_margin_skip_gives_the_same_path(confident):
  # A confident pool decides most samples within a few steps, so the step reads only the
  # undecided ones; a random pool keeps many undecided and takes the full read.
  preds, y = random_pool(11, n_models=6, n_samples=400, n_classes=4)
  if confident:
    logits = np.log(preds) + 4 * np.eye(4)[y]
    preds = np.exp(logits) / np.sum(np.exp(logits), axis=-1, keepdims=True)
  plain = select.greedy(preds, y, loss="accuracy", max_iter=12)
  skipping = select.greedy(preds, y, loss="accuracy", max_iter=12, margin_skip=True)
  for field in ("weights", "loss", "order", "init"):
    np.testing.assert_array_equal(getattr(skipping, field), getattr(plain, field))
  with pytest.raises(ValueError, match="^margin_skip:"):
    select.greedy(preds, y, margin_skip=True)


_PEAK_MEMORY = textwrap.dedent("""
    import sys
    import jax
    import numpy as np
    from jaxens import select

    def status(field):
      with open("/proc/self/status") as lines:
        return next(int(line.split()[1]) * 1024 for line in lines if line.startswith(field))

    path, small, rows = sys.argv[1], sys.argv[2], int(sys.argv[3])
    # Baseline: the interpreter, jax, and the compiled programs (the same chunk shape).
    jax.block_until_ready(select.greedy_from_true_class(
        np.load(small, mmap_mode="r"), max_iter=3, chunk_size=rows).weights)
    with open("/proc/self/clear_refs", "w") as refs:
      refs.write("5")  # resets the peak to the current resident size
    baseline = status("VmRSS")
    matrix = np.load(path, mmap_mode="r")
    jax.block_until_ready(select.greedy_from_true_class(
        matrix, max_iter=3, chunk_size=rows).weights)
    print(status("VmHWM") - baseline, matrix.nbytes, rows * matrix.shape[1] * 4)
""")


@pytest.mark.skipif(not os.path.exists("/proc/self/clear_refs"), reason="Linux /proc only")
def test_chunked_selection_peak_memory_is_the_matrix_and_two_chunks(tmp_path):
  # The matrix itself counts once its pages are read (they are file-backed resident pages);
  # beyond it the issue allows 2 chunks. The old pure_callback route passed too; a host copy
  # of the whole matrix (as jnp.asarray made) would add 1x the matrix and fail.
  rows, n_models = 4000, 512
  rng = np.random.default_rng(0)
  path, small = str(tmp_path / "tc.npy"), str(tmp_path / "small.npy")
  np.save(path, rng.uniform(0.01, 1.0, (10 * rows, n_models)).astype(np.float32))
  np.save(small, rng.uniform(0.01, 1.0, (2 * rows, n_models)).astype(np.float32))
  env = dict(os.environ, JAX_PLATFORMS="cpu")
  done = subprocess.run([sys.executable, "-c", _PEAK_MEMORY, path, small, str(rows)],
                        env=env, capture_output=True, text=True, timeout=120, check=False)
  assert done.returncode == 0, done.stderr[-3000:]
  extra, matrix, chunk = (int(v) for v in done.stdout.split())
  assert extra <= matrix + 2 * chunk, (
      f"peak {extra / 2**20:.1f} MiB above the baseline; allowed: the matrix "
      f"{matrix / 2**20:.1f} MiB + 2 chunks of {chunk / 2**20:.1f} MiB")
