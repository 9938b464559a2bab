"""One training loop for every model and recipe, read top to bottom:

    run = setup(cfg)          data, model, what is trained, optimizer: every decision made once
    resume(run)               continue an interrupted run exactly (weights, optimizer, random generators)
    run_epoch(run, epoch)     one pass over the training set, then validation
    save_state(run)           after every epoch, atomically
    finish(run)               validation metrics, test report, checkpoint

`train(cfg)` does all of it. Data stays uint8 (or, with `freeze = k`, as the cached fp16 output of
the first k stages, see features.py; with `distill_alpha > 0` the loss also matches a teacher's cached
logits for the same views, see distill.py) and every random choice of an epoch (order, crops, flips,
views) is drawn at its start from a generator seeded by (seed, epoch): the same images meet the
same augmentation whatever the batch split, process count or interruption. Under torchrun each
process trains on its share of every global batch (see distributed.py); only rank 0 prints,
validates and writes.
"""
from __future__ import annotations

import json
import math
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from ..checkpoint import git_commit, half_state_dict, save_checkpoint
from ..common.errors import ConfigError
from ..common.memory import malloc_settings
from ..common.meta import build_meta, checkpoint_paths
from ..common.reports import report_path, save_report
from ..data import (Cifar100, apply_augment, draw_augment, indices_digest, load_cifar100, stratified_split,
                   stratified_subset, to_model_input)
from ..eval import metrics
from ..eval.evaluation import evaluate_classifier
from ..inference import classifier_from_state
from ..models import build_model, count_params, get_entry, model_stages
from . import distill, mixing
from .distributed import Dist
from .ema import WeightAverage
from .features import cache_key, cached_stage_outputs, frozen_cache_fields, view_params
from ..onnx_forward import native_bf16_cpu, resolve_backend
from .recipes import size_at
from .state import resume, save_state

if TYPE_CHECKING:
    from .tracking import WandbLogger


def pick_device(name: str = "auto", dist: Dist | None = None) -> torch.device:
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and dist is not None and dist.active:
        name = f"cuda:{dist.local_rank}"
    return torch.device(name)


def use_amp(setting, device: torch.device) -> bool:
    """bf16 autocast: the recipe's `amp` when True or False; "auto": on for CUDA and for CPUs with native bf16."""
    if setting in (True, False):
        return setting
    return device.type == "cuda" or native_bf16_cpu()


