"""The container image of the service (Dockerfile).

First its entry point, run here as a plain process the way the image runs it: the image's
ENTRYPOINT and ENV (read from the Dockerfile), a read-only model, an unprivileged user, no home;
it answers /healthz and /v1/read, and a SIGTERM lets the request in flight finish, then the
process exits 0. Then the settings from the environment, and their errors. Then, where podman
can build and run images (tests/container.py says when it skips), the image itself: built,
started with the tiny model mounted or built in, read from, stopped.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image

pytest.importorskip("fastapi")

from captcha_ocr.cli import main
from captcha_ocr.config import SERVE_ENV_PREFIX
from tests import container, tiny_reader

TEXT = "ab12"  # what the image drawn by tiny_reader.draw reads


def png(pixels: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels.squeeze(-1)).save(buffer, "PNG")
    return buffer.getvalue()


IMAGE_BYTES = png(tiny_reader.draw(TEXT))


@pytest.fixture(scope="module")
def model_dir() -> Iterator[Path]:
    """The tiny reader alone in a folder that anyone may read and nobody may write: the shape
    of a model mounted read-only at /model. Not under pytest's tmp_path, whose folders only
    their owner may enter."""
    with tempfile.TemporaryDirectory(prefix="captcha-ocr-model-") as folder:
        shutil.copyfile(tiny_reader.PATH, Path(folder) / "model.onnx")
        (Path(folder) / "model.onnx").chmod(0o444)
        Path(folder).chmod(0o555)
        try:
            yield Path(folder)
        finally:
            Path(folder).chmod(0o755)


# --- the entry point, outside a container ------------------------------------------------------


def unprivileged() -> dict:
    """Popen arguments that run a command as nobody, if this is root and nobody may run this
    Python (a Python under /root may not be reachable); else none."""
    if os.geteuid() != 0:
        return {}
    as_nobody = {"user": 65534, "group": 65534, "extra_groups": []}
    try:
        probe = subprocess.run(
            [sys.executable, "-c", "import captcha_ocr.serve"], cwd="/", timeout=60, **as_nobody
        )
    except PermissionError:
        return {}
    return as_nobody if probe.returncode == 0 else {}


def test_entry_point_serves_as_in_the_image(model_dir: Path, tmp_path: Path) -> None:
    """The image's command and environment, the model read-only, the working folder and home
    left empty (it writes nothing, so a read-only root file system suits it), as nobody where
    that can run this Python. The settings come from the environment; a SIGTERM mid-request
    lets the request finish, then the exit status is 0."""
    entrypoint = container.image_entrypoint()
    assert entrypoint[0] == "captcha-ocr", entrypoint  # the console script, i.e. this:
    command = [sys.executable, "-m", "captcha_ocr", *entrypoint[1:]]
    port = container.free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(SERVE_ENV_PREFIX)}
    env.update(container.image_env())
    assert env[SERVE_ENV_PREFIX + "HOST"] == "0.0.0.0"
    home, workdir = tmp_path / "home", tmp_path / "workdir"
    home.mkdir()
    workdir.mkdir()
    env.update(
        {
            "HOME": str(home),
            SERVE_ENV_PREFIX + "MODEL": str(model_dir),
            SERVE_ENV_PREFIX + "PORT": str(port),
            SERVE_ENV_PREFIX + "MAX_IMAGES": "3",
            SERVE_ENV_PREFIX + "THREADS": "1",
        }
    )
    log_path = tmp_path / "server.log"
    with log_path.open("wb") as log:
        server = subprocess.Popen(
            command, cwd=workdir, env=env, stdout=log, stderr=subprocess.STDOUT, **unprivileged()
        )
    url = f"http://127.0.0.1:{port}"
    try:
        container.wait_healthy(url, lambda: server.poll() is None, log_path.read_text)
        assert httpx.get(url + "/v1/model").json()["limits"]["max_images"] == 3
        response = httpx.post(url + "/v1/read", files=[("image", ("a.png", IMAGE_BYTES))])
        assert response.status_code == 200, response.text
        assert [r["text"] for r in response.json()["results"]] == [TEXT]
        status, body = container.read_across_sigterm(
            port, IMAGE_BYTES, lambda: server.send_signal(signal.SIGTERM)
        )
        assert status == 200 and body["results"][0]["text"] == TEXT, body
        assert server.wait(30) == 0, log_path.read_text()
    finally:
        if server.poll() is None:
            server.kill()
            server.wait()
    assert list(home.iterdir()) == list(workdir.iterdir()) == []
    assert sorted(p.name for p in model_dir.iterdir()) == ["model.onnx"]
    log_text = log_path.read_text()
    assert "from the environment: " + SERVE_ENV_PREFIX + "MODEL=" in log_text
    assert "Traceback" not in log_text
    assert_answered_while_stopping(log_text)


def assert_answered_while_stopping(log: str) -> None:
    """uvicorn's log: the last read was answered after the shutdown began, before it ended."""
    began = log.index("Shutting down")
    answered = log.rindex('"POST /v1/read HTTP/1.1" 200')
    assert began < answered < log.index("Application shutdown complete"), log


