"""``captcha-ocr label``: the JSON API, the command's errors, training rounds (tiny), and a
SIGKILL in the middle of a session. Suggestions before any round come from the committed tiny
reader (tests/tiny_reader.py), which reads back exactly what ``tiny_reader.draw`` wrote."""

from __future__ import annotations

import shutil
import signal
import socket
import sys
import time
from pathlib import Path

import httpx
import pytest

pytest.importorskip("fastapi")

from fastapi.testclient import TestClient

from captcha_ocr import basemodel
from captcha_ocr.label.app import create_app
from captcha_ocr.label.rounds import first_round_start, train_command
from captcha_ocr.label.session import LabelSession, LabelSettings
from tests import tiny_reader
from tests.helpers import assert_runs_without, fails
from tests.label_helpers import TEXTS, digests, draw_images, start_app

TINY_ROUNDS = ("--preset", "tiny", "--epochs", "2", "--seed", "1")


def settings(images: Path, tmp_path: Path, **changes) -> LabelSettings:
    defaults = {"train_args": TINY_ROUNDS, "first_round_args": ()}
    return LabelSettings(images, tmp_path / "work", **{**defaults, **changes})


def wait_for(client, condition, seconds: float = 180.0) -> dict:
    """Poll /v1/status until ``condition(status)``; the last status."""
    deadline = time.monotonic() + seconds
    while True:
        status = client.get("/v1/status").json()
        if condition(status):
            return status
        assert time.monotonic() < deadline, f"gave up waiting; last status {status}"
        time.sleep(0.3)


def assert_error(response, status: int, kind: str) -> dict:
    assert response.status_code == status, response.text
    body = response.json()
    assert body["error"] == kind and body["detail"], body
    return body


def test_the_api(tmp_path: Path) -> None:
    images = tmp_path / "images"
    truth = draw_images(images)
    (images / "broken.png").write_bytes(b"\x89PNG but not really")
    before = digests(images)
    session = LabelSession(
        settings(images, tmp_path, model=str(tiny_reader.PATH), charset="abcd1234")
    )
    with TestClient(create_app(session)) as client:
        status = wait_for(client, lambda s: s["suggestions"]["count"] == len(TEXTS))
        assert status["total"] == len(TEXTS) and status["labeled"] == 0 and status["skipped"] == 1
        assert status["round"] == {
            "number": 0, "state": "idle", "error": "", "warning": "", "model": None,
            "accuracy": None, "labels_used": 0, "val_images": 0, "seconds": None, "started": None,
        }  # fmt: skip
        assert client.get("/v1/skipped").json()["items"][0]["path"] == "broken.png"
        items = client.get("/v1/queue", params={"limit": 4}).json()["items"]
        assert len(items) == 4 and set(items[0]) == {"id", "path", "suggestion", "confidence"}
        assert all(item["suggestion"] == truth[item["path"]] for item in items)
        most = client.get("/v1/queue", params={"limit": 50, "order": "most"}).json()["items"]
        confidences = [item["confidence"] for item in most]
        assert confidences == sorted(confidences, reverse=True) and len(most) == len(TEXTS)

        first = items[0]
        image = client.get(f"/v1/images/{first['id']}")
        assert image.headers["content-type"] == "image/png"
        assert image.content == (images / first["path"]).read_bytes()
        answer = client.put(f"/v1/labels/{first['id']}", json={"label": "ab"})
        assert answer.status_code == 200 and answer.json() == {"id": first["id"], "label": "ab"}
        assert client.get(f"/v1/labels/{first['id']}").json()["label"] == "ab"
        assert first["id"] not in [
            i["id"] for i in client.get("/v1/queue?limit=50").json()["items"]
        ]
        detail = assert_error(
            client.put(f"/v1/labels/{first['id']}", json={"label": "abz"}), 422, "invalid_label"
        )["detail"]
        assert "'z'" in detail and "--charset" in detail
        assert_error(client.put(f"/v1/labels/{first['id']}", json={}), 422, "invalid_parameter")
        assert_error(client.put("/v1/labels/nope", json={"label": "a"}), 404, "unknown_image")
        assert_error(client.get("/v1/images/nope"), 404, "unknown_image")
        assert_error(client.get("/v1/queue?limit=0"), 422, "invalid_parameter")
        assert_error(client.get("/v1/queue?order=best"), 422, "invalid_parameter")
        assert (images / "labels.csv").read_text() == f"path,label\n{first['path']},ab\n"
        assert client.get("/v1/status").json()["labeled"] == 1
        assert client.delete(f"/v1/labels/{first['id']}").json() == {
            "id": first["id"],
            "label": None,
        }
        assert (images / "labels.csv").read_text() == "path,label\n"
        assert_error(client.post("/v1/rounds"), 409, "round_busy")  # too few labels
        paths = client.get("/openapi.json").json()["paths"]
        assert {"/v1/queue", "/v1/images/{image_id}", "/v1/labels/{image_id}", "/v1/rounds",
                "/v1/status", "/v1/skipped"} <= set(paths)  # fmt: skip
        page = client.get("/")
        assert page.status_code == 200 and 'id="answer"' in page.text
        assert client.get("/static/label.js").status_code == 200
        assert "http" not in page.text.replace("http-equiv", "")  # nothing from a CDN
    assert digests(images) == before


