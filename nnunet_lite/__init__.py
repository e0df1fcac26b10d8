"""nnunet_lite: lightweight segmentation networks as nnU-Net v2 trainers."""

__version__ = "0.1.0"
