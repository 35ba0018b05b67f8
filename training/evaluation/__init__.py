"""Measuring a model, always against others in the same run.

- ``evaluate``: the evaluate stage (bits per byte, reply quality, sample replies) with ``metrics``,
  ``baselines`` (Kneser-Ney n-gram, TF-IDF retrieval) and ``semantic`` (embedding similarity)
- ``counterfactual``: the fairness check (same message, different names, genders or dialects)
- ``gate``: the promotion gate, a retrained candidate against the served model
- ``plots``: loss curves and evaluation charts
"""
