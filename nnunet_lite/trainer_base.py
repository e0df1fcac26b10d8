"""The one base class of all nnunet_lite trainers.

It changes nnU-Net's pipeline only where a lightweight network needs it: the network (built from the plans' patch
size and pooling strides), deep supervision (off: none of the papers' networks has auxiliary heads) and, for the
``_paper`` recipes, a few hyperparameters, loss weights and the optimizer. Training, validation, augmentation,
checkpointing and inference stay nnU-Net's own. This class is not re-exported by the discovery shim, so it cannot be
selected with ``-tr``.
"""

from __future__ import annotations

import os
from typing import Any, ClassVar

import torch
from dynamic_network_architectures.building_blocks.helper import convert_dim_to_conv_op
from nnunetv2.training.loss.deep_supervision import DeepSupervisionWrapper
from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer
from nnunetv2.utilities.plans_handling.plans_handler import ConfigurationManager, PlansManager
from torch import nn

from .architectures.contract import LiteNetwork

EPOCH_VARIANTS = (1, 5, 10, 50, 100, 250)


class nnUNetTrainerLite(nnUNetTrainer):
    """nnU-Net's recipe with a lightweight network swapped in.

    Class attributes configure subclasses (concrete trainers set nothing else):
        architecture: the network class (a :class:`~nnunet_lite.architectures.contract.LiteNetwork`); built as
            ``architecture(in, out, conv_op=..., **plan_kwargs, **arch_kwargs)`` where ``plan_kwargs`` come from
            ``architecture.kwargs_from_plans(patch_size, pool_op_kernel_sizes)``.
        arch_kwargs: extra constructor arguments (width variants).
        hyperparameters: nnU-Net trainer fields (``num_epochs``, ``initial_lr``, ...) set after nnU-Net's
            ``__init__``; merged along the class hierarchy, so an epoch variant of a ``_paper`` trainer keeps the rest.
        loss_weights: ``(ce_or_bce_weight, dice_weight)`` for nnU-Net's compound loss; None keeps nnU-Net's 1:1.
        memory_format_2d: the layout of 2D networks (channels-last unless measured slower for the network).
    """

    architecture: ClassVar[type[LiteNetwork]]
    arch_kwargs: ClassVar[dict[str, Any]] = {}
    hyperparameters: ClassVar[dict[str, Any]] = {}
    loss_weights: ClassVar[tuple[float, float] | None] = None
    # NHWC made nnU-Net's train_step of LGMSNet and MedLiteNet 1.26x and 1.28x faster on the CPU (interleaved in one
    # process, docs/training-speed.md); a network where it does not pay sets torch.contiguous_format
    memory_format_2d: ClassVar[torch.memory_format] = torch.channels_last

    def __init__(
        self,
        plans: dict,
        configuration: str,
        fold: int,
        dataset_json: dict,
        device: torch.device = torch.device("cuda"),  # noqa: B008  (nnU-Net's exact signature)
    ) -> None:
        super().__init__(plans, configuration, fold, dataset_json, device)
        self.enable_deep_supervision = False
        self.apply_hyperparameters()

    def apply_hyperparameters(self) -> None:
        """Sets the ``hyperparameters`` of every class in the hierarchy, base classes first."""
        for cls in reversed(type(self).__mro__):
            for name, value in cls.__dict__.get("hyperparameters", {}).items():
                if not hasattr(self, name):
                    raise AttributeError(f"{cls.__name__}.hyperparameters sets unknown trainer field {name!r}")
                setattr(self, name, value)

    @classmethod
    def build_network_architecture(
        cls,
        plans_manager: PlansManager,
        configuration_manager: ConfigurationManager,
        num_input_channels: int,
        num_output_channels: int,
        enable_deep_supervision: bool = True,
    ) -> LiteNetwork:
        """Builds ``cls.architecture`` for the plan's patch size and strides; fails early if it cannot process them.

        ``enable_deep_supervision`` is ignored: these networks have no auxiliary heads, so their module tree (and
        thus the checkpoint) is the same whether nnU-Net asks for deep supervision or not.
        """
        patch_size = [int(p) for p in configuration_manager.patch_size]
        pools = configuration_manager.pool_op_kernel_sizes
        conv_op = convert_dim_to_conv_op(len(patch_size))
        plan_kwargs = cls.architecture.kwargs_from_plans(patch_size, pools)
        network = cls.architecture(
            num_input_channels, num_output_channels, conv_op=conv_op, **plan_kwargs, **cls.arch_kwargs
        )
        try:
            network.check_input_size(patch_size)
        except ValueError as e:
            plans_values = f"patch_size={patch_size}, pool_op_kernel_sizes={[list(p) for p in pools]}"
            raise ValueError(
                f"{cls.__name__} cannot be built for plans {configuration_manager.data_identifier} ({plans_values}). "
                f"{e} Edit patch_size in the plans file or pick another configuration."
            ) from e
        if conv_op is nn.Conv2d:
            # Same numbers, other kernels: activations follow the weights' layout, and load_state_dict copies into the
            # existing parameters, so checkpoints load either way.
            network = network.to(memory_format=cls.memory_format_2d)
        return network

    def _do_i_compile(self) -> bool:
        """nnU-Net never compiles on the CPU; the lite trainers do when ``nnUNet_compile`` asks for it explicitly
        (opt-in: compiling costs minutes and pays off only over a whole training, see docs/training-speed.md)."""
        if self.device.type == "cpu":
            return os.environ.get("nnUNet_compile", "").lower() in ("true", "1", "t")
        return super()._do_i_compile()

    def set_deep_supervision_enabled(self, enabled: bool) -> None:
        """No-op: nnU-Net toggles deep supervision around validation, but these networks have none."""

    def _build_loss(self) -> nn.Module:
        loss = super()._build_loss()
        if self.loss_weights is not None:
            compound = loss.loss if isinstance(loss, DeepSupervisionWrapper) else loss
            compound.weight_ce, compound.weight_dice = self.loss_weights
        return loss


def epoch_variants(base: type[nnUNetTrainerLite], epochs: tuple[int, ...] = EPOCH_VARIANTS) -> dict[str, type]:
    """``base_1epoch``, ``base_5epochs``, ... named like nnU-Net's own ``nnUNetTrainer_Xepochs`` variants.

    Assign the result into the defining module's namespace (``globals().update(...)``) so that the classes have a
    real, importable dotted path (pickling) and the discovery shim can re-export them.
    """
    out = {}
    for n in epochs:
        name = f"{base.__name__}_{n}epoch{'s' if n > 1 else ''}"
        out[name] = type(
            name,
            (base,),
            {
                "__module__": base.__module__,
                "__qualname__": name,
                "__doc__": f"{base.__name__} trained for {n} epoch{'s' if n > 1 else ''}.",
                "hyperparameters": {"num_epochs": n},
            },
        )
    return out
