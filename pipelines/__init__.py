"""End-to-end pipelines: the synthetic demo corpus, the ``make demo`` driver, ASVspoof recipes.

- :mod:`pipelines.demo_corpus`: a small, deterministic corpus in the ASVspoof 2019 LA layout
  (``python -m pipelines.demo_corpus --out DIR --seed S``).
- :mod:`pipelines.demo`: what ``make demo`` runs (corpus -> features -> train -> score -> EER).
- ``asvspoof2019_la.sh``, ``asvspoof2021_la_df.sh``, ``asvspoof2017.sh``: recipes for the
  real corpora (shell scripts calling the ``featstore`` and ``trainer`` commands).
"""
