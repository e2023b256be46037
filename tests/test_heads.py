import numpy as np
import torch

from headstart.heads import MLPHead, fit_linear_probe, fit_mlp_head


def _blobs(n_per_class=60, n_classes=3, dim=20, spread=1.0, seed=0):
    rng = np.random.default_rng(seed)
    centres = rng.normal(0, 3, (n_classes, dim))
    x = np.concatenate([centres[c] + spread * rng.normal(size=(n_per_class, dim)) for c in range(n_classes)])
    y = np.repeat(np.arange(n_classes), n_per_class)
    order = rng.permutation(len(y))
    return x[order].astype(np.float32), y[order]


def _accuracy(head, x, y):
    with torch.no_grad():
        return float((head(torch.as_tensor(x)).argmax(1).numpy() == y).mean())


def test_linear_probe_separates_separable_classes():
    x, y = _blobs()
    fitted = fit_linear_probe(x[:120], y[:120], x[120:], y[120:], 3)
    assert fitted.val_accuracy > 0.95
    assert _accuracy(fitted.head, x, y) > 0.95
    assert "C" in fitted.params and len(fitted.search) == 11


def test_folded_linear_layer_matches_standardised_logistic_regression():
    from sklearn.linear_model import LogisticRegression

    x, y = _blobs(spread=3.0)
    fitted = fit_linear_probe(x[:120], y[:120], x[120:], y[120:], 3, c_grid=(0.1,), refit_on_all=False)
    mean, scale = x[:120].mean(0), x[:120].std(0)
    reference = LogisticRegression(C=0.1, max_iter=500, tol=1e-4).fit((x[:120] - mean) / scale, y[:120])
    with torch.no_grad():
        ours = torch.softmax(fitted.head(torch.as_tensor(x)), 1).numpy()
    np.testing.assert_allclose(ours, reference.predict_proba((x - mean) / scale), atol=1e-3)


def test_binary_probe_gives_two_class_probabilities():
    x, y = _blobs(n_classes=2)
    fitted = fit_linear_probe(x[:80], y[:80], x[80:], y[80:], 2)
    assert fitted.head.out_features == 2
    assert _accuracy(fitted.head, x, y) > 0.95


def test_constant_features_do_not_break_the_probe():
    x, y = _blobs()
    x[:, :5] = 3.0
    fitted = fit_linear_probe(x[:120], y[:120], x[120:], y[120:], 3)
    assert np.isfinite(fitted.head.weight.detach().numpy()).all()


def test_regularisation_is_chosen_on_validation():
    x, y = _blobs(spread=4.0, dim=200, n_per_class=20)  # few samples, many dims: needs regularisation
    fitted = fit_linear_probe(x[:40], y[:40], x[40:], y[40:], 3)
    best = max(row["val_accuracy"] for row in fitted.search)
    assert fitted.val_accuracy == best


def test_mlp_head_learns_and_restores_its_best_epoch():
    x, y = _blobs()
    fitted = fit_mlp_head(x[:120], y[:120], x[120:], y[120:], 3, max_epochs=30, patience=5)
    assert isinstance(fitted.head, MLPHead)
    assert _accuracy(fitted.head, x, y) > 0.9
    losses = [row["val_loss"] for row in fitted.search]
    assert fitted.params["epochs"] == int(np.argmin(losses)) + 1


def test_balanced_class_weight_helps_the_minority_class():
    rng = np.random.default_rng(0)
    x = np.concatenate([rng.normal(0, 1, (300, 2)), rng.normal(1.2, 1, (15, 2))]).astype(np.float32)
    y = np.array([0] * 300 + [1] * 15)
    order = rng.permutation(len(y))
    x, y = x[order], y[order]
    plain = fit_linear_probe(x[:250], y[:250], x[250:], y[250:], 2)
    balanced = fit_linear_probe(x[:250], y[:250], x[250:], y[250:], 2, class_weight="balanced")
    minority = y == 1

    def recall(head):
        with torch.no_grad():
            return float((head(torch.as_tensor(x[minority])).argmax(1).numpy() == 1).mean())

    assert recall(balanced.head) > recall(plain.head)
