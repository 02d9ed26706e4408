"""The ``absl.app`` entry point that every experiment's ``__main__`` calls.

    python -m experiments.<name> [--config=configs/<name>.py[:<preset>]]
        [--config.<field>=<value> ...] [--workdir=DIR]

The config file's ``get_config(preset)`` returns the experiment's config dataclass, which
``ml_collections.config_flags`` loads; every ``--config.<field>`` override is parsed with
the type of its annotation, so ``--config.epochs=abc`` fails at once, naming the field.
The dataclass is then rebuilt, which reruns its ``__post_init__`` checks on the overridden
values. ``-h`` lists every field with its type and default.
"""

import dataclasses
import os
import sys
import typing

from absl import app
from absl import flags
from absl import logging
from ml_collections import config_flags

from experiments import reporting

CONFIGS_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                           "configs")


def config_file(name):
  """The path of ``configs/<name>.py``."""
  return os.path.join(CONFIGS_DIR, f"{name}.py")


def preset(presets, name):
  """``presets[name]()``: the config of one preset, or a ``ValueError`` listing them."""
  if name not in presets:
    raise ValueError(f"preset: expected one of {tuple(presets)}, got {name!r}")
  return presets[name]()


def field_paths(config_type):
  """``[(name, type, default)]`` of every field of a (flat) config dataclass."""
  hints = typing.get_type_hints(config_type)
  return [(field.name, hints[field.name],
           field.default_factory() if field.default_factory is not dataclasses.MISSING
           else field.default) for field in dataclasses.fields(config_type)]


def _type_name(kind):
  return kind.__name__ if isinstance(kind, type) else str(kind).replace("typing.", "")


def _config_help(name, config_type):
  fields = "\n".join(f"  {path}: {_type_name(kind)} = {default!r}"
                     for path, kind, default in field_paths(config_type))
  return (f"config file[:preset] whose get_config(preset) returns a {config_type.__name__} "
          f"(default configs/{name}.py). Override any field with "
          f"--config.<field>=<value>:\n{fields}")


def _check_override_names(argv, config_type):
  """Exits with a usage message naming an override that is not a field of the config."""
  known = {path for path, _, _ in field_paths(config_type)}
  for arg in argv[1:]:
    if arg.startswith("--config."):
      path = arg[len("--config."):].partition("=")[0]
      if path not in known:
        sys.exit(f"--config.{path}: {config_type.__name__} has no field {path!r}; "
                 f"fields are {sorted(known)} (-h lists them with their types)")


def main(name, config_type, run, print_summary):
  """Defines ``--config`` and ``--workdir`` and runs ``run(config, workdir)`` under
  ``absl.app``; ``print_summary(summary)`` prints the experiment's tables."""
  _check_override_names(sys.argv, config_type)  # before the flags parse the overrides
  config_flag = config_flags.DEFINE_config_file(
      "config", config_file(name), _config_help(name, config_type), lock_config=False)
  workdir_flag = flags.DEFINE_string("workdir", f"runs/{name}", "where the artefacts go")
  for flag_name in ("config", "workdir"):  # listed by --help, which shows the main module's
    flags.FLAGS.register_key_flag_for_module(sys.argv[0], flags.FLAGS[flag_name])
  argv = ["--help" if arg == "-h" else arg for arg in sys.argv]

  def run_main(argv):
    if len(argv) > 1:
      raise app.UsageError(f"unexpected arguments {argv[1:]}; fields are set with "
                           "--config.<field>=<value>")
    try:
      config = dataclasses.replace(config_flag.value)  # Reruns the checks on the overrides.
    except ValueError as error:
      raise app.UsageError(f"--config: {error}") from error
    use_every_core()
    logging.info("config %s; workdir %s", config, workdir_flag.value)
    with reporting.Stopwatch() as wall:
      summary = run(config, workdir_flag.value)
    print_summary(summary)
    logging.info("wall time %.1f s; artefacts in %s", wall.seconds, workdir_flag.value)

  app.run(run_main, argv=argv)


def use_every_core():
  """One XLA host device per CPU core, so that jaxens shards the members over every core.

  On a CPU-only machine XLA shows a single device that runs one program at a time, so a
  second core would sit idle. Call it before JAX computes anything; a device count already
  chosen (``jax_num_cpu_devices`` or ``--xla_force_host_platform_device_count``) is kept.
  """
  import jax  # pylint: disable=g-import-not-at-top
  if ("xla_force_host_platform_device_count" in os.environ.get("XLA_FLAGS", "")
      or jax.config.jax_num_cpu_devices > 0):
    return
  cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
  try:
    jax.config.update("jax_num_cpu_devices", cores)
  except RuntimeError:  # The backend is already running: keep its devices.
    pass