def lr_at(step: int, total: int, warmup: int, peak: float, schedule: str) -> float:
    if step < warmup:
        return peak * (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    if schedule == "cosine":
        return peak * 0.5 * (1 + math.cos(math.pi * progress))
    return peak * (1 - progress)


def make_optimizer(params, cfg) -> torch.optim.Optimizer:
    params = [p for p in params if p.requires_grad]
    decay = [p for p in params if p.ndim > 1]
    no_decay = [p for p in params if p.ndim <= 1]
    groups = [dict(params=decay, weight_decay=cfg["weight_decay"]), dict(params=no_decay, weight_decay=0.0)]
    if cfg["optimizer"] == "sgd":
        return torch.optim.SGD(groups, lr=cfg["lr"], momentum=cfg["momentum"], nesterov=True)
    if cfg["optimizer"] == "adamw":
        return torch.optim.AdamW(groups, lr=cfg["lr"])
    raise ConfigError(f"unknown optimizer {cfg['optimizer']!r}")


class Tail(nn.Module):
    """The stages that train, applied in order."""

    def __init__(self, stages):
        super().__init__()
        self.stages = nn.ModuleList(stages)

    def forward(self, x):
        for s in self.stages:
            x = s(x)
        return x


@dataclass
class Run:
    """Everything a run decided at setup; the loop only reads it (plus `history` and `elapsed`)."""
    cfg: dict
    name: str
    dist: Dist
    device: torch.device
    amp: bool
    data: Cifar100
    train_idx: np.ndarray
    val_idx: np.ndarray
    test_idx: torch.Tensor
    data_cfg: dict
    model: nn.Module            # the whole network (what the checkpoint holds)
    pretrained: dict | None
    trainable: nn.Module        # the part that trains: the model, or its last stages
    forward: Callable           # trainable, maybe wrapped for several processes and compiled
    source: torch.Tensor        # training inputs: uint8 images (N,3,32,32) or cached outputs (views,N,...)
    val_source: torch.Tensor
    train_labels: torch.Tensor  # on the device
    val_labels: torch.Tensor
    gather: Callable            # (source, indices, epoch choices) -> this process's inputs for an epoch
    inputs: Callable            # (batch of gathered inputs, its choices) -> model input on the device
    draw: Callable              # (perm, generator) -> an epoch's random choices, per position in perm
    loss: Callable              # (float logits, labels, the batch's choices) -> the loss to minimise
    opt: torch.optim.Optimizer
    batch_size: int             # global
    steps_per_epoch: int
    state_path: Path
    command: str | None = None
    feature_seconds: float | None = None
    teacher: dict | None = None         # distillation: what the checkpoint records of the teacher
    teacher_seconds: float | None = None  # distillation: the teacher targets' wall clock
    history: list = field(default_factory=list)
    elapsed: float = 0.0
    val_logits: torch.Tensor | None = None
    commit: str = "unknown"
    memory_format: torch.memory_format = torch.channels_last
    ema: WeightAverage | None = None    # recipes with ema_decay > 0: the averaged weights (validated, shipped)
    frozen_backend: str = "torch"       # what runs the frozen stages and a teacher from pixels (onnx_forward.py)
    epoch_data_cfg: dict | None = None  # progressive resizing: the current epoch's input config (None: data_cfg)
    malloc: dict | None = None          # glibc's malloc as scripts/train.py set it for training (common/memory.py)


# ----------------------------------------------------------------------------- setup
def setup(cfg: dict, data_dir=None, run_dir="runs", name: str | None = None, verify_md5: bool = True,
          command: str | None = None) -> Run:
    cfg = json.loads(json.dumps(cfg))  # plain JSON types, exactly as saved
    distill.check_config(cfg)  # before anything slow: a distillation without a teacher fails at once
    device_type = "cuda" if cfg.get("device", "auto") in ("auto", "cuda") and torch.cuda.is_available() else "cpu"
    dist = Dist.from_env(device_type if not str(cfg.get("device", "")).startswith("cuda:") else "cuda")
    device = pick_device(cfg.get("device", "auto"), dist)
    amp = use_amp(cfg["amp"], device)
    torch.manual_seed(cfg["seed"] + dist.rank)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
    data = load_cifar100(data_dir, verify=verify_md5)
    train_idx, val_idx, test_idx = _split(data, cfg)
    entry = get_entry(cfg["model"])
    data_cfg = dict(entry.data_config, source_size=32)
    if cfg.get("input_size"):
        data_cfg["input_size"] = int(cfg["input_size"])
    if cfg.get("sizes"):
        if cfg["freeze"] or cfg.get("distill_alpha"):
            raise ConfigError("--sizes (progressive resizing) trains end to end: not with --freeze or distillation")
        data_cfg["input_size"] = size_at(cfg, cfg["epochs"] - 1)  # the size the last epoch trains at ships
    if cfg.get("flip_average"):
        data_cfg["flip_average"] = True  # travels with the checkpoint: every prediction averages image and mirror
    model, pretrained = build_model(cfg["model"], cfg["arch"], cfg["pretrained"], len(data.class_names))
    fmt = torch.channels_last if cfg.get("channels_last", True) else torch.contiguous_format
    model = dist.sync_batchnorm(model.to(device, memory_format=fmt), device)
    run = Run(cfg=cfg, name=name or cfg["model"], dist=dist, device=device, amp=amp, data=data, train_idx=train_idx,
              val_idx=val_idx, test_idx=test_idx, data_cfg=data_cfg, model=model, pretrained=pretrained,
              trainable=model, forward=model, source=data.train.images[train_idx], val_source=None,
              train_labels=data.train.labels[train_idx].to(device), val_labels=data.train.labels[val_idx].to(device),
              gather=None, inputs=None, draw=None, loss=_hard_loss(cfg), opt=None,
              batch_size=min(cfg["batch_size"], len(train_idx)),
              steps_per_epoch=0, state_path=Path(run_dir) / (name or cfg["model"]) / "state.safetensors",
              command=command, commit=git_commit(), memory_format=fmt,
              frozen_backend=resolve_backend(cfg.get("frozen_backend", "auto"), device, amp),
              malloc=malloc_settings())
    if cfg["freeze"]:
        _setup_frozen(run, Path(run_dir) / "feature-cache")
    elif cfg.get("distill_alpha"):
        _setup_distill(run, Path(run_dir) / "teacher-cache", Path(run_dir) / "feature-cache")
    else:
        _setup_end_to_end(run)
    _setup_optimizer(run)
    _say(run, f"{run.name}: {cfg['recipe']} on {device} x{dist.world} (bf16 autocast: {amp}"
              f"{'; frozen passes: ' + run.frozen_backend if cfg['freeze'] or cfg.get('distill_alpha') else ''}), "
              f"{count_params(model):,} parameters ({count_params(run.trainable):,} trained), {len(train_idx)} train / "
              f"{len(val_idx)} val images at {data_cfg['input_size']} px, pretrained: {pretrained}")
    return run


def _hard_loss(cfg: dict) -> Callable:
    """Cross-entropy with the recipe's label smoothing: the loss of every recipe but distillation's."""
    return lambda logits, y, choice: F.cross_entropy(logits, y, label_smoothing=cfg["label_smoothing"])


def _split(data: Cifar100, cfg: dict):
    """Train / validation indices (stratified, seeded) and test indices; --subset shrinks all three."""
    train_idx, val_idx = stratified_split(data.train.labels.numpy(), cfg["val_per_class"], cfg["seed"])
    test_idx = torch.arange(len(data.test))
    if cfg.get("subset"):
        n = int(cfg["subset"])
        train_idx = train_idx[stratified_subset(data.train.labels[train_idx].numpy(), n, cfg["seed"])]
        val_idx = val_idx[stratified_subset(data.train.labels[val_idx].numpy(), max(100, n // 10), cfg["seed"])]
        test_idx = torch.as_tensor(stratified_subset(data.test.labels.numpy(), max(100, n // 5), cfg["seed"]))
    return train_idx, val_idx, test_idx


def _setup_end_to_end(run: Run) -> None:
    """uint8 images (this process's share of each epoch on the device); crops and flips on whole batches."""
    cfg, data_cfg, pad = run.cfg, run.data_cfg, run.cfg["crop_padding"]
    if not run.dist.active:
        run.source = run.source.to(run.device)  # the whole set on the device, once
    run.val_source = run.data.train.images[run.val_idx].to(run.device)
    run.draw = lambda perm, g: draw_augment(len(perm), g, pad, cfg["flip"], cfg.get("photo_augment", 0.0))
    run.gather = lambda source, idx, choice: source[idx.to(source.device)].to(run.device)
    run.inputs = lambda x, choice: _as_input(to_model_input(apply_augment(x, choice, pad),
                                                            run.epoch_data_cfg or data_cfg), run)
    run.trainable = run.model
    _wrap(run)


def _setup_frozen(run: Run, cache_dir: Path) -> None:
    """Freeze the first k stages; cache their output for `cache_views` views of every image; train the rest."""
    cfg, k = run.cfg, int(run.cfg["freeze"])
    stages = model_stages(cfg["model"], run.model)
    if not 0 < k < len(stages):
        raise ConfigError(f"freeze={k}: {cfg['model']} has {len(stages)} stages, so --freeze must be "
                          f"1..{len(stages) - 1}")
    for p in run.model.parameters():
        p.requires_grad_(False)
    run.trainable = Tail(stages[k:])
    for p in run.trainable.parameters():
        p.requires_grad_(True)
    views, pad, photo = int(cfg["cache_views"]), cfg["crop_padding"], float(cfg.get("photo_augment") or 0.0)
    seconds = 0.0
    for split, idx, n_views, share in (("train", run.train_idx, views, photo), ("val", run.val_idx, 1, 0.0)):
        key = frozen_cache_fields(model=cfg["model"], arch=cfg["arch"], pretrained=run.pretrained, stages=k,
                                  data_config=run.data_cfg, data_md5=run.data.md5["train"], amp=run.amp,
                                  seed=cfg["seed"], pad=pad, photo=share, indices=indices_digest(idx), views=n_views,
                                  backend=run.frozen_backend)
        out, s = cached_stage_outputs(
            stages[:k], run.data.train.images[idx], view_params(len(idx), n_views, cfg["seed"], pad, share),
            run.data_cfg, device=run.device, amp=run.amp, cache_dir=cache_dir, key=key, pad=pad,
            rank=run.dist.rank, world=run.dist.world, barrier=run.dist.barrier,
            desc=f"{split}: stages 1-{k} x {n_views} view(s) ({run.frozen_backend})", backend=run.frozen_backend)
        seconds += s
        if split == "train":
            run.source = out if run.dist.active or run.device.type == "cpu" else out.to(run.device)
        else:
            run.val_source = out[0]
    run.feature_seconds = seconds
    run.draw = lambda perm, g: dict(view=torch.randint(0, views, (len(perm),), generator=g))
    run.gather = lambda source, idx, choice: source[choice["view"].to(source.device), idx.to(source.device)]
    run.inputs = lambda x, choice: _as_input(x.to(run.device, non_blocking=True), run)
    _wrap(run)


def _setup_distill(run: Run, cache_dir: Path, feature_cache: Path) -> None:
    """End to end on uint8 images, each epoch on one of `distill_views` fixed views per image, whose teacher
    logits are computed once (cached, resumable) and taught with Hinton's loss (see distill.py)."""
    cfg, pad = run.cfg, run.cfg["crop_padding"]
    _setup_end_to_end(run)
    teacher = distill.load_teacher(cfg["teacher"], run.data.class_names, run.device)
    views, photo, seed, indices = int(cfg["distill_views"]), float(cfg.get("photo_augment") or 0.0), cfg["seed"], \
        indices_digest(run.train_idx)
    params = view_params(len(run.train_idx), views, seed, pad, photo)
    images = run.data.train.images[run.train_idx]
    maps, why = distill.frozen_maps(teacher, feature_cache, views=views, n=len(images), seed=seed, pad=pad,
                                    photo=photo, indices=indices)
    if maps is not None:
        gap = distill.check_frozen(teacher, maps, images, params, pad, run.device)
        if gap > distill.TOLERANCE:
            maps, why = None, f"its frozen-stage cache gives logits {gap:.3g} away from the teacher's own"
        else:
            why += f" (largest |logit| difference from the teacher on pixels, 32 images: {gap:.2g})"
    source = f"frozen-stage cache {maps.key}: the teacher's stages {maps.k + 1}.. on it" if maps else "pixels"
    _say(run, f"teacher targets from {'its frozen-stage cache ' + why if maps else 'pixels: ' + why}")
    key = dict(teacher_sha256=teacher.meta.get("weights_sha256"), teacher_data_config=teacher.data_config,
               data_md5=run.data.md5["train"], indices=indices, views=views, seed=seed, pad=pad, photo=photo,
               kind="teacher logits fp32", source=source, backend="torch" if maps else run.frozen_backend)
    targets, run.teacher_seconds = distill.teacher_targets(
        teacher, images, params, device=run.device, pad=pad, cache_dir=cache_dir, key=key, maps=maps,
        rank=run.dist.rank, world=run.dist.world, barrier=run.dist.barrier,
        desc=f"teacher {teacher.checkpoint}: logits x {views} view(s)", backend=run.frozen_backend)
    run.teacher = dict(distill.teacher_record(teacher, cfg["teacher"]), cache_key=cache_key(**key),
                       targets_source=source)
    del teacher, maps
    run.draw = lambda perm, g: distill.epoch_choices(perm, g, params, targets)
    run.loss = distill.loss_for(cfg, run.device)


def _as_input(x: torch.Tensor, run: Run) -> torch.Tensor:
    x = x.float()
    return x.contiguous(memory_format=run.memory_format) if x.ndim == 4 else x


def _wrap(run: Run) -> None:
    run.forward = run.dist.wrap(run.trainable, run.device)
    if run.cfg.get("compile"):
        run.forward = torch.compile(run.forward)


def _setup_optimizer(run: Run) -> None:
    cfg, world = run.cfg, run.dist.world
    if run.batch_size % world:
        raise ConfigError(f"batch size {run.batch_size} must be a multiple of the process count {world}")
    run.opt = make_optimizer(run.trainable.parameters(), cfg)
    if cfg.get("ema_decay"):
        run.ema = WeightAverage(run.trainable, cfg["ema_decay"])
    run.steps_per_epoch = len(run.train_idx) // run.batch_size


# ----------------------------------------------------------------------------- the loop
def run_epoch(run: Run, epoch: int) -> dict:
    """One pass over the training set (this process's share of every global batch), then validation."""
    cfg, dev, b = run.cfg, run.device, run.batch_size // run.dist.world
    steps, total = run.steps_per_epoch, run.steps_per_epoch * cfg["epochs"]
    warmup = int(cfg["warmup_epochs"] * steps)
    if cfg.get("sizes"):  # training and this epoch's validation run at the epoch's size
        run.epoch_data_cfg = dict(run.data_cfg, input_size=size_at(cfg, epoch))
    t0 = time.perf_counter()
    g = torch.Generator().manual_seed(cfg["seed"] * 100_003 + epoch)
    perm = torch.randperm(len(run.train_idx), generator=g)
    choice = run.draw(perm, g)  # per position in perm
    mix = mixing.draw(steps, g, cfg["cutmix"]) if cfg.get("cutmix") else None  # per step
    # Global batch i is perm[i*B:(i+1)*B]; this process takes its b-wide slice of each.
    pos = torch.arange(steps * run.batch_size).view(steps, run.dist.world, b)[:, run.dist.rank].reshape(-1)
    idx, choice = perm[pos], {k: v[pos] for k, v in choice.items()}
    xs, ys = run.gather(run.source, idx, choice), run.train_labels[idx.to(dev)]
    sums = torch.zeros(3, device=dev, dtype=torch.float64)  # loss sum, correct, seen
    run.trainable.train()
    bar = tqdm(range(steps), desc=f"epoch {epoch + 1}/{cfg['epochs']}", unit="step", dynamic_ncols=True,
               leave=False, disable=not run.dist.is_main)
    for i in bar:
        lr = lr_at(epoch * steps + i, total, warmup, cfg["lr"], cfg["schedule"])
        for group in run.opt.param_groups:
            group["lr"] = lr
        sl = slice(i * b, (i + 1) * b)
        c = {k: v[sl] for k, v in choice.items()}
        x, y, keep = run.inputs(xs[sl], c), ys[sl], 1.0
        if mix is not None and mix["apply"][i]:
            x, keep = mixing.apply(x, *(float(mix[k][i]) for k in ("lam", "cy", "cx")))
        with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=run.amp):
            logits = run.forward(x)
        loss = run.loss(logits.float(), y, c)
        if keep < 1.0:  # CutMix: the pasted box carries the previous input's label
            loss = keep * loss + (1.0 - keep) * run.loss(logits.float(), y.roll(1, 0), c)
        run.opt.zero_grad(set_to_none=True)
        loss.backward()
        run.opt.step()
        if run.ema:
            run.ema.update()
        sums += torch.stack([loss.detach().double() * len(y), (logits.argmax(1) == y).sum().double(),
                             torch.tensor(float(len(y)), device=dev, dtype=torch.float64)])
        if i % 10 == 0 or i == steps - 1:
            s = sums.tolist()
            bar.set_postfix(loss=f"{s[0] / s[2]:.3f}", acc=f"{s[1] / s[2]:.3f}",
                            img_s=f"{s[2] * run.dist.world / (time.perf_counter() - t0):.0f}", lr=f"{lr:.2e}")
    if dev.type == "cuda":
        torch.cuda.synchronize()
    train_seconds = time.perf_counter() - t0
    loss_sum, correct, seen = run.dist.sum(sums).tolist()
    # With a weight average, the raw weights are validated too (first: val_logits stay the average's), so that
    # finish() ships whichever of the two is better on validation.
    raw = _validate(run) if run.ema and run.dist.is_main else None
    val = validate(run)
    seconds = time.perf_counter() - t0
    row = dict(epoch=epoch + 1, lr=lr, train_loss=loss_sum / seen, train_acc=correct / seen,
               val_loss=val["nll"] if val else None, val_acc=val["top1"] if val else None, seconds=seconds,
               images_per_s=seen / train_seconds)
    if raw:
        row["val_acc_raw"] = raw["top1"]
    return row


@torch.no_grad()
def validate(run: Run) -> dict | None:
    """Validation metrics (of the weight average, if the recipe keeps one), computed by rank 0 (others wait at
    the next collective); keeps the logits."""
    if not run.dist.is_main:
        return None
    if run.ema:
        with run.ema.swapped():
            return _validate(run)
    return _validate(run)


@torch.no_grad()
def _validate(run: Run) -> dict:
    run.trainable.eval()
    out = []
    for i in range(0, len(run.val_source), run.batch_size):
        x = run.val_source[i:i + run.batch_size]
        x = _as_input(x.to(run.device) if run.cfg["freeze"] else to_model_input(x, run.epoch_data_cfg or run.data_cfg),
                      run)
        with torch.autocast(run.device.type, dtype=torch.bfloat16, enabled=run.amp):
            out.append(run.trainable(x).float())
    run.val_logits = torch.cat(out)
    return metrics.summarize(run.val_logits, run.val_labels)


# ----------------------------------------------------------------------------- finish
def _describe(run: Run) -> dict:
    """The checkpoint's description (common/meta.py), before the test report."""
    cfg, data = run.cfg, run.data
    return build_meta(
        model=cfg["model"], name=run.name, description=get_entry(cfg["model"]).description, notes=cfg.get("notes"),
        arch=cfg["arch"], pretrained=run.pretrained, num_params=count_params(run.model),
        class_names=data.class_names, superclass_names=data.superclass_names, superclass_of=data.superclass_of,
        data_config=run.data_cfg, recipe=cfg, history=run.history,
        split=dict(seed=cfg["seed"], val_per_class=cfg["val_per_class"], train_images=len(run.train_idx),
                   val_images=len(run.val_idx), train_indices_sha=indices_digest(run.train_idx),
                   val_indices_sha=indices_digest(run.val_idx)),
        metrics=dict(validation=metrics.summarize(run.val_logits, run.val_labels), test=None),
        data_md5=data.md5, epochs=len(run.history), train_seconds=run.elapsed,
        feature_extraction_seconds=run.feature_seconds, teacher_targets_seconds=run.teacher_seconds,
        teacher=run.teacher, distillation=distill.settings(run.cfg, run.teacher) if run.teacher else None,
        images_per_s=float(np.mean([h["images_per_s"] for h in run.history])) if run.history else None,
        device=_device_name(run.device), processor=processor(), processes=run.dist.world, amp=run.amp,
        frozen_backend=run.frozen_backend if cfg["freeze"] or cfg.get("distill_alpha") else None, command=run.command,
        git_commit=run.commit, torch_version=torch.__version__, malloc=run.malloc,
        created=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    )


def finish(run: Run, out_dir="checkpoints", run_test: bool = True) -> dict:
    """Validation metrics, the test report of the shipped fp16 weights, and the checkpoint (rank 0)."""
    data = run.data
    average = _choose_average(run) if run.ema else None
    if run.val_logits is None:
        validate(run)
    meta = _describe(run)
    if average:
        meta["weight_average"] = average
    state = half_state_dict(run.model)  # shipped weights are fp16
    report = None
    if run_test:  # the shipped fp16 weights, in fp32 compute, on the test set: the figures people will see
        t0 = time.perf_counter()
        clf = classifier_from_state(meta, state, run.device)
        val = data.train.take(torch.as_tensor(run.val_idx))
        report = evaluate_classifier(clf, data.test.take(run.test_idx), batch_size=250, val_split=val)
        meta["metrics"]["test"] = report["summary"]
        meta["calibration"] = report["calibration"]  # temperature fitted on validation only
        meta["test_seconds"] = time.perf_counter() - t0
    # Wall clock of the whole run, each phase summed over interruptions (feature or teacher-target parts, epochs,
    # test).
    phases = dict(feature_extraction=run.feature_seconds, teacher_targets=run.teacher_seconds, training=run.elapsed,
                  test=meta.get("test_seconds"))
    meta["wall_clock_seconds"] = dict(phases, total=sum(v or 0 for v in phases.values()))
    weights, js = save_checkpoint(Path(out_dir) / run.name, state, meta)
    if report is not None:
        save_report(report_path(js), report)
    print(f"wrote {weights} and {js}; validation {meta['metrics']['validation']}, test {meta['metrics']['test']}")
    return meta


def _choose_average(run: Run) -> dict:
    """The weight average or the raw weights, whichever scored higher on validation after the last epoch (the
    average on a tie, or when the raw weights were not validated); the module keeps the chosen ones."""
    last = run.history[-1] if run.history else {}
    avg, raw = last.get("val_acc"), last.get("val_acc_raw")
    use = raw is None or avg is None or avg >= raw
    if use:
        run.ema.copy_to_module()
    else:
        run.val_logits = None  # they were the average's
    out = dict(decay=run.ema.decay, steps=run.ema.step, shipped="average" if use else "raw weights",
               val_top1_average=avg, val_top1_raw=raw)
    run.ema = None
    _say(run, f"weight average: validation {avg} (average) against {raw} (raw weights); shipping {out['shipped']}")
    return out


def _device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    import platform

    return f"cpu ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"


SPEED_FLAGS = ("avx", "avx2", "fma", "avx512f", "avx512_vnni", "avx512_bf16", "amx_tile", "amx_bf16", "amx_int8")


def processor() -> dict:
    """The CPU a run had (`lscpu`'s model name, and the flags that set our speed: bf16 autocast needs AVX-512 bf16
    or AMX), read from /proc/cpuinfo; on other systems what `platform` knows."""
    import os
    import platform

    info = dict(model=platform.processor() or platform.machine(), logical_cpus=os.cpu_count(), flags=None)
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        return info
    fields = {k.strip(): v.strip() for k, _, v in (line.partition(":") for line in lines) if k.strip()}
    flags = set(fields.get("flags", "").split())
    return dict(info, model=fields.get("model name", info["model"]), flags=[f for f in SPEED_FLAGS if f in flags])


def _say(run: Run, text: str) -> None:
    if run.dist.is_main:
        tqdm.write(text)
        sys.stdout.flush()


# ----------------------------------------------------------------------------- all of it
def _epochs(run: Run, tracker: "WandbLogger | None") -> None:
    """The remaining epochs, each saved (and tracked) when done."""
    for epoch in range(len(run.history), run.cfg["epochs"]):
        row = run_epoch(run, epoch)
        run.elapsed += row["seconds"]
        run.history.append(row)
        if run.dist.is_main:
            _say(run, f"epoch {row['epoch']:3d}/{run.cfg['epochs']}  train loss {row['train_loss']:.3f} acc "
                      f"{row['train_acc']:.4f}  val loss {row['val_loss']:.3f} acc {row['val_acc']:.4f}  "
                      + (f"(raw weights {row['val_acc_raw']:.4f})  " if "val_acc_raw" in row else "")
                      + f"{row['seconds']:.1f}s  {row['images_per_s']:.0f} img/s")
        if tracker:
            tracker.log_epoch(row)
        save_state(run)


def train(cfg: dict, data_dir=None, out_dir="checkpoints", run_dir="runs", name: str | None = None,
          restart: bool = False, run_test: bool = True, verify_md5: bool = True, command: str | None = None,
          tracker: "WandbLogger | None" = None):
    """Train per cfg (a resolved recipe), write the checkpoint; return its metadata (None on ranks > 0).
    tracker (tracking.WandbLogger): experiment tracking, from rank 0 only."""
    run = setup(cfg, data_dir, run_dir, name, verify_md5, command)
    resumed = resume(run, restart)
    if resumed:
        _say(run, resumed)
    tracker = tracker if run.dist.is_main else None
    if tracker:
        tracker.start(run.cfg, run.name, dict(processes=run.dist.world, device=str(run.device), command=command))
        for row in run.history:  # epochs done before an interruption
            tracker.log_epoch(row)
    try:
        _epochs(run, tracker)
        meta = finish(run, out_dir, run_test) if run.dist.is_main else None
        if tracker:
            tracker.finish(meta["metrics"], checkpoint_paths(Path(out_dir) / run.name), run.data.md5,
                           dict(temperature=(meta.get("calibration") or {}).get("temperature")))
    except BaseException:
        if tracker:
            tracker.abort()  # the tracked run is marked failed; the same command resumes the training
        raise
    run.dist.barrier()
    run.dist.close()
    return meta
