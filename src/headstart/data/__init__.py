"""Reading, validating and splitting data, and preparing it the way a backbone expects.

The names below are imported on first use (PEP 562), so ``headstart.data.reading`` (the
``ReadOptions`` every command's flags are built from) loads without torch, timm or scikit-learn.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..lazy import lazy_exports

_EXPORTS = {
    "ImageSamples": "loaders", "call_module": "loaders", "collate_for": "loaders", "inference_loader": "loaders",
    "labelled_loader": "loaders", "set_loader_epoch": "loaders", "to_device": "loaders",
    "IMAGE_EXTENSIONS": "images", "ImageFiles": "images", "ImageFolder": "images", "ImageTable": "images",
    "load_image": "images", "median_shorter_side": "images",
    "DEFAULT_MAX_PIXELS": "samples", "DataIssue": "samples", "LabelledData": "samples",
    "few_shot_indices": "splits", "stratified_kfold": "splits", "stratified_sample": "splits",
    "stratified_split": "splits",
    "TextTable": "text",
    "ImageCollate": "transforms", "TextCollate": "transforms", "image_transform": "transforms",
}

__all__ = [
    "DEFAULT_MAX_PIXELS",
    "IMAGE_EXTENSIONS",
    "DataIssue",
    "ImageCollate",
    "ImageFiles",
    "ImageFolder",
    "ImageTable",
    "ImageSamples",
    "LabelledData",
    "TextCollate",
    "TextTable",
    "call_module",
    "collate_for",
    "few_shot_indices",
    "image_transform",
    "inference_loader",
    "labelled_loader",
    "load_image",
    "median_shorter_side",
    "set_loader_epoch",
    "stratified_kfold",
    "stratified_sample",
    "stratified_split",
    "to_device",
]


__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)


if TYPE_CHECKING:  # for type checkers and IDEs: the same names, imported eagerly
    from headstart.data.images import (IMAGE_EXTENSIONS, ImageFiles, ImageFolder, ImageTable, load_image,
                                        median_shorter_side)
    from headstart.data.loaders import (ImageSamples, call_module, collate_for, inference_loader, labelled_loader,
                                         set_loader_epoch, to_device)
    from headstart.data.samples import DEFAULT_MAX_PIXELS, DataIssue, LabelledData
    from headstart.data.splits import few_shot_indices, stratified_kfold, stratified_sample, stratified_split
    from headstart.data.text import TextTable
    from headstart.data.transforms import ImageCollate, TextCollate, image_transform
