"""Fair-comparison toolkit: ``profile``, ``compare``, ``plan-matched`` and ``zeroshot``.

Everything reads and writes nnU-Net's own folders (``nnUNet_preprocessed`` plans, ``nnUNet_results`` model folders
and ``summary.json`` files) and reuses nnU-Net's code for networks, prediction and evaluation, so any trainer
(nnU-Net's own included) is measured the same way. Modules are imported lazily by the commands.
"""
