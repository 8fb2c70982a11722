"""What the container tests share: the Dockerfile read as data, and podman to build and run it.

The tests run the image's entry point with the image's environment (both read from the
Dockerfile, so the two cannot drift apart) as a plain process everywhere, and the image itself
where podman can build and run one. ``podman_engine`` skips, with the reason, where podman is
missing, cannot reach a base image, or cannot run a container. Two things it knows about:

- Docker Hub may be out of reach (this project's CI resolves only the Debian mirror and PyPI):
  then the base image is the stand-in that ``.ci/base-image`` builds from Debian packages.
- Some machines run podman but not its defaults: crun refuses hybrid cgroups (v1 controllers
  plus a v2 one), and without CAP_SYS_RESOURCE the default ulimits cannot be set. Then the
  engine runs with ``.ci/containers.conf`` (runc, cgroupfs, lower ulimits).
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import socket
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCKERFILE = ROOT / "Dockerfile"
COMPAT_CONF = ROOT / ".ci" / "containers.conf"
STAND_IN_BASE = "localhost/python-bookworm:3.11"  # what .ci/base-image builds
IMAGE = "localhost/captcha-ocr:test"


def instructions() -> list[tuple[str, str]]:
    """The Dockerfile as (INSTRUCTION, arguments), continuation lines joined, comments left out."""
    joined: list[str] = []
    pending = ""
    for line in DOCKERFILE.read_text().splitlines():
        if line.lstrip().startswith("#") or not line.strip():
            continue
        pending += line.rstrip()
        if pending.endswith("\\"):
            pending = pending[:-1] + " "
            continue
        joined.append(pending)
        pending = ""
    return [(text.split(None, 1)[0].upper(), text.split(None, 1)[1]) for text in joined]


def image_env() -> dict[str, str]:
    """The runtime stage's ENV, less PATH (which names the image's own folders)."""
    env: dict[str, str] = {}
    for keyword, args in instructions():
        if keyword == "FROM":
            env.clear()  # only the last stage's ENV is the image's
        elif keyword == "ENV":
            env.update(item.split("=", 1) for item in shlex.split(args))
    env.pop("PATH", None)
    return env


def image_entrypoint() -> list[str]:
    [entrypoint] = [json.loads(args) for keyword, args in instructions() if keyword == "ENTRYPOINT"]
    return entrypoint


def base_image_default() -> str:
    """The default of the Dockerfile's ``ARG PYTHON_IMAGE``."""
    [default] = [
        args.split("=", 1)[1]
        for keyword, args in instructions()
        if keyword == "ARG" and args.startswith("PYTHON_IMAGE=")
    ]
    return default


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_healthy(url: str, alive: Callable[[], bool], log: Callable[[], str], limit_s=60) -> None:
    """Wait until ``url/healthz`` answers 200; fail with the log if the server dies or is slow."""
    deadline = time.monotonic() + limit_s
    while True:
        assert alive(), "the server stopped:\n" + log()
        assert time.monotonic() < deadline, f"no {url}/healthz after {limit_s} s:\n" + log()
        try:
            if httpx.get(url + "/healthz", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            time.sleep(0.2)


def read_across_sigterm(port: int, image: bytes, stop: Callable[[], None]) -> tuple[int, dict]:
    """POST ``image`` to /v1/read with the body sent in two halves and ``stop()`` (a SIGTERM)
    between them: the request is in flight when the server is told to stop.
    -> (status, JSON body) of the response."""
    boundary = "captcha-ocr-test-boundary"
    body = (
        (
            f'--{boundary}\r\nContent-Disposition: form-data; name="image"; filename="a.png"\r\n'
            "Content-Type: image/png\r\n\r\n"
        ).encode()
        + image
        + f"\r\n--{boundary}--\r\n".encode()
    )
    head = (
        f"POST /v1/read HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
        f"Content-Type: multipart/form-data; boundary={boundary}\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode()
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sock.sendall(head + body[: len(body) // 2])
        time.sleep(0.3)  # the server has read the headers: the request has begun
        stop()
        time.sleep(1.0)  # the server has seen the signal and stopped listening
        sock.sendall(body[len(body) // 2 :])
        response = b""
        while chunk := sock.recv(65536):  # the server closes the connection after answering
            response += chunk
    status_line, _, rest = response.partition(b"\r\n")
    return int(status_line.split()[1]), json.loads(rest.partition(b"\r\n\r\n")[2])


@dataclass
class Podman:
    """The podman command, with the environment that lets it run containers on this machine."""

    base_image: str
    env: dict[str, str] = field(default_factory=lambda: dict(os.environ))

    def __call__(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
        return subprocess.run(
            ["podman", *args], env=self.env, capture_output=True, text=True, timeout=timeout
        )

    def check(self, *args: str, timeout: float = 120) -> str:
        result = self(*args, timeout=timeout)
        assert result.returncode == 0, f"podman {' '.join(args)}:\n{result.stderr[-3000:]}"
        return result.stdout


def find_podman() -> Podman:
    """A podman that runs containers here, and the base image to build on; else pytest.skip."""
    if shutil.which("podman") is None:
        pytest.skip("podman is not installed (apt-get install podman; .ci/run installs it)")
    base = _base_image()
    for conf in (None, COMPAT_CONF):
        env = dict(os.environ)
        if conf is not None:
            env["CONTAINERS_CONF"] = str(conf)
        engine = Podman(base, env)
        probe = engine("run", "--rm", "--network", "host", base, "true", timeout=120)
        if probe.returncode == 0:
            return engine
    pytest.skip(
        f"podman cannot run a container here, even with {COMPAT_CONF.name}: "
        + probe.stderr.strip()[-500:]
    )


def _base_image() -> str:
    """The Dockerfile's base image if podman has or can pull it, else the Debian stand-in."""
    engine = Podman("")
    default = base_image_default()
    for image in (default, STAND_IN_BASE):
        if engine("image", "exists", image).returncode == 0:
            return image
    pulled = engine("pull", "--quiet", default, timeout=300)
    if pulled.returncode == 0:
        return default
    pytest.skip(
        f"no base image: podman cannot pull {default} ({pulled.stderr.strip()[-300:]}); "
        f"build a stand-in from Debian packages with .ci/base-image"
    )


def build_image(engine: Podman) -> str:
    """Build the Dockerfile as :data:`IMAGE` (podman's layer cache keeps a rebuild short)."""
    result = engine(
        "build",
        "--format",
        "docker",  # the OCI format has no HEALTHCHECK
        "--build-arg",
        f"PYTHON_IMAGE={engine.base_image}",
        "--tag",
        IMAGE,
        str(ROOT),
        timeout=900,
    )
    assert result.returncode == 0, (
        "the image did not build:\n" + (result.stdout + result.stderr)[-4000:]
    )
    return IMAGE
