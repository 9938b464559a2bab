"""A person's own labelled photos: a folder, a ZIP, or a few uploaded files, read safely and labelled from
their folders. Torch-free: the dashboard's web process reads and decodes them (with Pillow, exactly like an
upload, `images.open_image`), then hands the images to the models.

    photos = read_images("my_photos.zip", classes)   # or a folder, or read_uploads([...])
    photos.items      # [Item(file="apple/IMG_1.jpg", label="apple")...]  decoded one at a time: decode(item)
    photos.rejected   # [{"file": "apples/x.jpg", "error": "folder 'apples' is no CIFAR-100 class; did you mean apple?"}]

**Labels.** An image is labelled by the nearest enclosing folder named after a class, compared ignoring case,
spaces, '-' and '_' (`Maple Tree/`, `maple_tree/`, `MAPLE-TREE/`). Walking up from the file, a folder whose
name is close to a class without being one (difflib ratio >= 0.8: `apples/`, `bycicle/`) rejects the image with
the closest names suggested (a typo would otherwise silently unlabel it); any other folder (`photos/`, `2024/`)
is passed over. An image under no class folder is unlabelled (evaluated, counted in no accuracy).

**Hostile archives.** A ZIP is never extracted: members are read into memory one at a time, when decoded. Names
with '..', absolute names, links, encrypted members and archives inside the archive are reported and never
read. Limits (`Limits`): images per collection, bytes per file, total bytes, compression ratio per member
(zip bombs), entries in the archive's directory; pixels per image are Pillow's limit, as for any upload.
"""
from __future__ import annotations

import difflib
import os
import re
import stat
import zipfile
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Callable, Iterable

from PIL import Image

from .images import ImageInputError, open_image


class UserImagesError(ValueError):
    """The whole collection cannot be used (not a ZIP, over a limit...); the message is for the person."""


@dataclass(frozen=True)
class Limits:
    images: int = 2000                  # images evaluated at once (a collection with more is refused)
    file_bytes: int = 20 << 20          # one image (as the dashboard's upload limit)
    total_bytes: int = 512 << 20        # all images together, uncompressed
    ratio: float = 100.0                # uncompressed / compressed size of one ZIP member (photos: about 1)
    entries: int = 20000                # entries in a ZIP's directory (files and folders)


LIMITS = Limits()
ARCHIVE_SUFFIXES = (".zip", ".tar", ".gz", ".tgz", ".bz2", ".xz", ".7z", ".rar", ".jar", ".zst")
ARCHIVE_MAGIC = (b"PK\x03\x04", b"\x1f\x8b", b"BZh", b"\xfd7zXZ", b"7z\xbc\xaf", b"Rar!", b"\x28\xb5\x2f\xfd")
SKIPPED = ("__MACOSX", "Thumbs.db", "desktop.ini")  # and names starting with '.': system files, not reported
MIN_SIDE = 256  # decoded at reduced scale, keeping this many pixels on the short side (as the app does)


@dataclass
class Item:
    """One image to evaluate: where it is, its label (a class name, or None), and how to read its bytes."""
    file: str
    label: str | None
    read: Callable[[], bytes] = field(repr=False)
    size: int = 0  # bytes (uncompressed), for the total limit


@dataclass
class Collection:
    items: list[Item] = field(default_factory=list)
    rejected: list[dict] = field(default_factory=list)  # {"file", "error"}

    def reject(self, file: str, error: str) -> None:
        self.rejected.append(dict(file=file, error=error))

    def extend(self, other: "Collection") -> None:
        self.items += other.items
        self.rejected += other.rejected


def normalise(name: str) -> str:
    """A folder or class name compared ignoring case, spaces, '-' and '_'."""
    return re.sub(r"[\s_\-]+", "", name).lower()


class Labeller:
    """Folder names -> a class name, an error (a near miss, with suggestions), or nothing."""

    def __init__(self, classes: Iterable[str], cutoff: float = 0.8):
        self.classes = {normalise(c): c for c in classes}
        self.cutoff = cutoff

    def suggestions(self, folder: str, n: int = 3) -> list[str]:
        """The classes a folder name nearly is: difflib ratio >= cutoff, the same letters in another order
        (`bycicle`), or a plural (`mountains`); [] for an ordinary folder name (`photos`, `camera`)."""
        key = normalise(folder)
        close = difflib.get_close_matches(key, list(self.classes), n=n, cutoff=self.cutoff)
        close += [c for c in self.classes if len(c) >= 4 and c != key and sorted(c) == sorted(key)]
        close += [key[:-k] for k in (1, 2) if key[:-k] in self.classes and key.endswith("ses"[-k:])]
        return [self.classes[c] for c in dict.fromkeys(close)][:n]

    def __call__(self, folders: Iterable[str]) -> tuple[str | None, str | None]:
        """`folders`: the file's enclosing folder names, outermost first. Returns (label, error)."""
        for folder in reversed(list(folders)):
            key = normalise(folder)
            if key in self.classes:
                return self.classes[key], None
            close = self.suggestions(folder)
            if close:
                return None, f"folder '{folder}' is no CIFAR-100 class; did you mean {' or '.join(close)}?"
        return None, None


