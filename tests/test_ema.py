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
