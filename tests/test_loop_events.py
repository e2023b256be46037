"""The training loop's events: loss terms from callbacks, gradients after backward, named
checkpoint state, the fit's private random state, and L2-SP as a callback (tiny nets, CPU)."""

import copy
import random
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from headstart.contract import InputContract
from headstart.data import LabelledData
from headstart.training import (L2SP, Callback, Checkpointing, EpochSeeding, LoopSettings, Trainer,
                                TrainingStep, TransferNet, load_checkpoint)

pytestmark = pytest.mark.timeout(60)


def tiny_net(seed: int = 0, dropout: float = 0.0) -> TransferNet:
    """A linear 'backbone' and head, initialised from ``seed`` without touching the global generator."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return TransferNet(nn.Linear(4, 3), nn.Linear(3, 2), dropout)


def batches(n: int = 16, batch_size: int = 4, shuffle: bool = False, generator=None) -> DataLoader:
    data = torch.Generator().manual_seed(0)
    x, y = torch.randn(n, 4, generator=data), torch.randint(0, 2, (n,), generator=data)
    return DataLoader(TensorDataset(x, y), batch_size=batch_size, shuffle=shuffle, generator=generator)


def make_trainer(net: TransferNet, callbacks, epochs: int = 1, lr: float = 0.1, **settings) -> Trainer:
    optimizer = torch.optim.SGD([p for p in net.parameters() if p.requires_grad], lr=lr)
    options = {"epochs": epochs, "warmup_epochs": 0.0, "clip_norm": None, **settings}
    return Trainer(net, optimizer, LoopSettings(**options), ["a", "b"], callbacks=list(callbacks))


class Gradients(Callback):
    """Records each step's gradients as ``after_backward`` sees them."""

    def __init__(self) -> None:
        self.seen: list[dict[str, torch.Tensor]] = []

    def after_backward(self, trainer):
        self.seen.append({n: p.grad.clone() for n, p in trainer.net.named_parameters() if p.grad is not None})


class Quadratic(Callback):
    def __init__(self, strength: float) -> None:
        self.strength = strength

    def on_loss(self, trainer, step: TrainingStep):
        step.add_loss("quad", self.strength * trainer.net.head.weight.pow(2).sum())


# -- on_loss and after_backward --------------------------------------------------------------
def test_a_term_added_in_on_loss_adds_its_gradient():
    net, first = tiny_net(), batches(n=4)
    plain, extra = Gradients(), Gradients()
    make_trainer(copy.deepcopy(net), [plain]).fit(first, first)
    make_trainer(copy.deepcopy(net), [Quadratic(0.3), extra]).fit(first, first)
    added = extra.seen[0]["head.weight"] - plain.seen[0]["head.weight"]
    torch.testing.assert_close(added, 2 * 0.3 * net.head.weight.detach())  # d/dW of 0.3*|W|^2
    torch.testing.assert_close(extra.seen[0]["backbone.weight"], plain.seen[0]["backbone.weight"])


def test_after_backward_sees_the_unclipped_gradients_before_the_step():
    class Norms(Callback):
        def __init__(self):
            self.before, self.after, self.weights = [], [], []

        @staticmethod
        def norm(trainer):
            return float(torch.norm(torch.stack([p.grad.norm() for p in trainer.net.parameters()])))

        def after_backward(self, trainer):
            self.before.append(self.norm(trainer))
            self.weights.append(trainer.net.head.weight.detach().clone())

        def on_batch_end(self, trainer, step, steps):
            self.after.append(self.norm(trainer))

    net, norms = tiny_net(), Norms()
    start = net.head.weight.detach().clone()
    make_trainer(net, [norms], clip_norm=1e-3).fit(batches(), batches())
    assert torch.equal(norms.weights[0], start)  # the optimizer has not stepped yet
    assert all(b > 1e-2 for b in norms.before)
    assert norms.after == pytest.approx([1e-3] * len(norms.after), rel=1e-3)


def test_named_terms_are_recorded_per_epoch_and_see_the_training_progress():
    progress = []

    class Constant(Callback):
        def on_loss(self, trainer, step):
            progress.append(step.progress)
            step.add_loss("const", torch.tensor(2.5))
            step.add_loss("const", torch.tensor(0.5))  # terms of one name sum

    plain = make_trainer(tiny_net(), [], epochs=2)
    plain.fit(batches(), batches())
    trainer = make_trainer(tiny_net(), [Constant()], epochs=2)
    trainer.fit(batches(), batches())
    assert [row["train_const_loss"] for row in trainer.history] == pytest.approx([3.0, 3.0])
    assert trainer.history[0]["train_loss"] == pytest.approx(plain.history[0]["train_loss"] + 3.0)
    assert not any(key.endswith("_loss") and key not in ("train_loss", "val_loss") for key in plain.history[0])
    assert progress == pytest.approx([i / 8 for i in range(8)])  # 2 epochs of 4 steps


