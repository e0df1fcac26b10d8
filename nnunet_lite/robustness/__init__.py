"""Robustness under acquisition artefacts: corruption suites, corrupted test sets, their predictions and the report."""
