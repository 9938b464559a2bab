"""Your own images: labels from folders, hostile archives read in memory only, limits, the evaluation's
figures and CSV, and the command line (`scripts/evaluate.py --images`)."""
import csv
import io
import json
import os
import shutil
import stat
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from PIL import Image

from conftest import ROOT
from cifar_models.common.user_images import (Collection, Item, Labeller, Limits, UserImagesError, decode, read_folder,
                                      read_images, read_uploads, read_zip)
from cifar_models.common.user_results import CSV_COLUMNS, evaluate, per_class, summary_lines

CLASSES = json.loads((ROOT / "checkpoints" / "cnn9.json").read_text())["class_names"]
EXAMPLES = ROOT / "examples" / "cifar"


def photo(name: str, size: int = 96) -> bytes:
    """A shipped CIFAR test image as a phone would hand it over: upscaled, JPEG."""
    buf = io.BytesIO()
    Image.open(EXAMPLES / name).convert("RGB").resize((size, size), Image.Resampling.BICUBIC).save(buf, "JPEG", quality=90)
    return buf.getvalue()


GOOD = {"photos/apple/a1.jpg": ("apple_test9.png", "apple"),
        "photos/Pickup Truck/p1.jpg": ("pickup_truck_test36.png", "pickup_truck"),
        "photos/Sun_Flower/s1.jpg": ("sunflower_test67.png", "sunflower"),
        "photos/tiger/2024/t1.jpg": ("tiger_test422.png", "tiger"),      # nearest *class* folder above
        "photos/dolphin/d1.jpg": ("dolphin_test164.png", "dolphin"),
        "photos/misc/unlabelled.jpg": ("castle_test49.png", None)}       # no class folder: unlabelled
BAD = {"photos/apple/notes.jpg": "not an image",
       "photos/apple/empty.png": "empty",
       "photos/apple/truncated.jpg": "damaged or truncated",
       "photos/apple/bomb.png": "too large to decode safely",
       "photos/apples/a2.jpg": "folder 'apples' is no CIFAR-100 class; did you mean apple?",
       "photos/bycicle/b.jpg": "did you mean bicycle?",
       "../escape.jpg": "unsafe name ('..' in its path)",
       "/tmp/absolute_evil.jpg": "unsafe name (an absolute path)",
       "photos/link.jpg": "symbolic link",
       "photos/inner.zip": "archive inside the archive",
       "photos/disguised.jpg": "an archive, not an image",
       "photos/zeros.bmp": "a possible zip bomb"}


def make_zip(path: Path) -> Path:
    """A ZIP with good photos in class folders and every kind of bad member."""
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as z:
        for member, (src, _) in GOOD.items():
            z.writestr(member, photo(src))
        z.writestr("photos/apple/notes.jpg", "this is a text file, not a picture\n")
        z.writestr("photos/apple/empty.png", b"")
        z.writestr("photos/apple/truncated.jpg", photo("apple_test9.png", 300)[:2000])
        bomb = io.BytesIO()
        Image.new("L", (10_000, 10_000)).save(bomb, "PNG")  # 100 Mpx > Pillow's 89 Mpx limit
        z.writestr(zipfile.ZipInfo("photos/apple/bomb.png"), bomb.getvalue(), zipfile.ZIP_STORED)
        z.writestr("photos/apples/a2.jpg", photo("apple_test9.png"))
        z.writestr("photos/bycicle/b.jpg", photo("bicycle_test27.png"))
        z.writestr("../escape.jpg", photo("orange_test19.png"))
        z.writestr("/tmp/absolute_evil.jpg", photo("orange_test19.png"))
        link = zipfile.ZipInfo("photos/link.jpg")
        link.create_system, link.external_attr = 3, (stat.S_IFLNK | 0o777) << 16
        z.writestr(link, "/etc/passwd")
        inner = io.BytesIO()
        with zipfile.ZipFile(inner, "w") as zi:
            zi.writestr("x.jpg", photo("orange_test19.png"))
        z.writestr("photos/inner.zip", inner.getvalue())
        z.writestr("photos/disguised.jpg", inner.getvalue(), zipfile.ZIP_STORED)
        z.writestr("photos/zeros.bmp", b"\0" * (2 << 20))  # 2 MB of zeros: compressed about 1000:1
        z.writestr("__MACOSX/photos/._a1.jpg", b"resource fork")  # system files: skipped silently
    return path


def test_folder_names_label_images_ignoring_case_spaces_dashes_and_underscores():
    label = Labeller(CLASSES)
    for folders in (["Maple Tree"], ["maple_tree"], ["MAPLE-TREE"], ["photos", "maple tree"],
                    ["maple_tree", "2024", "june"]):
        assert label(folders) == ("maple_tree", None), folders
    assert label(["photos", "camera", "2024"]) == (None, None)  # ordinary folder names: unlabelled
    assert label(["apple", "apples"])[1] == "folder 'apples' is no CIFAR-100 class; did you mean apple?"
    assert "did you mean bicycle" in label(["bycicle"])[1] and "mountain" in label(["mountains"])[1]


