"""A checkpoint's JSON (`checkpoints/NAME.json`): the one module that builds it, checks it, reads it and
shows it. The weights beside it (`NAME.safetensors`) are `checkpoint.py`'s.

    build_meta(...)      the description a training run writes (train/loop.py)
    seal(meta, weights)  + format, weights' file name and sha256, just before it is written
    read_meta(path)      read and checked: CheckpointError naming the file and the fix
    meta_problems(meta)  what is wrong with a description, field by field (empty when usable)
    update_meta(path)    rewrite with new fields (scripts/evaluate.py: test metrics, temperature)
    checkpoint_names(folder), title(m), model_card(m)   the folder's checkpoints, and how they are shown

No torch here: the dashboard's web process reads checkpoints' JSON through this module.
"""
from __future__ import annotations

import json
from pathlib import Path

from .errors import UserError
from .files import atomic_write_json, sha256_file
from .stats import wilson

FORMAT = "cifar-compare/1"
INTERPOLATIONS = ("nearest", "bilinear", "bicubic", "area")
HOW_TO_GET_ONE = ("Use the checkpoints shipped in checkpoints/ (git checkout -- checkpoints/) or train one: "
                  "python scripts/train.py --model MODEL")


class CheckpointError(UserError, RuntimeError):
    """A checkpoint is missing, damaged, or its two files do not belong together."""


# ----------------------------------------------------------------------------- built
def build_meta(*, model: str, name: str, description: str, arch: dict, num_params: int, class_names: list,
               superclass_names: list, superclass_of: list, data_config: dict, recipe: dict, **provenance) -> dict:
    """A checkpoint's description, from what a training run knows. `provenance`: everything else worth
    keeping (history, split, metrics, data md5, timings, device, command, commit...), stored as given.
    Raises ValueError when the result would not load (the same checks as `read_meta`)."""
    meta = dict(model=model, name=name, description=description, arch=arch, num_params=num_params,
                class_names=list(class_names), superclass_names=list(superclass_names),
                superclass_of=list(superclass_of), data_config=dict(data_config), recipe=recipe, **provenance)
    problems = meta_problems(meta, known_model=lambda _: None)
    if problems:
        raise ValueError("the checkpoint description would not load: " + "; ".join(problems))
    return meta


def seal(meta: dict, weights: Path) -> dict:
    """The description as written beside `weights`: with the format and the weights' file name and sha256."""
    return dict(meta, format=FORMAT, weights_file=Path(weights).name, weights_sha256=sha256_file(weights))


# ----------------------------------------------------------------------------- read and checked
def checkpoint_paths(path) -> tuple[Path, Path]:
    """'checkpoints/cnn9', '.../cnn9.safetensors' or '.../cnn9.json' -> (weights, json)."""
    p = Path(path)
    if p.suffix in (".safetensors", ".json"):
        p = p.with_suffix("")
    return p.with_name(p.name + ".safetensors"), p.with_name(p.name + ".json")


