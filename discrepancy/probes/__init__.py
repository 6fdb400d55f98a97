"""Emergent skill probes (docs/definitions.md §6 and §8): what a model learned at a phase transition.

- ``suite``: probe suite files (JSONL) — loading, validation, the shipped suites;
- ``metrics``: pass@k, calibration, rates per thousand tokens (what counts as correct: ``discrepancy.grading``);
- ``scoring``, ``evaluate``: batched teacher-forced log-probs and generation, per-item and per-skill scores;
- ``emergence``: genuine / mirage / latent classification of skill curves;
- ``symmetries``: dead and bypassed MLP units; ``attribution``, ``at_jump``: Captum attribution before vs after a jump;
- ``run``: ``run_probes(run_path, ...)`` over a run's LoRA snapshots (the ``discrepancy probe`` command);
- ``summary``: ``probe_summary(folder)``, what a report needs from the stored probe outputs, and whether they were
  graded under the current answer rules (file names and layouts: ``discrepancy.runfile.results``).

Nothing is imported here, so ``import discrepancy.probes`` stays cheap; import the submodule you need.
"""
