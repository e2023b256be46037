"""The training loop and what plugs into it."""

from .callbacks import (L2SP, Checkpointing, EarlyStopping, EpochSeeding, GradualUnfreezing, TimeLimit,
                        load_checkpoint, state_keys)
from .loop import (Callback, LoopSettings, Trainer, TrainingDiverged, TrainingStep, TransferNet, private_rng,
                   seed_everything)
from .param_groups import group_of_parameters, optimizer_groups, set_trainable, trainable_groups

__all__ = [
    "Callback", "Checkpointing", "EarlyStopping", "EpochSeeding", "GradualUnfreezing", "L2SP", "LoopSettings",
    "TimeLimit",
    "Trainer", "TrainingDiverged", "TrainingStep", "TransferNet", "group_of_parameters", "load_checkpoint",
    "optimizer_groups", "private_rng", "seed_everything", "set_trainable", "state_keys", "trainable_groups",
]
