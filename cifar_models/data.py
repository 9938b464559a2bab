"""CIFAR-100: find or download the python-version files, check them, split them, augment batches.

Images stay uint8 (N, 3, 32, 32) tensors everywhere until `to_model_input`, the single place
where pixels become the model's input (resize to its input size + normalisation). Training,
evaluation and the app's inference all go through it, so they cannot drift apart.
"""
from __future__ import annotations

import functools
import hashlib
import os
import pickle
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from .common.errors import UserError

# The md5 sums torchvision's CIFAR100 checks (the original files from cs.toronto.edu).
CIFAR100_MD5 = {
    "train": "16019d7e3df5f24257cddd939b257f8d",
    "test": "f0ef6b0ae62326f3e7ffdfab6717acfc",
    "meta": "7973b15100ade9c7d40fb424638fde48",
}
CIFAR100_MEAN = (0.5071, 0.4865, 0.4409)
CIFAR100_STD = (0.2673, 0.2564, 0.2762)
DEFAULT_DATA_DIR = "data/cifar-100-python"


class DataError(UserError, RuntimeError):
    """The data set is missing or not the file it should be; the message says what to do."""


@dataclass
class Split:
    images: torch.Tensor  # uint8 (N, 3, 32, 32)
    labels: torch.Tensor  # int64 (N,)
    coarse: torch.Tensor  # int64 (N,)

    def __len__(self) -> int:
        return len(self.labels)

    def take(self, idx) -> "Split":
        idx = torch.as_tensor(idx, dtype=torch.long)
        return Split(self.images[idx], self.labels[idx], self.coarse[idx])

    def to(self, device) -> "Split":
        return Split(self.images.to(device), self.labels.to(device), self.coarse.to(device))


@dataclass
class Cifar100:
    train: Split
    test: Split
    class_names: list[str]
    superclass_names: list[str]
    superclass_of: list[int]  # superclass index of each of the 100 classes
    md5: dict[str, str]
    root: str


def resolve_data_dir(data_dir: str | os.PathLike | None = None) -> Path:
    """--data-dir, else $CIFAR100_DIR, else ./data/cifar-100-python. A parent folder also works."""
    path = Path(data_dir or os.environ.get("CIFAR100_DIR") or DEFAULT_DATA_DIR).expanduser()
    if not (path / "meta").exists() and (path / "cifar-100-python" / "meta").exists():
        path = path / "cifar-100-python"
    return path


def file_md5(path: Path, chunk: int = 1 << 20) -> str:
    h = hashlib.md5()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def check_md5(root: Path, expected: dict[str, str] | None = CIFAR100_MD5) -> dict[str, str]:
    """md5 of train/test/meta; raises DataError naming the first file that is missing or wrong."""
    sums = {}
    for name in ("train", "test", "meta"):
        path = root / name
        if not path.is_file():
            raise DataError(f"CIFAR-100 file {path} is missing. Pass --data-dir (or set CIFAR100_DIR) to the "
                            f"folder holding train, test and meta, or run online to download it.")
        sums[name] = file_md5(path)
        if expected and sums[name] != expected[name]:
            raise DataError(
                f"CIFAR-100 file {path} has md5 {sums[name]}, expected {expected[name]}: it is damaged or not the "
                f"original. Delete {root} and download it again (run online without --data-dir, or fetch "
                f"cifar-100-python.tar.gz from https://www.cs.toronto.edu/~kriz/cifar.html).")
    return sums


def download(root: Path) -> None:
    """torchvision's normal download into root's parent (root is the cifar-100-python folder)."""
    from torchvision.datasets import CIFAR100  # only needed online, so imported lazily

    parent = root.parent if root.name == "cifar-100-python" else root
    try:
        CIFAR100(root=str(parent), train=True, download=True)
    except Exception as e:  # offline, proxy, disk full...
        raise DataError(f"CIFAR-100 is not at {root} and downloading it failed ({e}). Pass --data-dir or set "
                        f"CIFAR100_DIR to a folder holding train, test and meta.") from e


def _read(path: Path) -> dict:
    with open(path, "rb") as f:  # the data set's own format (trusted after the md5 check)
        return pickle.load(f, encoding="latin1")


def _split(d: dict) -> Split:
    images = np.asarray(d["data"], dtype=np.uint8).reshape(-1, 3, 32, 32)
    return Split(torch.from_numpy(images.copy()), torch.tensor(d["fine_labels"], dtype=torch.long),
                 torch.tensor(d["coarse_labels"], dtype=torch.long))


def load_cifar100(data_dir=None, *, verify: bool = True, download_if_missing: bool = True) -> Cifar100:
    """Load all of CIFAR-100 as uint8 tensors (about 180 MB). `verify=False` skips the md5 check
    (for other files in the same format, such as the tests' fixture)."""
    root = resolve_data_dir(data_dir)
    if not (root / "meta").exists() and download_if_missing:
        download(root)
        root = resolve_data_dir(root)
    md5 = check_md5(root, CIFAR100_MD5 if verify else None)
    meta = _read(root / "meta")
    train, test = _split(_read(root / "train")), _split(_read(root / "test"))
    superclass_of = [0] * len(meta["fine_label_names"])
    for fine, coarse in zip(train.labels.tolist(), train.coarse.tolist()):
        superclass_of[fine] = coarse
    return Cifar100(train, test, list(meta["fine_label_names"]), list(meta["coarse_label_names"]),
                    superclass_of, md5, str(root))


def load_test_images(data_dir=None) -> torch.Tensor | None:
    """CIFAR-100's test images (uint8, N x 3 x 32 x 32) when the files are on this machine, else None: for
    showing test images, never for measuring (no md5 check, no download)."""
    path = resolve_data_dir(data_dir) / "test"
    try:
        return _split(_read(path)).images if path.is_file() else None
    except Exception:
        return None


