"""The engine: trains and evaluates models. ``train`` (the loop), ``together`` (packs), ``objectives``, ``evaluate``,
``losses``, ``recipe``, ``device``, ``probes``."""