def test_a_loss_term_needs_a_word_for_a_name():
    step = TrainingStep(torch.zeros(1, 3), torch.zeros(1, 2), torch.zeros(1), 0.0)
    with pytest.raises(ValueError, match="name"):
        step.add_loss("my loss", torch.tensor(1.0))


# -- checkpoints -----------------------------------------------------------------------------
class Tally(Callback):
    def __init__(self, step: int = 1) -> None:
        self.step, self.count = step, 0

    def on_batch_end(self, trainer, step, steps):
        self.count += self.step

    def state_dict(self):
        return {"count": self.count}

    def load_state_dict(self, state):
        self.count = state["count"]


class OtherTally(Tally):
    pass


class NewTally(Tally):
    pass


def test_checkpointed_states_return_to_their_callbacks_by_name_whatever_the_order(tmp_path):
    path = tmp_path / "ckpt.pt"
    make_trainer(tiny_net(), [Tally(1), OtherTally(100), Tally(10), Checkpointing(path)]).fit(batches(), batches())
    saved = torch.load(path, weights_only=True)["callbacks"]
    assert set(saved) == {"Tally", "OtherTally", "Tally#2", "Checkpointing"}
    first, second, other, new = Tally(), Tally(), OtherTally(), NewTally()
    new.count = 7
    trainer = make_trainer(tiny_net(), [Checkpointing(path), other, new, first, second])
    trainer.prepare(len(batches()))
    load_checkpoint(trainer, path)
    assert (first.count, second.count, other.count) == (4, 40, 400)
    assert new.count == 7  # no saved state: keeps its own
    assert trainer.epoch == 1


def test_a_checkpoint_of_an_older_version_with_positional_states_still_loads(tmp_path):
    path = tmp_path / "ckpt.pt"
    make_trainer(tiny_net(), [Tally(1), OtherTally(100), Checkpointing(path)]).fit(batches(), batches())
    state = torch.load(path, weights_only=True)
    state["callbacks"] = [state["callbacks"][k] for k in ("Tally", "OtherTally", "Checkpointing")]
    torch.save(state, path)
    first, other = Tally(), OtherTally()
    trainer = make_trainer(tiny_net(), [first, other, Checkpointing(path)])
    trainer.prepare(len(batches()))
    load_checkpoint(trainer, path)
    assert (first.count, other.count) == (4, 400)


# -- randomness ------------------------------------------------------------------------------
def _global_state():
    return torch.get_rng_state(), random.getstate(), np.random.get_state()[1].copy()


def _seeded_fit(callbacks=(), epochs: int = 2) -> Trainer:
    generator = torch.Generator()
    trainer = make_trainer(tiny_net(dropout=0.5), [EpochSeeding(7, [generator]), *callbacks], epochs=epochs)
    trainer.fit(batches(shuffle=True, generator=generator), batches())
    return trainer


def test_a_fit_leaves_the_global_random_state_alone_and_repeats_from_its_seed():
    class Draws(Callback):  # randomness inside the fit, from every global source
        def on_loss(self, trainer, step):
            random.random(), np.random.rand(), torch.rand(1)

    torch.manual_seed(123)
    random.seed(1)
    np.random.seed(2)
    before = _global_state()
    first = _seeded_fit([Draws()])
    after = _global_state()
    assert torch.equal(before[0], after[0]) and before[1] == after[1] and np.array_equal(before[2], after[2])
    torch.manual_seed(999)  # the caller's state does not matter either
    second = _seeded_fit([Draws()])
    assert [r["train_loss"] for r in first.history] == [r["train_loss"] for r in second.history]


def test_a_run_resumed_from_its_checkpoint_draws_what_the_straight_run_drew(tmp_path):
    class Interrupt(Callback):
        def on_epoch_end(self, trainer, epoch, row):
            if epoch == 1:
                raise KeyboardInterrupt

    straight = _seeded_fit(epochs=3)
    before = _global_state()
    with pytest.raises(KeyboardInterrupt):
        _seeded_fit([Checkpointing(tmp_path / "ckpt.pt"), Interrupt()], epochs=3)
    assert torch.equal(before[0], _global_state()[0])  # restored on the way out of an interrupted fit too
    generator = torch.Generator()
    resumed = make_trainer(tiny_net(dropout=0.5), [EpochSeeding(7, [generator])], epochs=3)
    resumed.prepare(len(batches()))
    load_checkpoint(resumed, tmp_path / "ckpt.pt")
    resumed.fit(batches(shuffle=True, generator=generator), batches())
    for a, b in zip(straight.history, resumed.history, strict=True):
        assert a["train_loss"] == pytest.approx(b["train_loss"], rel=1e-6)
        assert a["val_loss"] == pytest.approx(b["val_loss"], rel=1e-6)


