"""Subcommands of the ``nnunet_lite`` command line."""