def test_suggestions_keep_to_the_charset(tmp_path: Path) -> None:
    """A suggestion the store would refuse helps nobody: readings keep to --charset."""
    images = tmp_path / "images"
    draw_images(images)
    model = str(tiny_reader.PATH)
    session = LabelSession(settings(images, tmp_path, model=model, charset="abc123"))
    with TestClient(create_app(session)) as client:
        wait_for(client, lambda s: s["suggestions"]["count"] > 0)
        suggestions = [i["suggestion"] for i in client.get("/v1/queue?limit=50").json()["items"]]
        assert "ab1" in suggestions and not any(set(s or "") & set("d4") for s in suggestions)


def test_the_round_command_lines(tmp_path: Path) -> None:
    first = train_command(
        Path("r1/labels.csv"), Path("r1/runs"), None, ["--pretrain", "synth"], ["--seed", "2"]
    )
    assert first[:3] == [sys.executable, "-m", "captcha_ocr"]
    assert first[3:] == ["train", "r1/labels.csv", "--out", "r1/runs", "--quiet", "--pretrain", "synth", "--seed", "2"]  # fmt: skip
    later = train_command(
        Path("r2/labels.csv"), Path("r2/runs"), "r1/runs/x", ["--pretrain", "synth"], []
    )
    assert later[-2:] == ["--init", "r1/runs/x"] and "--pretrain" not in later


def test_a_model_run_folder_starts_round_one(tmp_path: Path) -> None:
    """--model RUN gives suggestions at once and is where round 1 starts (train --init)."""
    run = tmp_path / "run"
    run.mkdir()
    shutil.copy(tiny_reader.PATH, run / "model.onnx")
    (run / "model.keras").write_bytes(b"")  # what --init looks for; train checks the rest
    images = tmp_path / "images"
    draw_images(images)
    first_round_args = ("--pretrain", "synth")
    session = LabelSession(
        settings(images, tmp_path, model=str(run), first_round_args=first_round_args)
    )
    with TestClient(create_app(session)) as client:
        wait_for(client, lambda s: s["suggestions"]["model"] == str(run))
        for item in client.get("/v1/queue?limit=10").json()["items"]:
            client.put(f"/v1/labels/{item['id']}", json={"label": item["suggestion"]})
        assert client.post("/v1/rounds").json() == {"round": 1}
        failed = wait_for(client, lambda s: s["round"]["state"] != "training", 60)["round"]
    command = (tmp_path / "work" / "rounds" / "round-1" / "command.txt").read_text()
    assert f"--init {run}" in command and "--pretrain" not in command
    assert failed["state"] == "failed" and "configs.yaml" in failed["error"]  # not a real run


def test_round_one_starts_from_the_base_model_when_one_ships(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)  # no folder named "base" here
    monkeypatch.setattr(basemodel, "BASE_DIR", tmp_path / "none")
    assert first_round_start(None) == ["--pretrain", "synth"]  # an install without one
    assert first_round_start(()) == [] and first_round_start(["--seed", "3"]) == ["--seed", "3"]
    shipped = tmp_path / "base_model"
    shipped.mkdir()
    (shipped / "model.keras").write_bytes(b"")
    (shipped / "model.onnx").write_bytes(b"")
    monkeypatch.setattr(basemodel, "BASE_DIR", shipped)
    assert first_round_start(None) == ["--init", "base"]


