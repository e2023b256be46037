import pytest

from headstart.evaluation import classification_metrics


def test_metrics_match_hand_computed_values():
    classes = ["cat", "dog", "fox"]
    y_true = [0, 0, 0, 1, 1, 2]
    y_pred = [0, 0, 1, 1, 1, 0]
    m = classification_metrics(y_true, y_pred, classes)
    assert m["accuracy"] == pytest.approx(4 / 6)
    assert m["per_class"]["cat"] == {"precision": pytest.approx(2 / 3), "recall": pytest.approx(2 / 3),
                                     "f1": pytest.approx(2 / 3), "support": 3}
    assert m["per_class"]["dog"]["precision"] == pytest.approx(2 / 3)
    assert m["per_class"]["fox"]["recall"] == 0.0
    assert m["precision"] == pytest.approx((2 / 3 + 2 / 3 + 0) / 3)
    assert m["balanced_accuracy"] == pytest.approx((2 / 3 + 1 + 0) / 3)
    assert m["confusion_matrix"] == [[2, 1, 0], [0, 2, 0], [1, 0, 0]]
    assert {"accuracy", "balanced_accuracy", "precision", "recall", "f1", "per_class", "confusion_matrix"} <= set(m)


def test_classes_absent_from_the_data_still_appear_in_the_report():
    m = classification_metrics([0, 0], [0, 0], ["a", "b"])
    assert m["per_class"]["b"]["support"] == 0
    assert m["confusion_matrix"] == [[2, 0], [0, 0]]
    assert m["f1"] == 1.0
