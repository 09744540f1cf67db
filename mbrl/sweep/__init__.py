"""Sweeps: many agents x envs/datasets x config grids x seeds as ordinary run directories, run on Ray Tune.

- :mod:`mbrl.sweep.spec`: the YAML spec, parsed into frozen dataclasses and expanded into :class:`Trial` s.
- :mod:`mbrl.sweep.runner`: ``mbrl sweep SPEC.yaml``: runs the trials on a local Ray instance or a cluster
  (:mod:`mbrl.sweep.trial`: one trial's subprocess and its tailed CSV; :mod:`mbrl.sweep.files`: the sweep
  directory's files and markers).
- :mod:`mbrl.sweep.report`: ``mbrl report SWEEP_DIR``: mean +- standard error and IQM over seeds with bootstrap
  confidence intervals (stratified across tasks), Markdown/CSV
  tables and learning curves.

Ray is an optional extra (``pip install 'mbrl-toolkit[sweep]'``); only the runner imports it, lazily.
"""

from mbrl.sweep.spec import SweepSpec, Trial, load_spec, parse_spec

__all__ = ["SweepSpec", "Trial", "load_spec", "parse_spec"]