def _skipped(parts: tuple[str, ...]) -> bool:
    return any(p in SKIPPED or p.startswith(".") for p in parts)


def _bounded_read(read: Callable[[int], bytes], name: str, limit: int) -> bytes:
    data = read(limit + 1)
    if len(data) > limit:
        raise ImageInputError(f"{name} is over the {limit / 2 ** 20:.0f} MB limit per image.")
    return data


def unsafe_name(name: str) -> str | None:
    """Why an archive member's name could escape a folder it were extracted to ('..', absolute), else None."""
    if name.startswith(("/", "\\")) or re.match(r"^[A-Za-z]:", name):
        return "an absolute path"
    if ".." in re.split(r"[\\/]", name):
        return "'..' in its path"
    return None


def member_problem(info: zipfile.ZipInfo, limits: Limits = LIMITS) -> str | None:
    """Why a ZIP member is not read (checked on the archive's directory, before reading a byte of it), else None."""
    if stat.S_ISLNK(info.external_attr >> 16):
        return "a symbolic link inside the archive: not followed"
    if info.flag_bits & 0x1:
        return "encrypted: not read"
    if info.filename.lower().endswith(ARCHIVE_SUFFIXES):
        return "an archive inside the archive: not opened"
    if info.file_size == 0:
        return "empty (0 bytes)"
    if info.file_size > limits.file_bytes:
        return (f"{info.file_size / 2 ** 20:.1f} MB uncompressed, over the {limits.file_bytes / 2 ** 20:.0f} MB "
                f"limit per image")
    ratio = info.file_size / info.compress_size if info.compress_size else float("inf")
    if ratio > limits.ratio:
        return (f"compressed {ratio:,.0f}:1, over the {limits.ratio:.0f}:1 limit per file (a possible zip bomb): "
                f"not read")
    return None


def _read_member(zf: zipfile.ZipFile, info: zipfile.ZipInfo, limits: Limits) -> bytes:
    try:
        with zf.open(info) as f:  # zipfile stops at the declared size and checks the CRC at the end
            return _bounded_read(f.read, info.filename, limits.file_bytes)
    except (zipfile.BadZipFile, EOFError, OSError, RuntimeError, NotImplementedError, ValueError) as e:
        raise ImageInputError(f"{info.filename} could not be read from the archive ({e}).") from None


def read_zip(source, classes: Iterable[str], limits: Limits = LIMITS, prefix: str = "",
             name: str | None = None) -> Collection:
    """The images of a ZIP (a path or a file object), read in memory when decoded; never extracted."""
    name = name or Path(str(source)).name
    try:
        zf = zipfile.ZipFile(source)
    except (zipfile.BadZipFile, OSError, ValueError) as e:
        raise UserImagesError(f"{name} is not a readable ZIP archive ({e}).") from None
    infos = zf.infolist()
    if len(infos) > limits.entries:
        raise UserImagesError(f"{name} lists {len(infos):,} entries; at most {limits.entries:,} are accepted.")
    label, out = Labeller(classes), Collection()
    for info in infos:
        if info.is_dir():
            continue
        shown = prefix + info.filename
        bad = unsafe_name(info.filename)
        if bad:
            out.reject(shown, f"unsafe name ({bad}): not read, nothing written")
            continue
        parts = PurePosixPath(info.filename.replace("\\", "/")).parts
        if _skipped(parts):
            continue
        problem = member_problem(info, limits)
        cls, error = label(parts[:-1])
        if problem or error:
            out.reject(shown, problem or error)
            continue
        out.items.append(Item(shown, cls, lambda info=info: _read_member(zf, info, limits), info.file_size))
    return out


def _read_file(path: str, limits: Limits) -> bytes:
    try:
        with open(path, "rb") as f:
            return _bounded_read(f.read, os.path.basename(path), limits.file_bytes)
    except OSError as e:
        raise ImageInputError(f"{os.path.basename(path)} could not be read ({e.strerror or e}).") from None


