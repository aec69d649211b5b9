"""The regulariser against a brute-force reading of docs/METHOD.md, sections 5-7, and the curriculum."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from hf_gazecons.deviation import per_sample_deviation
from hf_gazecons.regularizer import GazeConsistencyLoss, LambdaCurriculum


def correct_logits(labels, k, wrong=()):
    predictions = labels.clone()
    for i in wrong:
        predictions[i] = (labels[i] + 1) % k
    return F.one_hot(predictions, k).float()


def standardised(m):
    return (m - m.mean()) / (m - m.mean()).norm()


def brute_force_step(ema, initialized, maps, logits, labels, k, alpha, variant="paper"):
    """One step of docs/METHOD.md (5.2) and (6.1)-(6.2) written plainly, class by class; returns (loss,
    new ema, new flags)."""
    ema, initialized = ema.clone(), initialized.clone()
    predictions = logits.argmax(1)
    deviations = []
    for c in range(k):
        idx = [i for i in range(len(labels)) if labels[i] == c and predictions[i] == c]
        if len(idx) < 2:
            continue
        averaged = [i for i in idx if variant not in ("robust", "pearson") or maps[i].detach().max() > 0]
        if averaged:  # robust and pearson: the non-zero maps; pearson averages them standardised
            mean = torch.stack([standardised(maps[i].detach()) if variant == "pearson" else maps[i].detach()
                                for i in averaged]).mean(0)  # fmt: skip
            ema[c] = mean if not initialized[c] else alpha * ema[c] + (1 - alpha) * mean
            initialized[c] = True
        for i in idx:
            diff = maps[i] - ema[c]
            pixels = diff.numel()
            if variant == "paper":
                deviations.append((diff**2).sum() / pixels)
            elif variant == "reference":
                deviations.append(diff.norm() / pixels)
            elif variant == "pearson":  # (1 - r) / 2 against the EMA's direction; an all-zero map: 1
                r = (standardised(maps[i]) * ema[c]).sum() / ema[c].norm()
                deviations.append((1 - r) / 2 if maps[i].detach().max() > 0 else torch.tensor(1.0))
            elif maps[i].detach().max() > 0 and ema[c].max() > 0:  # robust: rescaled to the class map's norm
                deviations.append(((maps[i] * ema[c].norm() / maps[i].norm() - ema[c]) ** 2).sum() / pixels)
            else:  # robust, an all-zero map (or class map): as far as a map with no overlap
                deviations.append(2 * (ema[c] ** 2).sum() / pixels if ema[c].max() > 0 else torch.tensor(2.0))
    loss = torch.stack(deviations).mean() if deviations else torch.tensor(0.0)
    return loss, ema, initialized


@pytest.mark.parametrize("variant", ["paper", "reference", "robust", "pearson"])
def test_penalty_and_ema_follow_the_equations_over_several_batches(variant):
    k, alpha = 3, 0.9
    reg = GazeConsistencyLoss(k, alpha, variant)
    g = torch.Generator().manual_seed(0)
    ema, initialized = torch.zeros(k, 4, 5), torch.zeros(k, dtype=torch.bool)
    batches = [
        (torch.tensor([0, 0, 1, 2, 2, 2]), (3,)),  # class 1: one sample -> skipped
        (torch.tensor([0, 0, 0, 1, 1, 2]), (5,)),  # class 2: one sample
        (torch.tensor([1, 1, 2, 2, 0, 0]), (4,)),  # class 0: one correct after the wrong one
    ]
    for step, (labels, wrong) in enumerate(batches):
        maps = torch.rand(len(labels), 4, 5, generator=g)
        maps[step] = 0.0  # one collapsed map per batch
        maps.requires_grad_(True)
        logits = correct_logits(labels, k, wrong)
        out = reg(maps, logits, labels)
        expected, ema, initialized = brute_force_step(ema, initialized, maps, logits, labels, k, alpha, variant)
        assert float(out.loss.detach()) == pytest.approx(float(expected), rel=1e-6)
        assert torch.allclose(reg.ema, ema, atol=1e-7)
        assert torch.equal(reg.initialized, initialized)
    assert reg.initialized.tolist() == [True, True, True]


def test_first_observation_sets_ema_to_batch_mean_and_update_happens_before_distances():
    reg = GazeConsistencyLoss(2, ema_alpha=0.5)
    first = torch.stack([torch.zeros(2, 2), torch.ones(2, 2)])
    labels = torch.tensor([0, 0])
    reg(first, correct_logits(labels, 2), labels)
    assert torch.allclose(reg.ema[0], torch.full((2, 2), 0.5))
    second = torch.stack([torch.ones(2, 2), torch.ones(2, 2)])
    out = reg(second, correct_logits(labels, 2), labels)
    # updated first: 0.5 * 0.5 + 0.5 * 1 = 0.75, then distance of ones to 0.75
    assert torch.allclose(reg.ema[0], torch.full((2, 2), 0.75))
    assert float(out.loss) == pytest.approx(0.25**2)


def test_nothing_taking_part_gives_exact_zero_without_gradient():
    reg = GazeConsistencyLoss(3)
    maps = torch.rand(3, 4, 4, requires_grad=True)
    labels = torch.tensor([0, 1, 2])
    out = reg(maps, correct_logits(labels, 3), labels)
    assert float(out.loss) == 0.0 and not out.loss.requires_grad
    assert out.n_samples == 0 and out.n_classes == 0
    assert not reg.initialized.any()
    # wrong predictions do not take part either
    labels = torch.tensor([0, 0, 0])
    out = reg(maps, correct_logits(labels, 3, wrong=(0, 1)), labels)
    assert float(out.loss) == 0.0 and out.n_classes == 0


def test_penalty_gradient_flows_into_maps_only_through_the_distance():
    reg = GazeConsistencyLoss(2)
    maps = torch.rand(4, 3, 3, requires_grad=True)
    labels = torch.tensor([0, 0, 1, 1])
    out = reg(maps, correct_logits(labels, 2), labels)
    out.loss.backward()
    assert maps.grad is not None and maps.grad.abs().sum() > 0
    assert out.n_samples == 4 and out.n_classes == 2


def test_zero_maps_among_participating_samples_are_counted():
    reg = GazeConsistencyLoss(3)
    labels = torch.tensor([0, 0, 0, 1, 2, 2])  # class 1 does not take part (one sample)
    maps = torch.rand(6, 3, 3)
    maps[[0, 3, 5]] = 0.0
    out = reg(maps, correct_logits(labels, 3, wrong=(4,)), labels)  # class 2: one correct sample
    assert (out.n_samples, out.n_classes, out.n_zero_maps) == (3, 1, 1)


def test_robust_penalty_gives_collapsed_maps_the_largest_value_and_a_gradient_back():
    reg = GazeConsistencyLoss(1, variant="robust")
    labels = torch.zeros(3, dtype=torch.long)
    raw = torch.randn(3, 4, 4)
    raw[2] = -raw[2].abs() - 0.5  # sample 2: no positive evidence anywhere -> an all-zero map
    raw.requires_grad_(True)
    maps = torch.relu(raw) / torch.relu(raw).flatten(1).amax(dim=1).clamp(min=1e-8)[:, None, None]
    out = reg(maps, correct_logits(labels, 1), labels, raw)
    ema = reg.ema[0]
    torch.testing.assert_close(ema, maps[:2].detach().mean(0))  # the non-zero maps' mean
    worst = 2 * ema.pow(2).mean()
    values = per_sample_deviation(maps.detach(), ema, "robust")
    torch.testing.assert_close(values[2], worst)
    assert (values[:2] < worst).all()
    depth = -raw[2].detach().max() / raw[2].detach().abs().mean()
    torch.testing.assert_close(out.loss.detach(), (values.sum() + worst * depth) / 3)
    out.loss.backward()
    assert torch.isfinite(raw.grad).all()
    assert raw.grad[2].abs().sum() > 0  # the collapsed map is pushed back above zero
    assert raw.grad[2].flatten()[raw[2].detach().flatten().argmax()] < 0  # by raising its best position
    # without raw the collapsed sample has no gradient (the ReLU is dead): the paper variant's trap
    plain = GazeConsistencyLoss(1, variant="robust")
    zero_raw = raw.detach().clone().requires_grad_(True)
    zero_maps = torch.relu(zero_raw) / torch.relu(zero_raw).flatten(1).amax(dim=1).clamp(min=1e-8)[:, None, None]
    plain(zero_maps, correct_logits(labels, 1), labels).loss.backward()
    assert zero_raw.grad[2].abs().sum() == 0


def test_state_dict_round_trip_restores_lazily_sized_maps():
    reg = GazeConsistencyLoss(2)
    labels = torch.tensor([0, 0, 1, 1])
    reg(torch.rand(4, 3, 3), correct_logits(labels, 2), labels)
    fresh = GazeConsistencyLoss(2)
    fresh.load_state_dict(reg.state_dict())
    assert torch.equal(fresh.ema, reg.ema) and torch.equal(fresh.initialized, reg.initialized)


def test_map_size_change_is_an_error():
    reg = GazeConsistencyLoss(1)
    labels = torch.tensor([0, 0])
    reg(torch.rand(2, 3, 3), correct_logits(labels, 1), labels)
    with pytest.raises(ValueError, match="map size changed"):
        reg(torch.rand(2, 4, 4), correct_logits(labels, 1), labels)


def test_curriculum_boundaries():
    curriculum = LambdaCurriculum(100.0, t0=2, t1=10)
    assert [curriculum(e) for e in (1, 2)] == [0.0, 0.0]
    assert curriculum(3) == pytest.approx(12.5)
    assert curriculum(6) == pytest.approx(50.0)
    assert curriculum(9) == pytest.approx(87.5)
    assert curriculum(10) == 100.0 and curriculum(50) == 100.0
    assert LambdaCurriculum(-100.0)(10) == -100.0
    assert LambdaCurriculum(0.0)(20) == 0.0


def test_curriculum_from_trainer_progress():
    per_epoch = LambdaCurriculum(80.0, t0=2, t1=10)
    # Trainer.state.epoch counts completed (fractional) epochs from 0: during the first epoch e = 1
    assert per_epoch.at_progress(0.0) == 0.0
    assert per_epoch.at_progress(2.0) == pytest.approx(10.0)  # third epoch
    assert per_epoch.at_progress(2.5) == pytest.approx(10.0)  # constant within an epoch
    per_step = LambdaCurriculum(80.0, t0=2, t1=10, per_step=True)
    assert per_step.at_progress(1.999) == 0.0  # still inside epoch t0 = 2: docs/METHOD.md (7.1) says 0
    assert per_step.at_progress(2.0) == 0.0  # the end of epoch t0
    assert per_step.at_progress(5.5) == pytest.approx(40.0)  # halfway from the end of epoch 2 to the start of 10
    assert per_step.at_progress(9.0) == 80.0 and per_step.at_progress(30.0) == 80.0  # from the start of epoch t1
    assert LambdaCurriculum(80.0, t0=2, t1=3, per_step=True).at_progress(1.9) == 0.0
    assert LambdaCurriculum(80.0, t0=2, t1=3, per_step=True).at_progress(2.0) == 80.0  # epoch 3 = t1
    with pytest.raises(ValueError):
        LambdaCurriculum(1.0, t0=5, t1=5)
