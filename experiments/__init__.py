"""Experiment scripts, one per published experiment; see each module's docstring.

Each script is ``python -m experiments.<name> --config=configs/<name>.py[:preset]``: an
``absl.app`` entry point (``app.main``) around an importable ``run(config, workdir)``.
Importing this package changes nothing; the entry point exposes one XLA host device per CPU
core before JAX starts, so that the members train on every core.
"""