# --- settings from the environment --------------------------------------------------------------


@pytest.fixture
def served(monkeypatch: pytest.MonkeyPatch) -> dict:
    """Calls of run_server recorded instead of made; the serve environment emptied."""
    import captcha_ocr.serve

    for name in list(os.environ):
        if name.startswith(SERVE_ENV_PREFIX):
            monkeypatch.delenv(name)
    calls: dict = {}

    def record(model, host, port, workers, settings):
        calls.update(model=model, host=host, port=port, workers=workers, settings=settings)

    monkeypatch.setattr(captcha_ocr.serve, "run_server", record)
    return calls


def test_a_flag_wins_over_the_environment_which_wins_over_the_default(
    served: dict, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(SERVE_ENV_PREFIX + "MODEL", str(tiny_reader.PATH))
    monkeypatch.setenv(SERVE_ENV_PREFIX + "PORT", "9100")
    monkeypatch.setenv(SERVE_ENV_PREFIX + "MAX_BATCH", "8")
    monkeypatch.setenv(SERVE_ENV_PREFIX + "BATCH_WAIT_MS", "0.5")
    monkeypatch.setenv(SERVE_ENV_PREFIX + "THREADS", " ")  # blank: as if unset
    assert main(["serve", "--max-batch", "16"]) == 0
    assert served["model"] == str(tiny_reader.PATH) and served["port"] == 9100
    assert served["host"] == "127.0.0.1" and served["workers"] == 1  # the defaults
    settings = served["settings"]
    assert (settings.max_batch, settings.batch_wait_ms, settings.threads) == (16, 0.5, None)
    assert main(["serve", "elsewhere.onnx"]) == 0
    assert served["model"] == "elsewhere.onnx"  # the argument wins too


@pytest.mark.parametrize(
    ("env", "says"),
    [
        ({"PORT": "http"}, "CAPTCHA_OCR_SERVE_PORT='http' is not a whole number"),
        ({"BATCH_WAIT_MS": "2ms"}, "CAPTCHA_OCR_SERVE_BATCH_WAIT_MS='2ms' is not a number"),
        ({"MAX_BATCH": "0"}, "max_batch must be >= 1 (got 0) (environment: "),
        ({"PORT": "70000"}, "port must be 0 to 65535 (got 70000)"),
        ({"WORKERS": "0"}, "CAPTCHA_OCR_SERVE_WORKERS=0"),
        ({"MODEL": ""}, "give MODEL (a run folder or .onnx file) or set CAPTCHA_OCR_SERVE_MODEL"),
        ({"MODEL": "/no/model"}, "model /no/model (from CAPTCHA_OCR_SERVE_MODEL) not found: mount"),
    ],
)
def test_a_bad_environment_is_a_clear_error(
    served: dict,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture,
    env: dict,
    says: str,
) -> None:
    monkeypatch.setenv(SERVE_ENV_PREFIX + "MODEL", str(tiny_reader.PATH))
    for name, value in env.items():
        monkeypatch.setenv(SERVE_ENV_PREFIX + name, value)
    assert main(["serve"]) == 2
    assert says in capsys.readouterr().err
    assert not served  # nothing started


# --- the image, with podman ---------------------------------------------------------------------


@pytest.fixture(scope="session")
def podman() -> container.Podman:
    return container.find_podman()


@pytest.fixture(scope="session")
def image(podman: container.Podman) -> str:
    return container.build_image(podman)


def start(
    podman: container.Podman, image: str, *options: str, publish: bool = True
) -> tuple[str, int]:
    """Run ``image`` in the background -> (container name, port on this machine). ``publish``:
    its port published on a free one here, as the README does; else on the host's network,
    the port moved by the environment."""
    port = container.free_port()
    name = f"captcha-ocr-test-{os.getpid()}-{port}"
    where = (
        ["--publish", f"127.0.0.1:{port}:{container.image_env()[SERVE_ENV_PREFIX + 'PORT']}"]
        if publish
        else ["--network", "host", "--env", f"{SERVE_ENV_PREFIX}PORT={port}"]
    )
    podman.check(
        "run",
        "--detach",
        "--name",
        name,
        *where,
        "--read-only",  # the service writes nothing
        "--cap-drop",
        "all",
        *options,
        image,
    )
    url = f"http://127.0.0.1:{port}"

    def running() -> bool:
        state = podman("inspect", "--format", "{{.State.Running}}", name)
        return state.stdout.strip() == "true"

    container.wait_healthy(url, running, lambda: logs(podman, name))
    return name, port


def logs(podman: container.Podman, name: str) -> str:
    """The container's output, its stdout and stderr in the order they were written."""
    result = subprocess.run(
        ["podman", "logs", name],
        env=podman.env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=60,
    )
    return result.stdout


def read(port: int) -> list[str]:
    response = httpx.post(
        f"http://127.0.0.1:{port}/v1/read", files=[("image", ("a.png", IMAGE_BYTES))], timeout=30
    )
    assert response.status_code == 200, response.text
    return [r["text"] for r in response.json()["results"]]


def test_image_holds_only_the_reader_and_runs_unprivileged(
    podman: container.Podman, image: str
) -> None:
    [config] = json.loads(podman.check("image", "inspect", image))
    assert config["Config"]["User"] == "10001:10001"
    assert config["Config"]["Entrypoint"] == container.image_entrypoint()
    assert "8000/tcp" in config["Config"]["ExposedPorts"]
    healthcheck = config.get("Healthcheck") or config["Config"]["Healthcheck"]  # podman: the first
    assert "/healthz" in " ".join(healthcheck["Test"])
    found = podman.check(
        "run",
        "--rm",
        "--entrypoint",
        "python3",
        image,
        "-c",
        "import importlib.util as u, captcha_ocr.serve; "
        "print([m for m in ('tensorflow', 'keras', 'tf2onnx', 'onnx') if u.find_spec(m)])",
    )
    assert found.strip() == "[]"
    # The image holds this checkout's code, not a stale layer from the build cache.
    listed = podman.check("run", "--rm", "--entrypoint", "python3", image, "-c", HASH_PACKAGE)
    assert json.loads(listed) == package_hashes(container.ROOT / "src" / "captcha_ocr")


# Prints {file: sha256} for the installed package's .py and .html files.
HASH_PACKAGE = (
    "import captcha_ocr, hashlib, json, pathlib; "
    "root = pathlib.Path(captcha_ocr.__file__).parent; "
    "print(json.dumps({str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() "
    "for p in root.rglob('*') if p.suffix in ('.py', '.html')}))"
)


def package_hashes(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in root.rglob("*")
        if p.suffix in (".py", ".html")
    }


def test_image_serves_a_mounted_model_and_stops_on_sigterm(
    podman: container.Podman, image: str, model_dir: Path
) -> None:
    name, port = start(podman, image, "--volume", f"{model_dir}:/model:ro")
    try:
        assert read(port) == [TEXT]
        page = httpx.get(f"http://127.0.0.1:{port}/")  # package data made it into the wheel
        assert page.status_code == 200 and "<html" in page.text.lower()
        assert podman.check("exec", name, "id", "-u").strip() == "10001"
        health = podman("healthcheck", "run", name)  # the image's own HEALTHCHECK command
        assert health.returncode == 0, health.stdout + health.stderr
        status, body = container.read_across_sigterm(
            port, IMAGE_BYTES, lambda: podman.check("kill", "--signal", "TERM", name)
        )
        assert status == 200 and body["results"][0]["text"] == TEXT, body
        assert podman.check("wait", name).strip() == "0", logs(podman, name)
        assert_answered_while_stopping(logs(podman, name))
    finally:
        podman("rm", "--force", name)


def test_image_with_a_model_built_in(podman: container.Podman, image: str, tmp_path: Path) -> None:
    """The README's second way: a two-line Dockerfile that copies a model into the image."""
    shutil.copyfile(tiny_reader.PATH, tmp_path / "model.onnx")
    (tmp_path / "Dockerfile").write_text(f"FROM {image}\nCOPY model.onnx /model/model.onnx\n")
    derived = f"{image}-with-model"
    podman.check("build", "--format", "docker", "--tag", derived, str(tmp_path))
    try:
        name, port = start(podman, derived, publish=False)
        try:
            assert read(port) == [TEXT]
            podman.check("stop", "--time", "30", name)  # SIGTERM, then SIGKILL after 30 s
            exit_code = podman.check("inspect", "--format", "{{.State.ExitCode}}", name)
            assert exit_code.strip() == "0", logs(podman, name)
        finally:
            podman("rm", "--force", name)
    finally:
        podman("rmi", derived)
