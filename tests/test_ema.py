"""The weight average (train/ema.py): its arithmetic, the swap used by validation, and its saved state."""
import torch
from torch import nn

from cifar_models.train.ema import WeightAverage


def _net():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4))


def test_average_follows_the_weights_with_the_warmed_up_decay():
    net = _net()
    avg = WeightAverage(net, 0.5)
    start = net[0].weight.detach().clone()
    with torch.no_grad():
        net[0].weight.add_(1.0)
    avg.update()  # step 1: d = min(0.5, 2/11) = 2/11
    d = 2 / 11
    with avg.swapped():
        assert torch.allclose(net[0].weight, d * start + (1 - d) * (start + 1))
    assert torch.equal(net[0].weight, start + 1)  # the raw weights are back after the block
    # batch-norm statistics are averaged too (they are what the averaged network normalises with)
    assert any(t is net[1].running_mean for t in avg.tensors)


def test_saved_state_restores_the_average_exactly():
    net = _net()
    avg = WeightAverage(net, 0.9)
    for _ in range(3):
        with torch.no_grad():
            net[0].weight.mul_(1.1)
        avg.update()
    other = WeightAverage(_net(), 0.9)
    other.load(avg.state())
    assert other.step == 3 and all(torch.equal(a, b) for a, b in zip(avg.average, other.average))
    avg.copy_to_module()
    assert torch.equal(net[0].weight, avg.average[0])


def _finished_run(val_acc, val_acc_raw):
    """A run after its last epoch, as finish() sees it: raw weights moved away from their average."""
    from types import SimpleNamespace

    net = _net()
    avg = WeightAverage(net, 0.5)
    with torch.no_grad():
        net[0].weight.add_(1.0)
    avg.update()
    run = SimpleNamespace(history=[dict(val_acc=val_acc, val_acc_raw=val_acc_raw)], ema=avg,
                          val_logits=torch.zeros(2, 3), dist=SimpleNamespace(is_main=True))
    return run, net, net[0].weight.detach().clone(), avg.average[0].clone()


def test_finish_ships_the_raw_weights_when_they_validate_better():
    from cifar_models.train.loop import _choose_average

    run, net, raw, average = _finished_run(0.50, 0.52)
    out = _choose_average(run)
    assert out["shipped"] == "raw weights" and (out["val_top1_average"], out["val_top1_raw"]) == (0.50, 0.52)
    assert torch.equal(net[0].weight, raw) and not torch.equal(raw, average)
    assert run.val_logits is None and run.ema is None  # the average's logits are dropped; validation reruns


def test_finish_ships_the_average_when_it_validates_at_least_as_well():
    from cifar_models.train.loop import _choose_average

    for avg_acc, raw_acc in [(0.52, 0.50), (0.5, 0.5), (0.5, None)]:
        run, net, raw, average = _finished_run(avg_acc, raw_acc)
        logits = run.val_logits
        out = _choose_average(run)
        assert out["shipped"] == "average" and out["steps"] == 1 and out["decay"] == 0.5
        assert torch.equal(net[0].weight, average) and run.val_logits is logits
