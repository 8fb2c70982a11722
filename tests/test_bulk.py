"""Bulk reading on Ray Data (``captcha_ocr.bulk``, ``predict --engine ray``) on a local Ray
with 2 CPUs, started once for the module.

The images are drawn for tests/tiny_reader.onnx (it reads back what ``tiny_reader.draw``
wrote), plus random noise (varied texts and confidences) and the 8 unreadable kinds of
tests/bad_inputs.py. Ray's answers are checked against plain ``predict``'s
(``Reader.read_batch``) on the same files: the same texts and error messages, every row exactly
once, also when an actor is killed mid-job.
"""

from __future__ import annotations

import collections
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from captcha_ocr import bulk
from captcha_ocr.bulk_io import list_images
from captcha_ocr.errors import CaptchaOCRError
from captcha_ocr.infer import Reader
from tests import tiny_reader
from tests.bad_inputs import NON_UTF8_NAME, UNREADABLE
from tests.helpers import assert_runs_without, fails, succeeds

MODEL = tiny_reader.PATH
NEEDS_RAY = "needs Ray Data: pip install 'captcha-ocr[scale]'"


@pytest.fixture(scope="module")
def local_ray():
    """A local Ray with 2 CPUs, its files in a short folder under /tmp (Ray's socket paths must
    stay under 108 bytes, which pytest's tmp paths can pass), shut down after the module."""
    ray = pytest.importorskip("ray", reason=NEEDS_RAY)
    pytest.importorskip("ray.data", reason=NEEDS_RAY)
    saved = os.environ.get("RAY_AUTH_MODE")
    os.environ["RAY_AUTH_MODE"] = "disabled"  # no token written to ~/.ray for a test instance
    temp = tempfile.mkdtemp(prefix="ray-", dir="/tmp")
    ray.init(
        num_cpus=2,
        include_dashboard=False,
        _temp_dir=temp,
        object_store_memory=200 * 2**20,
        logging_level="WARNING",
    )
    try:
        yield ray
    finally:
        ray.shutdown()
        shutil.rmtree(temp, ignore_errors=True)
        if saved is None:
            os.environ.pop("RAY_AUTH_MODE", None)
        else:
            os.environ["RAY_AUTH_MODE"] = saved


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """300 readable images in two folders (texts drawn for the tiny reader, and noise), the 8
    unreadable kinds, a non-UTF-8 file name and a file that is not an image by its suffix."""
    root = tmp_path_factory.mktemp("bulk")
    rng = np.random.default_rng(0)
    (root / "sub").mkdir()
    for i in range(200):
        text = "".join(rng.choice(list(tiny_reader.CHARSET), int(rng.integers(1, 9))))
        Image.fromarray(tiny_reader.draw(text)[..., 0], "L").save(root / f"{i:03d}_{text}.png")
    for i in range(100):
        noise = rng.integers(0, 256, (32, 100, 3), dtype=np.uint8)
        Image.fromarray(noise).save(root / "sub" / f"noise{i:03d}.jpg", quality=90)
    for i, (kind, make) in enumerate(UNREADABLE.items()):
        data, suffix = make()
        (root / "sub" / f"bad{i}_{kind.replace(' ', '_')}{suffix}").write_bytes(data)
    shutil.copy(next(root.glob("000_*.png")), root / NON_UTF8_NAME)
    (root / "notes.txt").write_text("not listed: not an image suffix\n")
    return root


def plain_predict(paths: list[str]) -> dict[str, tuple[str | None, float, str | None]]:
    """What ``predict`` reads: path -> (text, confidence, error)."""
    reader = Reader.load(MODEL, threads=1)
    found = reader.read_batch(paths, batch_size=64, skip_errors=True)
    return {path: (p.text, p.confidence, p.error) for path, p in zip(paths, found)}


def assert_same_as_predict(rows: list[dict], paths: list[str]) -> None:
    """Every path exactly once, with predict's text and error, and its confidence."""
    counts = collections.Counter(row["path"] for row in rows)
    assert sorted(counts) == sorted(paths) and set(counts.values()) == {1}
    expected = plain_predict(paths)
    for row in rows:
        text, confidence, error = expected[row["path"]]
        assert (row["text"], row["error"]) == (text, error), row["path"]
        assert row["confidence"] == pytest.approx(confidence, rel=1e-5, abs=1e-7)