def _hash_order(indices: np.ndarray, seed: int) -> np.ndarray:
    """A seeded shuffle that never changes across numpy/torch versions: sort by md5(seed, index)."""
    keys = [hashlib.md5(f"{seed}:{i}".encode()).digest() for i in indices.tolist()]
    return indices[np.argsort(np.array(keys, dtype="S16"), kind="stable")]


def stratified_split(labels, per_class: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(rest, held_out): `per_class` images of every class held out, chosen by a fixed seeded order."""
    labels = np.asarray(labels)
    held = []
    for c in np.unique(labels):
        held.append(_hash_order(np.flatnonzero(labels == c), seed)[:per_class])
    held = np.sort(np.concatenate(held))
    rest = np.setdiff1d(np.arange(len(labels)), held)
    return rest, held


def stratified_subset(labels, n: int, seed: int = 0) -> np.ndarray:
    """About n indices, the same number from every class (at least one each)."""
    labels = np.asarray(labels)
    per_class = max(1, n // len(np.unique(labels)))
    return stratified_split(labels, per_class, seed)[1]


def indices_digest(idx) -> str:
    return hashlib.sha256(np.asarray(idx, dtype=np.int64).tobytes()).hexdigest()[:16]


# ----------------------------------------------------------------------------- batch transforms
PHOTO_FACTORS = (2, 3, 4)  # upscale factors of the photo round trip (the blur converges beyond 4)


def draw_augment(n: int, generator: torch.Generator, pad: int = 4, flip: bool = True, photo: float = 0.0) -> dict:
    """The random choices of a crop-and-flip augmentation for n images, drawn on the CPU from `generator`:
    dy, dx (crop offsets in 0..2*pad), flip (bool) and, with photo > 0, `resample`: for that share of the
    images an upscale factor of the photo round trip (0: none). Drawn once per epoch for the whole set, so
    every image gets the same choice whatever the batch size, process count or device."""
    dy = torch.randint(0, 2 * pad + 1, (n,), generator=generator) if pad else torch.zeros(n, dtype=torch.long)
    dx = torch.randint(0, 2 * pad + 1, (n,), generator=generator) if pad else torch.zeros(n, dtype=torch.long)
    fl = torch.rand(n, generator=generator) < 0.5 if flip else torch.zeros(n, dtype=torch.bool)
    out = dict(dy=dy, dx=dx, flip=fl)
    if photo:
        factor = torch.tensor(PHOTO_FACTORS)[torch.randint(0, len(PHOTO_FACTORS), (n,), generator=generator)]
        out["resample"] = torch.where(torch.rand(n, generator=generator) < photo, factor, 0)
    return out


def photo_round_trip(images: torch.Tensor, factors: torch.Tensor) -> torch.Tensor:
    """What happens to a 32 px picture that reaches the app as a photo: upscaled (bicubic) by `factor`, then
    brought back down by area averaging, as `inference.to_cifar_uint8` does. Per image; factor 0 = untouched."""
    factors = factors.to(images.device)
    out = images.clone()
    for k in factors.unique().tolist():
        if k:
            sel = factors == k
            up = F.interpolate(images[sel].float(), scale_factor=k, mode="bicubic", align_corners=False)
            out[sel] = F.avg_pool2d(up.clamp_(0, 255), k).round_().to(torch.uint8)
    return out


def apply_augment(images: torch.Tensor, params: dict, pad: int = 4) -> torch.Tensor:
    """Random crop with zero padding and horizontal flip of a whole uint8 batch, on its device."""
    n, c, h, w = images.shape
    dev = images.device
    if pad:
        padded = F.pad(images, (pad, pad, pad, pad))
        dy, dx = params["dy"].to(dev), params["dx"].to(dev)
        rows = (dy[:, None] + torch.arange(h, device=dev))[:, None, :, None]
        cols = (dx[:, None] + torch.arange(w, device=dev))[:, None, None, :]
        images = padded[torch.arange(n, device=dev)[:, None, None, None],
                        torch.arange(c, device=dev)[None, :, None, None], rows, cols]
    mask = params["flip"].to(dev)
    images = torch.where(mask[:, None, None, None], images.flip(3), images)
    if "resample" in params:
        images = photo_round_trip(images, params["resample"])
    return images


def augment(images: torch.Tensor, generator: torch.Generator, pad: int = 4, flip: bool = True) -> torch.Tensor:
    """draw_augment + apply_augment for one batch."""
    return apply_augment(images, draw_augment(len(images), generator, pad, flip), pad)


def to_model_input(images: torch.Tensor, data_cfg: dict) -> torch.Tensor:
    """uint8 (N, 3, h, w) -> normalised float at the model's input size, channels_last.

    data_cfg holds input_size, interpolation, mean and std: the values saved in every checkpoint."""
    x = images.float().div_(255)
    size = int(data_cfg["input_size"])
    if x.shape[-2:] != (size, size):
        mode = data_cfg.get("interpolation", "bilinear")
        x = F.interpolate(x, size=(size, size), mode=mode, align_corners=False if mode != "nearest" else None)
        x = x.clamp_(0, 1)
    mean, std = _mean_std(tuple(data_cfg["mean"]), tuple(data_cfg["std"]), x.device)
    return ((x - mean) / std).contiguous(memory_format=torch.channels_last)


@functools.lru_cache(maxsize=16)
def _mean_std(mean: tuple, std: tuple, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Normalisation constants, made once per device (not a host-to-device copy every training step)."""
    return (torch.tensor(mean, device=device).view(1, -1, 1, 1), torch.tensor(std, device=device).view(1, -1, 1, 1))
