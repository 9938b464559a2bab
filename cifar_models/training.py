"""One training loop for every model and recipe.

    train(cfg)  ->  checkpoints/NAME.safetensors + NAME.json (+ NAME.eval.json with the test report)

Data lives on the training device as uint8; batches are cropped, flipped, resized and normalised
there (airbench style), never per image in Python. After every epoch the whole training state is
written atomically to runs/NAME/state.safetensors, so the same command run again after any crash
continues from the last completed epoch.
"""
from __future__ import annotations

import json
import math
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import nn
from tqdm import tqdm

from . import metrics
from .checkpoint import atomic_write_bytes, atomic_write_json, git_commit, half_state_dict, save_checkpoint
from .data import augment, indices_digest, load_cifar100, stratified_split, stratified_subset, to_model_input
from .evaluation import evaluate_classifier
from .features import cached_features, feature_cache_key
from .inference import classifier_from_state
from .models import build_model, count_params, get_spec

# Keys of the config that do not change what is trained (so a run may resume with other values).
_NOT_IDENTITY = ("device", "description")


def pick_device(name: str = "auto") -> torch.device:
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    return torch.device(name)


def use_amp(setting, device: torch.device) -> bool:
    if setting in (True, False):
        return setting
    return device.type == "cuda" or bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())


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
    raise ValueError(f"unknown optimizer {cfg['optimizer']!r}")