def test_list_images_reads_folders_globs_and_lists(images: Path, tmp_path: Path) -> None:
    folder = list_images([str(images)])
    assert len(folder) == 300 + len(UNREADABLE) + 1 and all(os.path.isabs(p) for p in folder)
    assert not any(p.endswith("notes.txt") for p in folder)
    assert list_images([str(images / "sub" / "*.jpg")]) == sorted(
        str(p) for p in (images / "sub").glob("*.jpg")
    )
    listing = images / "list.txt"
    named = next(images.glob("000_*")).name
    # Relative to the list's folder; one image named twice; a missing one kept (an error row).
    listing.write_text(f"# a comment\n{named}\n\nsub/nope.png\n{images / named}\n")
    assert list_images([str(listing)]) == [str(images / named), str(images / "sub/nope.png")]
    with pytest.raises(CaptchaOCRError, match="does not exist"):
        list_images([str(tmp_path / "missing")])
    with pytest.raises(CaptchaOCRError, match="no images match"):
        list_images([str(tmp_path / "*.png")])


def test_list_images_and_fetch_on_an_fsspec_filesystem() -> None:
    """A URL source goes through fsspec (here its in-memory filesystem; s3fs, gcsfs the same)."""
    fsspec = pytest.importorskip("fsspec", reason=NEEDS_RAY)
    from captcha_ocr.bulk_io import fetch
    from captcha_ocr.images import ImageLoadError

    fs = fsspec.filesystem("memory")
    for name in ("a/1.png", "a/b/2.png", "a/skip.csv"):
        fs.pipe(f"/bucket/{name}", b"data")
    fs.pipe("/bucket/list.txt", b"a/1.png\nmemory:///bucket/a/b/2.png\n")
    found = list_images(["memory:///bucket/a"])
    assert found == ["memory:///bucket/a/1.png", "memory:///bucket/a/b/2.png"]
    assert list_images(["memory:///bucket/list.txt"]) == found
    assert list_images(["memory:///bucket/a/**/*.png"]) == found
    assert fetch(found[0]) == b"data"
    with pytest.raises(ImageLoadError, match="cannot fetch"):
        fetch("memory:///bucket/none.png")


def test_ray_reads_like_predict_with_error_rows(local_ray, images: Path) -> None:
    summary = bulk.read_dataset(MODEL, images, batch_size=32)
    paths = list_images([str(images)])
    assert_same_as_predict(summary.rows, paths)
    assert summary.count == len(paths) and summary.failed == len(UNREADABLE)
    assert sum(row["text"] == Path(row["path"]).stem[4:] for row in summary.rows) == 200


def test_ray_reads_file_urls_through_fsspec(local_ray, images: Path) -> None:
    """URLs are fetched in the Ray tasks (fsspec), then decoded as the same bytes would be."""
    paths = [p for p in list_images([str(images)]) if "bad" not in p][:40]
    listing = images.parent / "urls.txt"
    listing.write_text("".join(f"file://{p}\n" for p in paths) + f"file://{images}/none.png\n")
    summary = bulk.read_dataset(MODEL, listing)
    by_url = {row["path"]: row for row in summary.rows}
    expected = plain_predict(paths)
    assert [by_url[f"file://{p}"]["text"] for p in paths] == [expected[p][0] for p in paths]
    assert "cannot fetch" in by_url[f"file://{images}/none.png"]["error"]
    assert summary.count == 41 and summary.failed == 1