def test_hostile_zip_is_read_in_memory_and_every_bad_member_is_reported(tmp_path, monkeypatch):
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)  # a '../' or absolute member extracted from here would land in tmp_path or /tmp
    upload = make_zip(tmp_path / "upload.zip")
    before = set(os.listdir(tmp_path)), os.path.exists("/tmp/absolute_evil.jpg")
    photos = read_zip(upload, CLASSES)
    decoded, errors = {}, {r["file"]: r["error"] for r in photos.rejected}
    for item in photos.items:
        try:
            decoded[item.file] = decode(item)
        except ValueError as e:
            errors[item.file] = str(e)
    assert set(decoded) == set(GOOD) and {i.file: i.label for i in photos.items if i.file in GOOD} == {
        f: lab for f, (_, lab) in GOOD.items()}
    assert set(errors) == set(BAD), set(errors) ^ set(BAD)
    for file, why in BAD.items():
        assert why in errors[file], (file, errors[file])
    assert (set(os.listdir(tmp_path)), os.path.exists("/tmp/absolute_evil.jpg")) == before
    assert os.listdir(work) == [] and not (tmp_path / "escape.jpg").exists()
    assert all(min(im.size) >= 32 for im in decoded.values())


def test_limits_refuse_with_clear_messages(tmp_path):
    z = make_zip(tmp_path / "u.zip")
    with pytest.raises(UserImagesError, match="at most 3 are evaluated at once"):
        read_images(z, CLASSES, Limits(images=3))
    with pytest.raises(UserImagesError, match="MB of images, over the 0 MB limit: please split it"):
        read_images(z, CLASSES, Limits(total_bytes=10_000))
    with pytest.raises(UserImagesError, match="lists 19 entries; at most 5 are accepted"):
        read_images(z, CLASSES, Limits(entries=5))
    small = read_zip(z, CLASSES, Limits(file_bytes=5_000))
    assert any("limit per image" in r["error"] for r in small.rejected)
    (tmp_path / "not.zip").write_text("hello")
    for path, message in ((tmp_path / "not.zip", "neither a folder nor a ZIP"), (tmp_path / "nope", "does not exist")):
        with pytest.raises(UserImagesError, match=message):
            read_images(path, CLASSES)
    with pytest.raises(UserImagesError, match="no image to evaluate"):
        read_uploads([str(tmp_path / "not.zip")], CLASSES)


def test_folder_walk_labels_and_never_follows_links(tmp_path):
    root = tmp_path / "mine"
    (root / "Apple").mkdir(parents=True)
    (root / "misc").mkdir()
    (root / "Apple" / "a.jpg").write_bytes(photo("apple_test9.png"))
    (root / "misc" / "x.jpg").write_bytes(photo("castle_test49.png"))
    (root / ".hidden.jpg").write_bytes(b"skip me")
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.jpg").write_bytes(photo("tiger_test422.png"))
    os.symlink(outside / "secret.jpg", root / "Apple" / "link.jpg")
    os.symlink(outside, root / "tiger")
    photos = read_folder(root, CLASSES)
    assert {i.file: i.label for i in photos.items} == {"Apple/a.jpg": "apple", "misc/x.jpg": None}
    assert {r["file"]: r["error"] for r in photos.rejected} == {
        "Apple/link.jpg": "a symbolic link: not followed", "tiger": "a link to a folder: not followed"}


def fake_runner(answers: dict):
    """Models that answer from a table: file's first pixel colour -> each model's top-5."""
    def run(images, names):
        out = []
        for im in images:
            key = im.convert("RGB").resize((1, 1)).getpixel((0, 0))
            out.append({n: {"top": [{"label": c, "probability": 0.9 - 0.1 * j} for j, c in enumerate(answers[key][n])]}
                        for n in names})
        return out
    return run


def test_rows_csv_summary_and_pairs_from_the_answers(tmp_path):
    colours = [(250, 0, 0), (0, 250, 0), (0, 0, 250), (250, 250, 0)]
    labels = ["apple", "apple", "tiger", None]
    items = []
    for i, (c, lab) in enumerate(zip(colours, labels)):
        buf = io.BytesIO()
        Image.new("RGB", (64, 64), c).save(buf, "PNG")
        items.append(Item(f"{lab or 'x'}/{i}.png", lab, lambda b=buf.getvalue(): b, 1))
    five = ["apple", "tiger", "bear", "bed", "bee"]
    answers = {(250, 0, 0): {"a": five, "b": five[::-1]}, (0, 250, 0): {"a": five, "b": five[1:] + five[:1]},
               (0, 0, 250): {"a": five, "b": ["tiger"] + five[:4]}, (250, 250, 0): {"a": five, "b": five}}
    seen = []
    ev = evaluate(Collection(items, [dict(file="bad.jpg", error="not an image")]), fake_runner(answers), ["a", "b"],
                  chunk=3, progress=lambda done, total: seen.append((done, total)))
    assert seen == [(3, 4), (4, 4)]
    s = ev.summary()
    assert s["a"] == dict(images=4, labelled=3, top1=2 / 3, top5=1.0, top1_ci95=s["a"]["top1_ci95"],
                          top5_ci95=s["a"]["top5_ci95"])
    assert s["b"]["top1"] == 1 / 3 and s["b"]["top5"] == 1.0   # apple 5th, then 5th... tiger 1st
    rows = list(csv.DictReader(io.StringIO(ev.csv_text())))
    assert tuple(rows[0]) == CSV_COLUMNS and len(rows) == 4 * 2 + 1
    assert rows[0] == dict(file="apple/0.png", label="apple", checkpoint="a", prediction="apple", probability="0.9",
                           top5="apple|tiger|bear|bed|bee", correct="1", error="")
    assert rows[-1]["file"] == "bad.jpg" and rows[-1]["error"] == "not an image" and rows[-1]["checkpoint"] == ""
    assert [r["correct"] for r in rows if r["file"].startswith("x/")] == ["", ""]
    assert ev.disagreements() == [0, 1, 2] and ev.wrong("b") == [0, 1] and set(ev.kept) == {0, 1, 2}
    text = "\n".join(summary_lines(ev))
    assert "agree (same top-1) on 1 of 4 images" in text and "No significant difference between a and b" in text
    assert per_class(ev)[0] == [["apple", 2, "2 (100%)", "0 (0%)"], ["tiger", 1, "0 (0%)", "1 (100%)"]]


