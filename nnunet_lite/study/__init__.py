"""Comparison studies at scale: one study file -> a Snakemake workflow of nnU-Net's own commands.

``model`` validates the study file, ``study`` resolves it into nnU-Net folders and trainings, ``Snakefile`` is the
workflow (package data), ``runner`` starts Snakemake, ``job`` wraps one training, ``status`` and ``report`` read the
results. Needs the ``study`` extra (Snakemake 9, Python >= 3.11) only to run; status and report work without it.
"""
