"""The applications behind the ``lipxai`` command: a run directory in, JSON / Markdown / PNG out.

- :mod:`~lipxai.apps.names`: the method and metric names and the commands' defaults (no JAX);
- :mod:`~lipxai.apps.certify`, :mod:`~lipxai.apps.explain`, :mod:`~lipxai.apps.evaluate`:
  functions of ``(fn, x, labels)`` returning JSON-ready dicts (and the run-level wrappers
  that read a split of a :class:`lipxai.train.rundir.Run`);
- :mod:`~lipxai.apps.quickstart`: train, certify, explain, evaluate and report, computing
  each thing once;
- :mod:`~lipxai.apps.reproduce`: the papers' experiments (``lipxai reproduce NAME``);
- :mod:`~lipxai.apps.report`: every table, JSON file and figure (the only user of matplotlib).
"""
