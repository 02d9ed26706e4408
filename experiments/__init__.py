"""Experiment scripts, one per published experiment; see each module's docstring.

Importing this package changes nothing. Each script's entry point (``_cli.main``) exposes one
XLA host device per CPU core before JAX starts, so that the members train on every core.
"""
