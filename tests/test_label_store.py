"""The label store and the queue order: durable saves, the CSV train reads, hand-written CSVs
respected, two writers at once, refused labels; no model, no web server."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from captcha_ocr.data import read_labels_file
from captcha_ocr.errors import CaptchaOCRError
from captcha_ocr.label.queue import Suggestion, queue_order, shuffled_ranks
from captcha_ocr.label.store import JOURNAL_FILE, LabelError, LabelStore, UnknownImage


def make_images(folder: Path, count: int = 6) -> Path:
    """``count`` small PNGs with neutral names (one in a subfolder) and a broken one."""
    (folder / "sub").mkdir(parents=True)
    rng = np.random.default_rng(0)
    for i in range(count):
        path = folder / ("sub" if i == 0 else "") / f"img{i}.png"
        Image.fromarray(rng.integers(0, 255, (20, 60), np.uint8)).save(path)
    (folder / "broken.png").write_bytes(b"not an image")
    return folder


@pytest.fixture
def images(tmp_path: Path) -> Path:
    return make_images(tmp_path / "images")


def open_store(images: Path, tmp_path: Path, charset: str | None = None) -> LabelStore:
    return LabelStore(images, images / "labels.csv", tmp_path / "work", charset)


def by_rel(store: LabelStore, rel: str) -> str:
    return next(i.id for i in store.images if i.rel == rel)


def test_saves_land_in_the_csv_that_train_reads(images: Path, tmp_path: Path) -> None:
    store = open_store(images, tmp_path)
    assert [i.rel for i in store.images] == [f"img{i}.png" for i in range(1, 6)] + ["sub/img0.png"]
    assert [s.path for s in store.skipped] == ["broken.png"]
    store.save(by_rel(store, "sub/img0.png"), "ab1")
    store.save(by_rel(store, "img2.png"), "x,y")  # a comma is quoted, not a new column
    text = (images / "labels.csv").read_text()
    assert text.splitlines()[0] == "path,label" and "sub/img0.png,ab1" in text
    assert {(Path(s.path), s.label) for s in read_labels_file(images / "labels.csv")} == {
        (images / "sub" / "img0.png", "ab1"),
        (images / "img2.png", "x,y"),
    }
    # the journal lives in the work folder, and is empty once folded
    assert sorted(p.name for p in images.iterdir()) == [
        "broken.png", "img1.png", "img2.png", "img3.png", "img4.png", "img5.png", "labels.csv", "sub",
    ]  # fmt: skip
    assert (tmp_path / "work" / JOURNAL_FILE).read_text() == ""
    store.remove(by_rel(store, "img2.png"))
    assert "img2.png" not in (images / "labels.csv").read_text()
    assert store.labeled_count() == 1 and len(store.unlabeled()) == 5


def test_journal_entries_not_yet_folded_are_folded_at_start(images: Path, tmp_path: Path) -> None:
    """A crash after the journal's fsync and before the CSV's replace loses nothing; a torn
    last line (the crash hit the journal write: that save never answered) is dropped."""
    store = open_store(images, tmp_path)
    store.save(by_rel(store, "img1.png"), "old")
    journal = tmp_path / "work" / JOURNAL_FILE
    lines = [
        json.dumps({"path": "img3.png", "label": "abc"}),
        json.dumps({"path": "img1.png", "label": None}),  # an un-label is an entry too
        '{"path": "img4.png", "lab',
    ]
    journal.write_text("\n".join(lines) + "\n")
    again = open_store(images, tmp_path)
    assert again.label(by_rel(again, "img3.png")) == "abc"
    assert again.label(by_rel(again, "img1.png")) is None
    assert again.label(by_rel(again, "img4.png")) is None
    assert "img3.png,abc" in (images / "labels.csv").read_text()
    assert journal.read_text() == ""


def test_a_damaged_journal_line_before_the_last_is_an_error(images: Path, tmp_path: Path) -> None:
    (tmp_path / "work").mkdir()
    (tmp_path / "work" / JOURNAL_FILE).write_text('garbage\n{"path": "img1.png", "label": "a"}\n')
    with pytest.raises(CaptchaOCRError, match=r"journal\.jsonl:1 is damaged"):
        open_store(images, tmp_path)


def test_a_hand_written_csv_is_respected(images: Path, tmp_path: Path) -> None:
    (images / "labels.csv").write_text(
        "path,label\nimg1.png,hand\n/elsewhere/other.png,kept\nsub/img0.png,zz\n"
    )
    store = open_store(images, tmp_path)
    assert store.label(by_rel(store, "img1.png")) == "hand" and store.labeled_count() == 2
    store.save(by_rel(store, "img2.png"), "new")
    text = (images / "labels.csv").read_text()
    assert (
        "img1.png,hand" in text and "/elsewhere/other.png,kept" in text and "img2.png,new" in text
    )
    # another tool rewrites the CSV while the app runs: its rows win over the store's old ones
    (images / "labels.csv").write_text("path,label\nimg5.png,tool\n")
    store.save(by_rel(store, "img3.png"), "mine")
    rows = {Path(s.path).name: s.label for s in read_labels_file(images / "labels.csv")}
    assert rows == {"img5.png": "tool", "img3.png": "mine"}


def test_a_bad_csv_is_a_clear_error(images: Path, tmp_path: Path) -> None:
    (images / "labels.csv").write_text("path,label\njust-one-column\n")
    with pytest.raises(CaptchaOCRError, match=r"labels.csv:2: expected 'path,label'"):
        open_store(images, tmp_path)


def test_refused_labels(images: Path, tmp_path: Path) -> None:
    store = open_store(images, tmp_path, charset="abc123")
    image = by_rel(store, "img1.png")
    for label, message in (
        ("abz", r"'z' in 'abz' is not in the charset 'abc123'"),
        ("", "empty"),
        (" ab", "starts or ends with a space"),
        ("a\nb", "control character"),
    ):
        with pytest.raises(LabelError, match=message):
            store.save(image, label)
    with pytest.raises(UnknownImage):
        store.save("nope", "abc")
    assert not (images / "labels.csv").exists()  # nothing refused was written


def test_two_writers_at_once_corrupt_nothing(images: Path, tmp_path: Path) -> None:
    store = open_store(images, tmp_path)
    ids = [i.id for i in store.images]

    def write(tab: int) -> None:
        for round_ in range(20):
            for image_id in ids:
                store.save(image_id, f"t{tab}r{round_}")

    tabs = [threading.Thread(target=write, args=(tab,)) for tab in range(2)]
    for tab in tabs:
        tab.start()
    for tab in tabs:
        tab.join()
    rows = read_labels_file(images / "labels.csv")
    assert len(rows) == len(ids)  # every image once, no torn or doubled rows
    assert {s.label for s in rows} <= {"t0r19", "t1r19"}  # the last write of one tab won
    assert {s.label for s in rows} == {store.label(i) for i in ids}
    assert open_store(images, tmp_path / "again").labeled_count() == len(ids)


def test_queue_orders() -> None:
    ids = ["a", "b", "c", "d", "e"]
    ranks = shuffled_ranks(ids, seed=0)
    assert sorted(ranks.values()) == list(range(5)) and ranks == shuffled_ranks(ids, seed=0)
    suggestions = {i: Suggestion(i, c) for i, c in zip("abcd", (0.9, 0.1, 0.5, 0.7))}
    assert queue_order(ids, {}, ranks, "mix") == sorted(ids, key=ranks.get)  # before any model
    assert queue_order(ids, suggestions, ranks, "least") == ["b", "c", "d", "a", "e"]
    assert queue_order(ids, suggestions, ranks, "most") == ["a", "d", "c", "b", "e"]
    assert queue_order(ids, suggestions, ranks, "mix") == ["b", "a", "c", "d", "e"]
    assert queue_order(ids, suggestions, ranks, "random") == sorted(ids, key=ranks.get)
    with pytest.raises(ValueError, match="unknown order"):
        queue_order(ids, suggestions, ranks, "best")