def file_problem(path: str, limits: Limits = LIMITS) -> str | None:
    """Why a file in a folder is not read (links are never followed), else None."""
    st = os.lstat(path)
    if stat.S_ISLNK(st.st_mode):
        return "a symbolic link: not followed"
    if not stat.S_ISREG(st.st_mode):
        return "not a regular file"
    if path.lower().endswith(ARCHIVE_SUFFIXES):
        return "an archive inside the folder: not opened"
    if st.st_size == 0:
        return "empty (0 bytes)"
    if st.st_size > limits.file_bytes:
        return f"{st.st_size / 2 ** 20:.1f} MB, over the {limits.file_bytes / 2 ** 20:.0f} MB limit per image"
    return None


def read_folder(root, classes: Iterable[str], limits: Limits = LIMITS) -> Collection:
    """The images under a folder (its sub-folders name the classes); links are reported, never followed."""
    root = Path(root)
    label, out = Labeller(classes), Collection()
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        rel = Path(dirpath).relative_to(root)
        for d in list(dirnames):
            if _skipped((d,)):
                dirnames.remove(d)
            elif os.path.islink(os.path.join(dirpath, d)):
                out.reject((rel / d).as_posix(), "a link to a folder: not followed")
        dirnames.sort()
        for f in sorted(filenames):
            if _skipped((f,)):
                continue
            full, shown = os.path.join(dirpath, f), (rel / f).as_posix()
            problem = file_problem(full, limits)
            cls, error = label(rel.parts)
            if problem or error:
                out.reject(shown, problem or error)
                continue
            out.items.append(Item(shown, cls, lambda full=full: _read_file(full, limits), os.path.getsize(full)))
            if len(out.items) > limits.images:  # enough to refuse it (check_totals): stop walking
                return out
    return out


def check_totals(photos: Collection, limits: Limits = LIMITS, name: str = "The upload") -> Collection:
    """UserImagesError when the collection has more images or more bytes than the limits allow."""
    if not photos.items:
        raise UserImagesError(f"{name} holds no image to evaluate" + (
            f" ({len(photos.rejected)} file(s) rejected: {photos.rejected[0]['error']}" +
            (" ...)" if len(photos.rejected) > 1 else ")") if photos.rejected else "."))
    if len(photos.items) > limits.images:
        raise UserImagesError(f"{name} holds more than {limits.images:,} images ({len(photos.items):,} or more); at "
                              f"most {limits.images:,} are evaluated at once: please split it.")
    total = sum(i.size for i in photos.items)
    if total > limits.total_bytes:
        raise UserImagesError(f"{name} holds {total / 2 ** 20:,.0f} MB of images, over the "
                              f"{limits.total_bytes / 2 ** 20:,.0f} MB limit: please split it.")
    return photos


def read_images(path, classes: Iterable[str], limits: Limits = LIMITS) -> Collection:
    """A folder or a ZIP (the command line's PATH), checked against the limits. UserImagesError if unusable."""
    path = Path(path)
    if path.is_dir():
        return check_totals(read_folder(path, classes, limits), limits, f"{path}")
    if not path.is_file():
        raise UserImagesError(f"{path} does not exist: give a folder of images or a .zip.")
    if not zipfile.is_zipfile(path):
        raise UserImagesError(f"{path} is neither a folder nor a ZIP archive.")
    return check_totals(read_zip(path, classes, limits), limits, path.name)


def read_uploads(paths: list[str], classes: Iterable[str], limits: Limits = LIMITS) -> Collection:
    """Uploaded files (the dashboard): each ZIP's images, labelled by their folders, and single images
    (unlabelled: an upload keeps no folder). ZIP members are prefixed with the ZIP's name when several files
    came."""
    out = Collection()
    for path in paths:
        base = os.path.basename(path)
        if zipfile.is_zipfile(path):
            out.extend(read_zip(path, classes, limits, prefix=f"{base}/" if len(paths) > 1 else "", name=base))
            continue
        problem = (("not a readable ZIP archive" if base.lower().endswith(".zip") else "only ZIP archives are opened")
                   if base.lower().endswith(ARCHIVE_SUFFIXES) else file_problem(path, limits))
        if problem:
            out.reject(base, problem)
        else:
            out.items.append(Item(base, None, lambda path=path: _read_file(path, limits), os.path.getsize(path)))
    return check_totals(out, limits)


def decode(item: Item) -> Image.Image:
    """The item's image as the app decodes an upload (reduced scale, first frame...). ImageInputError saying why
    it cannot be used: not an image, empty, truncated, over the pixel limit, an archive."""
    data = item.read()
    if data.startswith(ARCHIVE_MAGIC):
        raise ImageInputError("an archive, not an image: archives inside are not opened.")
    return open_image(data, name=PurePosixPath(item.file).name, min_side=MIN_SIDE)[0]
