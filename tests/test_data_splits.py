"""Stratified splits and the LabelledData operations built on them."""

from __future__ import annotations

import numpy as np
import pytest

from headstart.data import LabelledData, stratified_split
from headstart.errors import ConfigError, DataError

Y = np.repeat([0, 1, 2], [50, 30, 20])


def _data(labels: list[str]) -> LabelledData:
    return LabelledData("text", [f"t{i}" for i in range(len(labels))], labels,
                        locations=[f"r.csv:{i + 2}" for i in range(len(labels))], source="r.csv")


def test_split_keeps_class_proportions():
    train, test = stratified_split(Y, [0.2], seed=0)
    assert np.bincount(Y[test]).tolist() == [10, 6, 4]
    assert np.bincount(Y[train]).tolist() == [40, 24, 16]


def test_parts_are_disjoint_cover_everything_and_are_sorted():
    parts = stratified_split(Y, [0.1, 0.2], seed=1)
    assert [len(p) for p in parts] == [70, 10, 20]
    joined = np.concatenate(parts)
    assert sorted(joined.tolist()) == list(range(len(Y)))
    assert all((np.diff(p) > 0).all() for p in parts)


def test_split_is_deterministic_for_a_seed():
    first = stratified_split(Y, [0.2], seed=7)
    again = stratified_split(Y, [0.2], seed=7)
    other = stratified_split(Y, [0.2], seed=8)
    assert all((a == b).all() for a, b in zip(first, again))
    assert not (first[1] == other[1]).all()


def test_too_small_class_is_named_in_the_error():
    y = np.array([0] * 10 + [1] * 2)
    with pytest.raises(DataError) as error:
        stratified_split(y, [0.1, 0.2], seed=0, class_names=["common", "rare"], noun="images")
    assert str(error.value) == ("class 'rare' has 2 samples: too few for a stratified split "
                                "into train/val/test; add images or lower --test/--val")


def test_tiny_held_out_part_is_grown_to_hold_every_class():
    y = np.repeat([0, 1, 2], 4)
    train, test = stratified_split(y, [0.1], seed=0)
    assert sorted(y[test].tolist()) == [0, 1, 2] and len(train) == 9


@pytest.mark.parametrize("fractions", [[0.0], [1.0], [0.6, 0.5], []])
def test_invalid_fractions_are_rejected(fractions):
    with pytest.raises(ConfigError, match="must each be between 0 and 1"):
        stratified_split(Y, fractions, seed=0)


def test_labelled_data_split_returns_subsets_with_the_same_classes():
    data = _data(["a"] * 6 + ["b"] * 4)
    train, test = data.split(test=0.2, seed=0)
    assert len(train) == 8 and len(test) == 2
    assert train.classes == test.classes == ["a", "b"]
    assert sorted(test.labels) == ["a", "b"]
    assert set(train.items).isdisjoint(test.items)
    train, val, test = data.split(test=0.2, val=0.2, seed=0)
    assert (len(train), len(val), len(test)) == (6, 2, 2)


def test_subset_keeps_classes_locations_and_skipped():
    data = _data(["a", "b", "b"])
    part = data.subset(np.array([2]))
    assert part.classes == ["a", "b"] and part.y.tolist() == [1]
    assert part.locations == ["r.csv:4"] and part.splits == {}


def test_with_classes_reindexes_to_the_model_classes():
    data = _data(["a", "b", "b"]).with_classes(["b", "a", "c"])
    assert data.y.tolist() == [1, 0, 0]
    assert data.class_counts() == {"b": 2, "a": 1, "c": 0}


def test_with_classes_rejects_an_unknown_label():
    data = _data(["a", "xyz"])
    with pytest.raises(DataError) as error:
        data.with_classes(["a", "b", "c"])
    assert str(error.value) == ("label 'xyz' at r.csv:3 is not one of the model's classes: "
                                "a, b, c")


def test_summary_is_json_ready():
    summary = _data(["b", "a", "b"]).summary()
    assert summary == {"source": "r.csv", "modality": "text", "samples": 3,
                       "classes": {"a": 1, "b": 2}, "skipped": []}


def test_numeric_class_names_sort_numerically():
    assert _data(["10", "2", "1"]).classes == ["1", "2", "10"]