# ----------------------------------------------------------------------------- resumable state
def save_state(path: Path, model, opt, epoch: int, history: list, cfg: dict, elapsed: float) -> None:
    tensors = {f"model.{k}": v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    opt_sd = opt.state_dict()
    scalars = {}
    for pid, st in opt_sd["state"].items():
        for k, v in st.items():
            if torch.is_tensor(v):
                tensors[f"opt.{pid}.{k}"] = v.detach().cpu().contiguous()
            else:
                scalars[f"{pid}.{k}"] = v
    meta = dict(config=json.dumps(cfg), epoch=str(epoch), history=json.dumps(history), elapsed=str(elapsed),
                opt_groups=json.dumps(opt_sd["param_groups"]), opt_scalars=json.dumps(scalars))
    atomic_write_bytes(path, lambda tmp: save_file(tensors, str(tmp), metadata=meta))


def load_state(path: Path, model, opt) -> tuple[int, list, float]:
    from safetensors import safe_open

    with safe_open(str(path), "pt") as f:
        meta = f.metadata()
    tensors = load_file(str(path))
    model.load_state_dict({k[6:]: v for k, v in tensors.items() if k.startswith("model.")})
    state: dict = {}
    for k, v in tensors.items():
        if k.startswith("opt."):
            _, pid, name = k.split(".", 2)
            state.setdefault(int(pid), {})[name] = v
    for k, v in json.loads(meta["opt_scalars"]).items():
        pid, name = k.split(".", 1)
        state.setdefault(int(pid), {})[name] = v
    opt.load_state_dict(dict(state=state, param_groups=json.loads(meta["opt_groups"])))
    return int(meta["epoch"]), json.loads(meta["history"]), float(meta["elapsed"])


def saved_config(path: Path) -> dict:
    from safetensors import safe_open

    with safe_open(str(path), "pt") as f:
        return json.loads(f.metadata()["config"])


def identity(cfg: dict) -> dict:
    return {k: v for k, v in cfg.items() if k not in _NOT_IDENTITY}


# ----------------------------------------------------------------------------- the loop
def train(cfg: dict, data_dir=None, out_dir="checkpoints", run_dir="runs", name: str | None = None,
          restart: bool = False, run_test: bool = True, verify_md5: bool = True) -> dict:
    """Train per cfg (a resolved recipe), write the checkpoint, return its metadata."""
    name = name or cfg["model"]
    commit = git_commit()  # the code this run starts with (HEAD may move while it trains)
    cfg = json.loads(json.dumps(cfg))  # plain JSON types, exactly as saved
    device = pick_device(cfg.get("device", "auto"))
    amp = use_amp(cfg["amp"], device)
    torch.manual_seed(cfg["seed"])
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True

    # Data: split, optional subset, everything as uint8 on the device.
    data = load_cifar100(data_dir, verify=verify_md5)
    train_idx, val_idx = stratified_split(data.train.labels.numpy(), cfg["val_per_class"], cfg["seed"])
    test_idx = torch.arange(len(data.test))
    if cfg.get("subset"):
        n = int(cfg["subset"])
        train_idx = train_idx[stratified_subset(data.train.labels[train_idx].numpy(), n, cfg["seed"])]
        val_idx = val_idx[stratified_subset(data.train.labels[val_idx].numpy(), max(100, n // 10), cfg["seed"])]
        test_idx = torch.as_tensor(stratified_subset(data.test.labels.numpy(), max(100, n // 5), cfg["seed"]))
    train_set = data.train.take(train_idx).to(device)
    val_set = data.train.take(val_idx).to(device)

    spec = get_spec(cfg["model"])
    data_cfg = dict(spec.data_config, source_size=32)
    model, pretrained = build_model(cfg["model"], cfg["arch"], cfg["pretrained"], len(data.class_names))
    model = model.to(device, memory_format=torch.channels_last)
    print(f"{name}: {cfg['recipe']} on {device} (bf16 autocast: {amp}), {count_params(model):,} parameters, "
          f"{len(train_set)} train / {len(val_set)} val images, pretrained: {pretrained}")

    # What the loop trains on: augmented images through the whole model, or cached features through the head.
    if cfg["freeze_backbone"]:
        for p in model.parameters():
            p.requires_grad_(False)
        head = nn.Sequential(nn.Dropout(cfg["arch"].get("drop_rate", 0.0)), model.get_classifier())
        for p in head.parameters():
            p.requires_grad_(True)
        feats, feature_seconds = {}, 0.0
        for split_name, split, idx in (("train", train_set, train_idx), ("val", val_set, val_idx)):
            key = feature_cache_key(cfg["model"], pretrained, data_cfg, data.md5["train"], indices_digest(idx), amp)
            f, seconds = cached_features(model, split.images, data_cfg, 64, device, amp,
                                         Path(run_dir) / "feature-cache", key, f"{split_name} features")
            feats[split_name], feature_seconds = f.to(device), feature_seconds + seconds
        trainable, forward = head, head
        train_inputs = lambda idx, g: feats["train"][idx]
        val_inputs = lambda sl: feats["val"][sl]
    else:
        feature_seconds = None
        trainable, forward = model, model
        pad, flip = cfg["crop_padding"], cfg["flip"]
        train_inputs = lambda idx, g: to_model_input(augment(train_set.images[idx], g, pad, flip), data_cfg)
        val_inputs = lambda sl: to_model_input(val_set.images[sl], data_cfg)
    if cfg.get("compile"):
        forward = torch.compile(forward)

    opt = make_optimizer(trainable.parameters(), cfg)
    bs = min(cfg["batch_size"], len(train_set))
    steps_per_epoch = len(train_set) // bs
    total_steps = cfg["epochs"] * steps_per_epoch
    warmup = int(cfg["warmup_epochs"] * steps_per_epoch)

    # Resume if the same run was interrupted.
    state_path = Path(run_dir) / name / "state.safetensors"
    start_epoch, history, elapsed = 0, [], 0.0
    if state_path.exists() and not restart:
        if identity(saved_config(state_path)) != identity(cfg):
            raise SystemExit(f"{state_path} belongs to a different run configuration. Run the same command as "
                             f"before to resume it, add --restart to discard it, or use another --name.")
        start_epoch, history, elapsed = load_state(state_path, model, opt)
        print(f"resuming {name} after epoch {start_epoch}/{cfg['epochs']} ({elapsed:.0f}s done)")

    val_logits = None
    for epoch in range(start_epoch, cfg["epochs"]):
        t0 = time.perf_counter()
        trainable.train()
        g = torch.Generator().manual_seed(cfg["seed"] * 100_003 + epoch)  # per epoch: resumes reproduce exactly
        perm = torch.randperm(len(train_set), generator=g).to(device)
        loss_sum = torch.zeros((), device=device)
        correct = torch.zeros((), device=device, dtype=torch.long)
        seen = 0
        bar = tqdm(range(steps_per_epoch), desc=f"epoch {epoch + 1}/{cfg['epochs']}", unit="step",
                   dynamic_ncols=True, leave=False)
        for i in bar:
            step = epoch * steps_per_epoch + i
            lr = lr_at(step, total_steps, warmup, cfg["lr"], cfg["schedule"])
            for group in opt.param_groups:
                group["lr"] = lr
            idx = perm[i * bs:(i + 1) * bs]
            x, y = train_inputs(idx, g), train_set.labels[idx]
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
                logits = forward(x)
            loss = F.cross_entropy(logits.float(), y, label_smoothing=cfg["label_smoothing"])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            loss_sum += loss.detach() * len(y)
            correct += (logits.argmax(1) == y).sum()
            seen += len(y)
            if i % 10 == 0 or i == steps_per_epoch - 1:
                rate = seen / (time.perf_counter() - t0)
                bar.set_postfix(loss=f"{loss_sum.item() / seen:.3f}", acc=f"{correct.item() / seen:.3f}",
                                img_s=f"{rate:.0f}", lr=f"{lr:.2e}")
        if device.type == "cuda":
            torch.cuda.synchronize()
        train_seconds = time.perf_counter() - t0

        val_logits = _val_logits(forward, trainable, val_inputs, len(val_set), bs, device, amp)
        val = metrics.summarize(val_logits, val_set.labels)
        seconds = time.perf_counter() - t0
        elapsed += seconds
        history.append(dict(epoch=epoch + 1, lr=lr, train_loss=loss_sum.item() / seen, train_acc=correct.item() / seen,
                            val_loss=val["nll"], val_acc=val["top1"], seconds=seconds,
                            images_per_s=seen / train_seconds))
        tqdm.write(f"epoch {epoch + 1:3d}/{cfg['epochs']}  train loss {history[-1]['train_loss']:.3f} "
                   f"acc {history[-1]['train_acc']:.4f}  val loss {val['nll']:.3f} acc {val['top1']:.4f}  "
                   f"{seconds:.1f}s  {history[-1]['images_per_s']:.0f} img/s")
        save_state(state_path, model, opt, epoch + 1, history, cfg, elapsed)
        atomic_write_json(state_path.with_name("history.json"), dict(config=cfg, history=history))

    # Final validation metrics (the last epoch's, unless the run was already complete) and the checkpoint.
    if val_logits is None:
        val_logits = _val_logits(forward, trainable, val_inputs, len(val_set), bs, device, amp)
    meta = dict(
        model=cfg["model"], name=name, description=spec.description, notes=cfg.get("notes"), arch=cfg["arch"],
        backbone="timm tf_efficientnet_b0" if cfg["model"] == "efficientnet_b0" else "cnn9 (this project)",
        pretrained=pretrained, num_params=count_params(model),
        class_names=data.class_names, superclass_names=data.superclass_names, superclass_of=data.superclass_of,
        data_config=data_cfg, recipe=cfg, history=history,
        split=dict(seed=cfg["seed"], val_per_class=cfg["val_per_class"], train_images=len(train_set),
                   val_images=len(val_set), train_indices_sha=indices_digest(train_idx),
                   val_indices_sha=indices_digest(val_idx)),
        metrics=dict(validation=metrics.summarize(val_logits, val_set.labels), test=None),
        data_md5=data.md5, train_seconds=elapsed, feature_extraction_seconds=feature_seconds,
        device=_device_name(device), amp=amp, git_commit=commit, torch_version=torch.__version__,
        created=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    )
    state = half_state_dict(model)  # shipped weights are fp16
    report = None
    if run_test:  # the shipped fp16 weights, in fp32 compute, on the test set: the figures people will see
        clf = classifier_from_state(meta, state, device)
        report = evaluate_classifier(clf, data.test.take(test_idx), batch_size=250, val_split=val_set)
        meta["metrics"]["test"] = report["summary"]
        meta["calibration"] = report["calibration"]  # temperature fitted on validation only
    weights, js = save_checkpoint(Path(out_dir) / name, state, meta)
    if report is not None:
        atomic_write_json(js.with_name(f"{name}.eval.json"), report, indent=None)
    print(f"wrote {weights} and {js}; validation {meta['metrics']['validation']}, test {meta['metrics']['test']}")
    return meta


@torch.no_grad()
def _val_logits(forward, trainable, val_inputs, n, bs, device, amp) -> torch.Tensor:
    trainable.eval()
    out = []
    for i in range(0, n, bs):
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
            out.append(forward(val_inputs(slice(i, i + bs))).float())
    return torch.cat(out)


def _device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    import platform

    return f"cpu ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"
