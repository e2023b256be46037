"""DataLoaders of labelled samples, prepared the way a backbone's contract asks."""

from __future__ import annotations

from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset

from ..contract import InputContract
from .images import load_image
from .samples import LabelledData
from .transforms import TextCollate, image_transform

__all__ = ["labelled_loader"]


class _LabelledImages(Dataset):
    def __init__(self, paths: list[str], labels: list[int], transform) -> None:
        self.paths, self.labels, self.transform = paths, labels, transform

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int):
        return self.transform(load_image(self.paths[index])), self.labels[index]


def labelled_loader(data: LabelledData, contract: InputContract, *, tokenizer: Any = None, train: bool,
                    batch_size: int, num_workers: int = 0, randaugment: str | None = None,
                    min_crop: float = 0.08) -> DataLoader:
    """Batches of ``(inputs, labels)``: augmented and shuffled for training, plain otherwise.

    Unlabelled data (a domain-adaptation target) gives label -1 for every sample.

    Shuffling and augmentation draw from torch's global generator, so seeding it at the
    start of an epoch fixes that epoch's batches (resume relies on this).
    """
    labels = data.y.tolist() if data.labels is not None else [-1] * len(data)
    if contract.modality == "image":
        dataset = _LabelledImages(data.items, labels, image_transform(contract, train, randaugment, min_crop))
        return DataLoader(dataset, batch_size=batch_size, shuffle=train, num_workers=num_workers,
                          drop_last=train and len(dataset) > batch_size,
                          persistent_workers=False, prefetch_factor=2 if num_workers else None)
    pairs = list(zip(data.items, labels))
    return DataLoader(pairs, batch_size=batch_size, shuffle=train, collate_fn=TextCollate(tokenizer, contract.max_length or 512),
                      drop_last=train and len(pairs) > batch_size)
