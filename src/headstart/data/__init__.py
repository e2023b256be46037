"""Reading, validating and splitting data, and preparing it the way a backbone expects."""

from headstart.data.loaders import labelled_loader
from headstart.data.images import IMAGE_EXTENSIONS, ImageFiles, ImageFolder, load_image
from headstart.data.samples import DataIssue, LabelledData
from headstart.data.splits import stratified_kfold, stratified_split
from headstart.data.text import TextTable
from headstart.data.transforms import TextCollate, image_transform

__all__ = [
    "IMAGE_EXTENSIONS",
    "DataIssue",
    "ImageFiles",
    "ImageFolder",
    "LabelledData",
    "TextCollate",
    "TextTable",
    "image_transform",
    "labelled_loader",
    "load_image",
    "stratified_kfold",
    "stratified_split",
]