def test_a_killed_actor_still_gives_every_row_once(
    local_ray, images: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The first batch kills its actor's process (once, remembered by a file); Ray restarts the
    actor and runs the batch again, and no row is lost or doubled."""
    marker = tmp_path / "killed"

    class DiesOnce(bulk.ModelActor):  # defined here: Ray's pickle ships it by value
        def __call__(self, batch):
            if not marker.exists():
                marker.write_text(str(os.getpid()))
                os._exit(1)
            return super().__call__(batch)

    monkeypatch.setattr(bulk, "ModelActor", DiesOnce)
    summary = bulk.read_dataset(MODEL, images, batch_size=32, actors=1)
    assert marker.exists(), "the actor never died: the test tested nothing"
    assert_same_as_predict(summary.rows, list_images([str(images)]))


def test_more_actors_than_cpus_is_a_clear_error(local_ray, images: Path) -> None:
    with pytest.raises(CaptchaOCRError, match="actors must be 1 to 2"):
        bulk.read_dataset(MODEL, images, actors=3)  # Ray would wait for ever for the third


@pytest.mark.parametrize("suffix", [".parquet", ".jsonl"])
def test_cli_engine_ray_writes_shards(
    local_ray, images: Path, tmp_path: Path, suffix: str, capsys: pytest.CaptureFixture
) -> None:
    out = tmp_path / f"results{suffix}"
    _, err = succeeds(["predict", MODEL, images, "--engine", "ray", "--out", out], capsys, 1)
    assert f"{len(UNREADABLE)} of {300 + len(UNREADABLE) + 1} image(s) could not be read" in err
    shards = sorted(out.iterdir())
    assert [p.name for p in shards] == [f"part-00000{suffix}"]  # nothing left beside them
    assert sorted(p.name for p in tmp_path.iterdir()) == [out.name]
    if suffix == ".parquet":
        import pyarrow.parquet as pq

        table = pq.read_table(out)
        assert table.column_names == ["path", "text", "confidence", "error"]
        rows = table.to_pylist()
    else:
        rows = [json.loads(line) for line in shards[0].read_text(encoding="utf-8").splitlines()]
    # The non-UTF-8 name is written with \x escapes (Parquet and JSON hold UTF-8 only).
    escaped = NON_UTF8_NAME.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
    for row in rows:
        row["path"] = row["path"].replace(escaped, NON_UTF8_NAME)
    assert_same_as_predict(rows, list_images([str(images)]))
    fails(["predict", MODEL, images, "--engine", "ray", "--out", out], capsys, "already exists")


def test_cli_engine_ray_prints_like_predict(
    local_ray, images: Path, capsys: pytest.CaptureFixture
) -> None:
    one = sorted(images.glob("0*.png"))[:3]
    out, _ = succeeds(["predict", MODEL, *one, "--engine", "ray"], capsys)
    lines = sorted(out.splitlines())
    assert [line.split("\t")[:2] for line in lines] == [[str(p), p.stem[4:]] for p in sorted(one)]
    fails(["predict", MODEL, images / "sub/bad0_zero-byte.png", "--engine", "ray"], capsys, "check")


def test_cli_refuses_bad_ray_flags(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    image = tmp_path / "a.png"
    Image.fromarray(tiny_reader.draw("ab")[..., 0], "L").save(image)
    fails(["predict", MODEL, image, "--out", tmp_path / "r.parquet"], capsys, "--engine ray")
    pytest.importorskip("ray.data", reason=NEEDS_RAY)
    fails(["predict", MODEL, image, "--engine", "ray", "--out", "r.csv"], capsys, ".parquet")
    fails(["predict", MODEL, image, "--engine", "ray", "--threads", "2"], capsys, "--actors")


def test_without_ray_engine_ray_says_how_to_install(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    for name in [m for m in sys.modules if m == "ray" or m.startswith("ray.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` now raises ImportError
    image = tmp_path / "a.png"
    Image.fromarray(tiny_reader.draw("ab")[..., 0], "L").save(image)
    fails(["predict", MODEL, image, "--engine", "ray"], capsys, "pip install 'captcha-ocr[scale]'")
    out, _ = succeeds(["predict", MODEL, image], capsys)  # the local engine needs no Ray
    assert out.split("\t")[1] == "ab"


def test_ray_is_imported_only_when_a_bulk_read_runs() -> None:
    """The CLI and the bulk modules import without Ray (and without TensorFlow): `predict`
    and listing sources never load it."""
    code = (
        "import captcha_ocr.bulk, captcha_ocr.bulk_io, captcha_ocr.cli\n"
        "from captcha_ocr.cli import build_parser\n"
        "build_parser().parse_args(['predict', 'm', 'x', '--engine', 'ray'])\n"
    )
    assert_runs_without(("ray", "tensorflow", "keras"), code)
