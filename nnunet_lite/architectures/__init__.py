"""Lightweight segmentation networks, one paper per module; 2D or 3D through ``conv_op``."""

from .aulunet import AULUNet
from .lgmsnet import LGMSNet
from .medlitenet import MedLiteNet

ARCHITECTURES = {"aulunet": AULUNet, "lgmsnet": LGMSNet, "medlitenet": MedLiteNet}

__all__ = ["ARCHITECTURES", "AULUNet", "LGMSNet", "MedLiteNet"]