def test_command_errors(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    images = tmp_path / "images"
    fails(["label", tmp_path / "nope"], capsys, "images folder", "does not exist")
    images.mkdir()
    fails(["label", images, "--out", tmp_path / "w"], capsys, "no images found in")
    (images / "x.png").write_bytes(b"junk")
    fails(["label", images, "--out", tmp_path / "w"], capsys, "none of the 1 image(s)", "x.png")
    draw_images(images / "ok")
    fails(["label", images, "--out", images / "work"], capsys, "inside the images folder")
    (images / "labels.csv").write_text("path,label\nonly-a-path\n")
    fails(["label", images, "--out", tmp_path / "w"], capsys, "labels.csv:2", "path,label")
    (images / "labels.csv").unlink()
    fails(["label", images, "--out", tmp_path / "w", "--model", tmp_path / "m.onnx"], capsys, "not found")  # fmt: skip
    fails(
        ["label", images, "--out", tmp_path / "w2", "--charset", ""], capsys, "--charset is empty"
    )
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        fails(
            ["label", images, "--out", tmp_path / "w3", "--port", port], capsys, f"{port}", "--port"
        )
    other = tmp_path / "other"
    draw_images(other)
    fails(["label", other, "--out", tmp_path / "w3"], capsys, "belongs to the images folder")


@pytest.mark.slow
def test_rounds_train_chain_and_fail_while_labeling_goes_on(tmp_path: Path) -> None:
    """Round 1 trains from scratch (a model that did not learn: kept, used, warned about);
    round 2 fine-tunes from it (--init); a round whose train fails shows train's error and
    labeling goes on; a restart resumes the rounds."""
    images = tmp_path / "images"
    truth = draw_images(images, [*TEXTS, *(t[::-1] for t in TEXTS), "aaa", "ddd"])
    before = digests(images)
    not_learning = (*TINY_ROUNDS, "--min-accuracy", "0.99")  # a tiny model reads ~nothing
    session = LabelSession(settings(images, tmp_path, round_size=10, train_args=not_learning))
    with TestClient(create_app(session)) as client:
        for item in client.get("/v1/queue?limit=10").json()["items"]:
            assert (
                client.put(
                    f"/v1/labels/{item['id']}", json={"label": truth[item["path"]]}
                ).status_code
                == 200
            )
        status = client.get("/v1/status").json()  # the 10th label started round 1
        assert status["round"]["state"] == "training" and status["labeled"] == 10
        assert_error(client.post("/v1/rounds"), 409, "round_busy")
        status = wait_for(client, lambda s: s["round"]["number"] == 1 and s["suggestions"]["model"])
        round1 = status["round"]
        assert (
            round1["state"] == "idle" and round1["labels_used"] == 10 and round1["val_images"] == 1
        )
        assert round1["accuracy"] in (0.0, 1.0) and "floor" in round1["warning"]  # exit status 3
        assert Path(round1["model"], "model.onnx").is_file()
        assert status["suggestions"]["model"] == round1["model"]
        left = client.get("/v1/queue?limit=50").json()["items"]
        assert len(left) == 12 and all(
            i["suggestion"] is not None or i["confidence"] is None for i in left
        )

        for item in left[:2]:
            client.put(f"/v1/labels/{item['id']}", json={"label": truth[item["path"]]})
        assert client.post("/v1/rounds").json() == {"round": 2}
        round2 = wait_for(
            client,
            lambda s: (
                s["round"]["number"] == 2 and s["suggestions"]["model"] == s["round"]["model"]
            ),
        )["round"]
        assert round2["labels_used"] == 12 and round2["model"] != round1["model"]
        command = (Path(round2["model"]).parents[1] / "train.err").read_text()
        config = (Path(round2["model"]) / "configs.yaml").read_text()
        assert "init:" in config and round1["model"] in config, command[-2000:]

    # a round whose train fails: its error on the status, and labeling goes on
    broken_args = ("--preset", "no-such-preset")
    broken = LabelSession(settings(images, tmp_path, round_size=10, train_args=broken_args))
    with TestClient(create_app(broken)) as client:
        assert client.get("/v1/status").json()["round"]["number"] == 2  # resumed
        assert client.post("/v1/rounds").json() == {"round": 3}
        failed = wait_for(client, lambda s: s["round"]["state"] != "training", 60)["round"]
        assert failed["state"] == "failed" and "no-such-preset" in failed["error"], failed
        assert failed["number"] == 2 and failed["model"] == round2["model"]
        item = client.get("/v1/queue?limit=1").json()["items"][0]
        assert (
            client.put(f"/v1/labels/{item['id']}", json={"label": truth[item["path"]]}).status_code
            == 200
        )
        assert client.get("/v1/status").json()["round"]["state"] == "failed"  # no retry per label
        assert client.post("/v1/rounds").status_code == 202  # a person can try again at once
        wait_for(client, lambda s: s["round"]["state"] != "training", 60)
    assert digests(images) == before


def test_sigkill_right_after_a_save_loses_nothing(tmp_path: Path) -> None:
    images = tmp_path / "images"
    truth = draw_images(images)
    before = digests(images)
    log = tmp_path / "app.log"
    process, url = start_app(images, tmp_path / "work", log, "--charset", "abcd1234")
    try:
        assert "http://127.0.0.1:" in log.read_text()  # it prints its URL
        items = httpx.get(url + "/v1/queue?limit=3").json()["items"]
        for item in items:
            response = httpx.put(
                f"{url}/v1/labels/{item['id']}", json={"label": truth[item["path"]]}
            )
            assert response.status_code == 200
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait(10)
    process, url = start_app(images, tmp_path / "work", log, "--charset", "abcd1234")
    try:
        assert httpx.get(url + "/v1/status").json()["labeled"] == 3
        for item in items:
            label = httpx.get(f"{url}/v1/labels/{item['id']}").json()["label"]
            assert label == truth[item["path"]]
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(20)
    assert digests(images) == before
    assert sorted(p.name for p in images.iterdir()) == sorted([*truth, "labels.csv"])


def test_the_app_never_imports_tensorflow(tmp_path: Path) -> None:
    """The labeling app is on the reading side: rounds train in a child process."""
    draw_images(tmp_path / "images")
    code = f"""
from pathlib import Path
from fastapi.testclient import TestClient
from captcha_ocr.cli import build_parser
from captcha_ocr.label.app import create_app
from captcha_ocr.label.session import LabelSession, LabelSettings
build_parser().parse_args(["label", "x"])
settings = LabelSettings(Path({str(tmp_path / "images")!r}), Path({str(tmp_path / "work")!r}),
                         model={str(tiny_reader.PATH)!r})
with TestClient(create_app(LabelSession(settings))) as client:
    item = client.get("/v1/queue?limit=1").json()["items"][0]
    assert client.put("/v1/labels/" + item["id"], json={{"label": "ab"}}).status_code == 200
    assert client.get("/v1/status").json()["labeled"] == 1
"""
    assert_runs_without(("tensorflow", "keras", "tf2onnx"), code)


def test_a_stopped_refresh_keeps_the_suggestions_there_are(tmp_path: Path) -> None:
    """The app's shutdown stops a refresh between chunks (no thread left inside ONNX
    Runtime when the interpreter exits); the suggestions already there stay."""
    from captcha_ocr.infer import Reader
    from captcha_ocr.label.queue import Suggestions
    from captcha_ocr.label.store import LabelStore

    draw_images(tmp_path / "images")
    (tmp_path / "work").mkdir()
    store = LabelStore(tmp_path / "images", tmp_path / "labels.csv", tmp_path / "work")
    images = store.unlabeled()
    suggestions, reader = Suggestions(), Reader.load(tiny_reader.PATH)
    suggestions.refresh(reader, "first", images)
    before = suggestions.get()
    assert before and suggestions.model == "first"
    suggestions.stop()
    suggestions.refresh(reader, "second", images)
    assert suggestions.get() == before and suggestions.model == "first"
    assert not suggestions.refreshing