@pytest.fixture(scope="module")
def cnn9_only(tmp_path_factory):
    """The shipped cnn9 alone (fast), in a folder of its own."""
    folder = tmp_path_factory.mktemp("cnn9_only")
    for suffix in (".json", ".safetensors"):
        shutil.copy(ROOT / "checkpoints" / f"cnn9{suffix}", folder / f"cnn9{suffix}")
    return folder


def test_accuracy_equals_the_per_image_predictions(cnn9_only, tmp_path):
    from cifar_models.serve.host import LocalModels
    from cifar_models.common.images import open_image

    host = LocalModels(cnn9_only)
    photos = read_zip(make_zip(tmp_path / "u.zip"), CLASSES)
    ev = evaluate(photos, host.evaluate_images, ["cnn9"], chunk=4)
    by_file = {i.file: i for i in photos.items}
    right = 0
    for row in ev.rows():  # the same answer as one /predict per image (the app's path: open_image, predict)
        single = host.predict(open_image(by_file[row["file"]].read(), min_side=256)[0], ["cnn9"])["cnn9"]["top"]
        assert row["prediction"] == single[0]["label"] and row["probability"] == pytest.approx(single[0]["probability"], abs=1e-5)
        assert row["top5"] == "|".join(t["label"] for t in single)
        right += bool(row["correct"])
    assert ev.summary()["cnn9"]["top1"] == pytest.approx(right / 5) and ev.summary()["cnn9"]["labelled"] == 5


@pytest.mark.slow
def test_command_line_prints_figures_and_writes_the_csv(cnn9_only, tmp_path):
    z = make_zip(tmp_path / "u.zip")
    out = tmp_path / "rows.csv"
    run = subprocess.run([sys.executable, str(ROOT / "scripts" / "evaluate.py"), "--images", str(z), "--checkpoint-dir",
                          str(cnn9_only), "--csv", str(out)], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    assert "cnn9: 6 images, 5 labelled; top-1 " in run.stdout and "(95% CI " in run.stdout, run.stdout
    rows = list(csv.DictReader(out.open()))
    assert tuple(rows[0]) == CSV_COLUMNS
    assert {r["file"] for r in rows if r["checkpoint"]} == set(GOOD)
    assert {r["file"]: r["error"] for r in rows if r["error"]}.keys() == set(BAD)
    assert sorted(os.listdir(tmp_path)) == ["rows.csv", "u.zip"]  # nothing extracted, nothing escaped
    for args, message in ((["--images", str(tmp_path / "missing.zip")], "does not exist"),
                          (["--images", str(out)], "neither a folder nor a ZIP"),
                          (["--images", str(z), "--checkpoint-dir", str(tmp_path / "none")], "does not exist")):
        bad = subprocess.run([sys.executable, str(ROOT / "scripts" / "evaluate.py"), *args], capture_output=True,
                             text=True, timeout=300)
        assert bad.returncode == 2 and message in bad.stderr and "Traceback" not in bad.stderr, bad.stderr


def test_bulk_items_share_calls_and_give_way_to_single_requests():
    import threading
    import time

    from cifar_models.serve.batching import MicroBatcher

    calls, started = [], threading.Event()

    def fn(items):
        calls.append(list(items))
        started.set()
        time.sleep(0.2)
        return [x * 10 for x in items]

    batcher = MicroBatcher(fn, max_batch=4)
    bulk = []
    worker = threading.Thread(target=lambda: bulk.extend(batcher.submit_many(list(range(12)))))
    worker.start()
    started.wait(5)
    assert batcher.submit(-1) == -10  # a visitor arrives while the first bulk call runs
    worker.join(10)
    assert bulk == [x * 10 for x in range(12)]
    assert calls[0] == [0, 1, 2, 3] and calls[1] == [-1]  # served alone, right after the running bulk call
    assert sorted(x for c in calls[2:] for x in c) == list(range(4, 12)) and all(len(c) <= 4 for c in calls)