# -- L2-SP -----------------------------------------------------------------------------------
def test_l2sp_adds_strength_times_the_distance_to_the_anchor_to_trainable_backbone_gradients():
    net, first = tiny_net(), batches(n=4)
    net.backbone.bias.requires_grad_(False)
    l2sp = L2SP(0.5, net.backbone)
    l2sp.anchor = {n: torch.zeros_like(p) for n, p in net.backbone.named_parameters()}
    plain, pulled = Gradients(), Gradients()
    make_trainer(copy.deepcopy(net), [plain]).fit(first, first)
    trainer = make_trainer(copy.deepcopy(net), [l2sp, pulled])
    trainer.fit(first, first)
    weight = net.backbone.weight.detach()
    torch.testing.assert_close(pulled.seen[0]["backbone.weight"] - plain.seen[0]["backbone.weight"], 0.5 * weight)
    torch.testing.assert_close(pulled.seen[0]["head.weight"], plain.seen[0]["head.weight"])
    assert "backbone.bias" not in pulled.seen[0]
    assert trainer.history[0]["train_l2sp_loss"] == pytest.approx(0.25 * float(weight.pow(2).sum()))


def test_l2sp_anchors_at_the_start_weights_and_pulls_the_backbone_towards_them():
    class UnfreezeBias(Callback):
        def on_epoch_start(self, trainer, epoch):
            trainer.net.backbone.bias.requires_grad_(epoch >= 1)

    def distance(net, start):
        return sum(float((p.detach() - start[n]).pow(2).sum()) for n, p in net.backbone.named_parameters())

    net = tiny_net()
    start = {n: p.detach().clone() for n, p in net.backbone.named_parameters()}
    free, anchored = copy.deepcopy(net), copy.deepcopy(net)
    make_trainer(free, [UnfreezeBias()], epochs=3, lr=0.5).fit(batches(), batches())
    l2sp = L2SP(5.0, anchored.backbone)
    make_trainer(anchored, [UnfreezeBias(), l2sp], epochs=3, lr=0.5).fit(batches(), batches())
    assert distance(anchored, start) < 0.8 * distance(free, start)
    assert set(l2sp.anchor) == {"weight", "bias"}  # backbone parameter names
    assert torch.equal(l2sp.anchor["weight"], start["weight"])
    assert torch.equal(l2sp.anchor["bias"], start["bias"])  # frozen at first: its start value is its pre-trained one
    assert l2sp.state_dict() == {}  # anchors are rebuilt from the pre-trained weights, never checkpointed


# -- adaptation methods hand the loop their callbacks -----------------------------------------
def test_dann_and_mmd_give_one_auxiliary_callback_drawing_from_the_target():
    from headstart.adaptation.dann import Dann, DomainAdversarialLoss
    from headstart.adaptation.mmd import Mmd, MmdLoss

    contract = InputContract("text", feature_dim=8, max_length=16)
    job = SimpleNamespace(backbone=SimpleNamespace(contract=contract, tokenizer=None), num_workers=0, seed=3,
                          target=LabelledData("text", ["a b", "c d", "e f"]))
    config = SimpleNamespace(batch_size=2, accumulate=1, randaugment=None, min_crop=0.5)
    before = torch.get_rng_state()
    [dann] = Dann({"hidden": 5}).training_callbacks(job, config)
    [again] = Dann({"hidden": 5}).training_callbacks(job, config)
    assert torch.equal(before, torch.get_rng_state())  # the classifier starts from the run's seed
    assert all(torch.equal(a, b) for a, b in zip(dann.parameters(), again.parameters(), strict=True))
    [mmd] = Mmd().training_callbacks(job, config)
    assert isinstance(dann, DomainAdversarialLoss) and isinstance(mmd, MmdLoss)
    assert dann.classifier[0].in_features == 8 and dann.classifier[0].out_features == 5
    assert sum(p.numel() for p in dann.parameters()) > 0 and mmd.parameters() == []
    for callback in (dann, mmd):
        assert callback.target_loader.batch_size == 2 and len(callback.target_loader.dataset) == 3