def read_meta(path) -> dict:
    """The JSON of checkpoint `path`, once both files exist and it is a description of this format."""
    weights, js = checkpoint_paths(path)
    for p in (weights, js):
        if not p.is_file():
            raise CheckpointError(f"checkpoint file {p} not found. {HOW_TO_GET_ONE}")
    try:
        meta = json.loads(js.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CheckpointError(f"checkpoint file {js} is not valid JSON ({e}). {HOW_TO_GET_ONE}") from e
    if not isinstance(meta, dict) or meta.get("format") != FORMAT or "model" not in meta:
        raise CheckpointError(f"{js} is not a {FORMAT} checkpoint description. {HOW_TO_GET_ONE}")
    return meta


def update_meta(path, **fields) -> dict:
    """Rewrite a checkpoint's JSON with new fields (the weights and their sha256 are untouched)."""
    meta = dict(read_meta(path), **fields)
    atomic_write_json(checkpoint_paths(path)[1], meta)
    return meta


def _is_str_list(v) -> bool:
    return isinstance(v, list) and all(isinstance(x, str) and x for x in v)


def _is_numbers(v, n) -> bool:
    return isinstance(v, (list, tuple)) and len(v) == n and all(
        isinstance(x, (int, float)) and not isinstance(x, bool) for x in v)


def _class_problems(meta: dict) -> list[str]:
    classes, supers, of = meta.get("class_names"), meta.get("superclass_names"), meta.get("superclass_of")
    bad = []
    if not _is_str_list(classes) or len(classes) < 2 or len(set(classes)) != len(classes):
        bad.append("'class_names' must be a list of at least 2 distinct names")
    if not _is_str_list(supers):
        bad.append("'superclass_names' must be a list of names")
    elif not (isinstance(of, list) and isinstance(classes, list) and len(of) == len(classes)
              and all(isinstance(i, int) and not isinstance(i, bool) and 0 <= i < len(supers) for i in of)):
        bad.append("'superclass_of' must give, per class, the index of its superclass")
    return bad


def _data_config_problems(dc) -> list[str]:
    if not isinstance(dc, dict):
        return ["'data_config' must be an object"]
    bad = []
    for key in ("input_size", "source_size"):
        v = dc.get(key, 32 if key == "source_size" else None)
        if not (isinstance(v, int) and not isinstance(v, bool) and 8 <= v <= 1024):
            bad.append(f"'data_config.{key}' must be a whole number of pixels (8-1024)")
    if dc.get("interpolation", "bilinear") not in INTERPOLATIONS:
        bad.append("'data_config.interpolation' must be " + ", ".join(INTERPOLATIONS[:-1]) + " or area")
    if not _is_numbers(dc.get("mean"), 3) or not _is_numbers(dc.get("std"), 3) or not all(x > 0 for x in dc["std"]):
        bad.append("'data_config.mean' and 'std' must be 3 numbers each (std > 0)")
    if not isinstance(dc.get("flip_average", False), bool):
        bad.append("'data_config.flip_average' must be true or false")
    return bad


def meta_problems(meta, known_model=None) -> list[str]:
    """What is wrong with a checkpoint description, for inference: an empty list when it is usable.
    `known_model(name)` raises KeyError (with the reason) for a model the registry cannot build; the
    default asks the registry (which imports torch: only the model process calls it so)."""
    if not isinstance(meta, dict):
        return ["it is not a JSON object"]
    if known_model is None:
        from ..models import get_entry as known_model
    bad = []
    try:
        known_model(str(meta.get("model")))
    except KeyError as e:
        bad.append(f"'model' is {meta.get('model')!r}: {e.args[0]}")
    if not (meta.get("arch") is None or isinstance(meta.get("arch"), dict)):
        bad.append("'arch' must be an object")
    bad += _class_problems(meta) + _data_config_problems(meta.get("data_config"))
    cal = meta.get("calibration")
    if cal is not None and not (isinstance(cal, dict) and isinstance(cal.get("temperature", 1.0), (int, float))
                                and cal.get("temperature", 1.0) > 0):
        bad.append("'calibration.temperature' must be a positive number")
    return bad


# ----------------------------------------------------------------------------- shown
def checkpoint_names(checkpoint_dir) -> list[str]:
    """Every checkpoint in a folder, by name, A-Z: NAME.json (not NAME.eval.json) or a NAME.safetensors left
    without its JSON (so that it is reported, not silently skipped). The dashboard shows the first four
    first (the shipped folder: cnn9, cnn9_distilled when present, efficientnet_b0)."""
    folder = Path(checkpoint_dir)
    names = {p.stem for p in folder.glob("*.json") if not p.name.endswith(".eval.json")}
    names |= {p.stem for p in folder.glob("*.safetensors")}
    return sorted(names)


def title(m) -> str:
    """How a checkpoint is named on screen: its registry entry's title, prefixed by the checkpoint's own
    name when that differs from the model's (cnn9_long · cnn9 · 9-layer CNN, from scratch). `m`: a
    `hosts.ModelInfo` or an `inference.Classifier`."""
    name = getattr(m, "checkpoint", m.name)
    return m.entry_title if name == m.name else f"{name} · {m.entry_title}"


def short_title(m) -> str:
    return title(m).split(" · ")[0]


def _trained_line(meta: dict) -> str:
    recipe, device, cpu = meta.get("recipe", {}), meta.get("device", "?"), meta.get("processor") or {}
    if device.startswith("cpu") and cpu.get("model"):  # the processor sets the speed (README: machines differ)
        device += f", {cpu['model']}" + (f" ({', '.join(cpu['flags'])})" if cpu.get("flags") else "")
    line = (f"- Trained {len(meta.get('history', []))} epochs in {meta.get('train_seconds', 0) / 60:.1f} min on "
            f"{device} (recipe `{recipe.get('recipe', '?')}`)")
    if meta.get("feature_extraction_seconds"):
        line += (f", plus {meta['feature_extraction_seconds'] / 60:.0f} min to extract the frozen network's "
                 f"features once")
    if meta.get("teacher_targets_seconds"):
        line += f", plus {meta['teacher_targets_seconds'] / 60:.1f} min for the teacher's targets"
    return line


def distilled_line(meta: dict) -> str | None:
    """For a distilled checkpoint, one sentence: what distillation is and which teacher it had."""
    teacher = meta.get("teacher")
    if not teacher:
        return None
    about = [x for x in (teacher.get("title"), teacher.get("test_top1") and f"{teacher['test_top1']:.2%} test top-1")
             if x]
    views = (meta.get("distillation") or {}).get("views")
    return (f"- Distilled: trained from scratch to match the soft predictions of `{teacher.get('checkpoint')}`"
            + (f" ({', '.join(about)})" if about else "")
            + f" on the same augmented views{f' ({views} per image)' if views else ''}, as well as the labels.")


def _test_line(test: dict) -> str:
    """Test top-1 with its 95% (Wilson) interval, and top-5."""
    n = int(test["n"])
    lo, hi = wilson(round(test["top1"] * n), n)
    return (f"- Test top-1 **{test['top1']:.2%}** (95% CI {lo:.1%}–{hi:.1%}), top-5 {test['top5']:.2%} "
            f"({n:,} images)")


def model_card(m) -> str:
    """A checkpoint's card (Markdown): what it is, how it was trained, its test figures and calibration."""
    meta = m.meta
    test = (meta.get("metrics") or {}).get("test") or {}
    pre = meta.get("pretrained")
    start = ("ImageNet-1k pretrained (" + (pre.get("id") or pre.get("file", "")) + ")") if pre else "from scratch"
    size = meta["data_config"]["input_size"]
    lines = [
        f"**{meta.get('recipe', {}).get('description') or meta.get('description', meta['model'])}**",
        f"- Parameters: {m.num_params / 1e6:.2f} M; input {size}x{size}"
        f"{' (and its mirror image: predictions average both)' if meta['data_config'].get('flip_average') else ''}"
        f"; starts {start}",
        _test_line(test) if test else "- Test metrics: not evaluated",
        _trained_line(meta),
    ]
    if distilled_line(meta):
        lines.append(distilled_line(meta))
    cal = meta.get("calibration")
    if cal and cal.get("test"):
        b, a = cal["test"]["before"], cal["test"]["after"]
        lines.append(f"- Calibration: temperature {cal['temperature']:.2f} fitted on the validation split; test ECE "
                     f"{b['ece']:.3f} → **{a['ece']:.3f}**, NLL {b['nll']:.3f} → **{a['nll']:.3f}**")
    if meta.get("notes"):
        lines.append(f"- ⚠️ {meta['notes']}")
    return "\n".join(lines)
