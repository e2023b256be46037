"""Reading, validating and splitting data, and preparing it the way a backbone expects."""

from headstart.data.loaders import (ImageSamples, call_module, collate_for, inference_loader, labelled_loader,
                                     set_loader_epoch, to_device)
from headstart.data.images import IMAGE_EXTENSIONS, ImageFiles, ImageFolder, load_image
from headstart.data.samples import DEFAULT_MAX_PIXELS, DataIssue, LabelledData
from headstart.data.splits import few_shot_indices, stratified_kfold, stratified_split
from headstart.data.text import TextTable
from headstart.data.transforms import ImageCollate, TextCollate, image_transform

__all__ = [
    "DEFAULT_MAX_PIXELS",
    "IMAGE_EXTENSIONS",
    "DataIssue",
    "ImageCollate",
    "ImageFiles",
    "ImageFolder",
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
    "set_loader_epoch",
    "stratified_kfold",
    "stratified_split",
    "to_device",
]
