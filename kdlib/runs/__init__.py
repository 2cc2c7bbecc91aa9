"""Runs: from a setup to trained models. ``spec`` (run specs and the plan, no torch), ``run`` (training one run or
a pack), ``workspace`` (where and how a command works), ``setup`` (every run of a setup, through a launcher),
``autopack`` (the pack size), ``suites``, ``launchers``, ``export`` and ``cost``."""
