"""The training loop and what plugs into it."""

from .callbacks import Checkpointing, EarlyStopping, EpochSeeding, GradualUnfreezing, load_checkpoint
from .loop import AuxiliaryLoss, Callback, LoopSettings, Trainer, TrainingDiverged, TransferNet, seed_everything
from .param_groups import group_of_parameters, optimizer_groups, set_trainable, trainable_groups

__all__ = [
    "AuxiliaryLoss", "Callback", "Checkpointing", "EarlyStopping", "EpochSeeding", "GradualUnfreezing", "LoopSettings",
    "Trainer", "TrainingDiverged", "TransferNet", "group_of_parameters", "load_checkpoint",
    "optimizer_groups", "seed_everything", "set_trainable", "trainable_groups",
]
