"""Lightweight segmentation networks, one paper per module; 2D or 3D through ``conv_op``."""

from .lgmsnet import LGMSNet

ARCHITECTURES = {"lgmsnet": LGMSNet}

__all__ = ["ARCHITECTURES", "LGMSNet"]
