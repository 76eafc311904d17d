"""The one training loop: early stopping with patience restores the best epoch and stops on time."""
from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

from kd2mcu.train.optim import run_stage  # noqa: E402


def _stage(accuracies, patience):
    model = torch.nn.Linear(2, 1)
    x = torch.ones(4, 2)
    seen = iter(accuracies)

    def step_loss(idx, epoch):
        return (model(x[idx]) ** 2).mean()

    return run_stage("t", [model], step_loss, 4, epochs=len(accuracies), lr=1e-2, weight_decay=0.0,
                     batch_size=4, grad_clip=1.0, seed=0, evaluate=lambda: next(seen), quiet=True, patience=patience)


def test_patience_stops_after_that_many_epochs_without_a_gain():
    h = _stage([0.5, 0.7, 0.7, 0.6, 0.7, 0.9, 0.95], patience=3)
    assert h["stopped_early_at"] == 4 and len(h["loss"]) == 5
    assert h["best_epoch"] == 4  # ties go to the later epoch, as without patience


def test_no_patience_runs_every_epoch():
    h = _stage([0.5, 0.7, 0.7, 0.6, 0.7, 0.9, 0.95], patience=0)
    assert "stopped_early_at" not in h and len(h["loss"]) == 7 and h["best_epoch"] == 6


def test_a_score_picks_the_epoch_instead_of_the_accuracy():
    model = torch.nn.Linear(2, 1)
    x = torch.ones(4, 2)
    accs, scores = iter([0.9, 0.5, 0.6]), iter([-3.0, -1.0, -2.0])  # accuracy would keep epoch 0
    steps = []
    h = run_stage("t", [model], lambda idx, epoch: (model(x[idx]) ** 2).mean(), 4, epochs=3, lr=1e-2,
                  weight_decay=0.0, batch_size=2, grad_clip=1.0, seed=0, evaluate=lambda: next(accs),
                  score=lambda: next(scores), quiet=True, after_step=steps.append)
    assert h["best_epoch"] == 1 and h["val_score"] == [-3.0, -1.0, -2.0] and h["val_accuracy"] == [0.9, 0.5, 0.6]
    assert steps == [0, 0, 1, 1, 2, 2]  # after every optimizer step, with its epoch


def test_select_from_never_keeps_an_earlier_epoch():
    h = _stage([0.5, 0.9, 0.6, 0.7, 0.6], patience=0)
    assert h["best_epoch"] == 1
    model = torch.nn.Linear(2, 1)
    x = torch.ones(4, 2)
    accs = iter([0.5, 0.9, 0.6, 0.7, 0.6])  # epoch 1 is the best, but it comes before select_from
    h = run_stage("t", [model], lambda idx, epoch: (model(x[idx]) ** 2).mean(), 4, epochs=5, lr=1e-2,
                  weight_decay=0.0, batch_size=4, grad_clip=1.0, seed=0, evaluate=lambda: next(accs), quiet=True,
                  select_from=2)
    assert h["best_epoch"] == 3


def test_keep_last_keeps_the_last_epochs_weights_however_validation_scores():
    x = torch.ones(4, 2)

    def stage(keep_last):
        torch.manual_seed(0)
        model = torch.nn.Linear(2, 1)
        accs = iter([0.9, 0.5, 0.6])  # the best accuracy is epoch 0's
        h = run_stage("t", [model], lambda idx, epoch: (model(x[idx]) ** 2).mean(), 4, epochs=3, lr=1e-1,
                      weight_decay=0.0, batch_size=2, grad_clip=1.0, seed=0, evaluate=lambda: next(accs),
                      quiet=True, keep_last=keep_last)
        return h, [p.detach().clone() for p in model.parameters()]

    best, w_best = stage(False)
    last, w_last = stage(True)
    assert best["best_epoch"] == 0 and last["best_epoch"] == 2
    assert last["val_accuracy"] == [0.9, 0.5, 0.6]  # still recorded
    assert not torch.equal(w_best[0], w_last[0])  # epoch 0's weights restored against the last epoch's kept
    assert float((w_last[0].sum() + w_last[1]) ** 2) < float((w_best[0].sum() + w_best[1]) ** 2)  # trained on


def test_average_from_ends_with_the_mean_of_those_epochs_weights():
    torch.manual_seed(0)
    model = torch.nn.Linear(2, 1)
    x = torch.ones(4, 2)
    seen = []  # each epoch's weights, as evaluate sees them at the end of the epoch

    def evaluate():
        seen.append([p.detach().clone() for p in model.parameters()])
        return 1.0 - 0.1 * len(seen)  # epoch 0 scores best: averaging must not pick it
    h = run_stage("t", [model], lambda idx, epoch: (model(x[idx]) - 3.0).pow(2).mean(), 4, epochs=5, lr=1e-1,
                  weight_decay=0.0, batch_size=2, grad_clip=1.0, seed=0, evaluate=evaluate, quiet=True,
                  average_from=2)
    assert h["averaged_epochs"] == 3 and h["best_epoch"] == 4
    for k, p in enumerate(model.parameters()):
        mean = torch.stack([w[k] for w in seen[2:]]).mean(0)
        assert torch.allclose(p.detach(), mean, atol=1e-6)
        assert not torch.allclose(p.detach(), seen[-1][k]) and not torch.allclose(p.detach(), seen[0][k])


def test_student_dropout_acts_while_training_only_and_leaves_the_weights_alone(tmp_path):
    from kd2mcu.train.student import TinyLSTM, load, save

    torch.manual_seed(0)
    plain = TinyLSTM(3, 8, 2, layers=2)
    torch.manual_seed(0)
    dropped = TinyLSTM(3, 8, 2, layers=2, dropout=0.5)
    assert plain.state_dict().keys() == dropped.state_dict().keys()
    x, lengths = torch.randn(4, 6, 3, generator=torch.Generator().manual_seed(1)), torch.tensor([6, 5, 3, 1])
    plain.eval(), dropped.eval()
    assert torch.equal(plain(x, lengths)[0], dropped(x, lengths)[0])  # inference: the same model
    dropped.train()
    torch.manual_seed(2)
    a = dropped(x, lengths)[0]
    torch.manual_seed(3)
    assert not torch.equal(a, dropped(x, lengths)[0])  # training: a random part dropped
    save(dropped, tmp_path / "s.pt")
    assert load(tmp_path / "s.pt").dropout == 0.5


def test_averaging_starts_no_earlier_than_select_from():
    """A pruning stage with averaging: an epoch before the target sparsity never joins the mean."""
    torch.manual_seed(0)
    model = torch.nn.Linear(2, 1)
    x = torch.ones(4, 2)
    seen = []

    def evaluate():
        seen.append([p.detach().clone() for p in model.parameters()])
        return 0.5
    h = run_stage("t", [model], lambda idx, epoch: (model(x[idx]) - 3.0).pow(2).mean(), 4, epochs=6, lr=1e-1,
                  weight_decay=0.0, batch_size=2, grad_clip=1.0, seed=0, evaluate=evaluate, quiet=True,
                  average_from=1, select_from=4)
    assert h["averaged_epochs"] == 2
    for k, p in enumerate(model.parameters()):
        assert torch.allclose(p.detach(), torch.stack([w[k] for w in seen[4:]]).mean(0), atol=1e-6)
        assert not torch.allclose(p.detach(), torch.stack([w[k] for w in seen[1:]]).mean(0), atol=1e-6)
