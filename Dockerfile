# The captcha-ocr HTTP service: reading and serving only (NumPy, Pillow, ONNX Runtime, FastAPI),
# no TensorFlow. Build, then run with a model mounted at /model:
#
#   podman build --format docker -t captcha-ocr .
#   podman run --rm -p 8000:8000 -v "$PWD/runs/latest:/model:ro" captcha-ocr
#
# (`docker build` / `docker run` work the same; podman needs --format docker to keep the
# HEALTHCHECK, which the OCI image format has no field for.) The README's "Run the service in
# a container" lists the environment variables and how to build a model into the image.

# Any image with Python >= 3.10 and its venv module; CI without Docker Hub uses a stand-in
# built from Debian packages (.ci/base-image).
ARG PYTHON_IMAGE=docker.io/library/python:3.11-slim

# --- build: the package's wheel, and a venv of it with what serving needs -------------------
FROM ${PYTHON_IMAGE} AS build
RUN python3 -m venv /opt/build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY src ./src
# One wheel for captcha-ocr itself and one for each package that reading and serving need;
# then those alone installed into the venv that the runtime stage takes, less pip and
# setuptools (25 MB that serving never uses).
RUN /opt/build/bin/pip wheel --no-cache-dir --quiet --disable-pip-version-check \
        --wheel-dir /wheels ".[serve]" \
 && python3 -m venv /opt/captcha-ocr \
 && /opt/captcha-ocr/bin/pip install --no-cache-dir --quiet --disable-pip-version-check \
        --no-index --find-links /wheels "captcha-ocr[serve]" \
 && /opt/captcha-ocr/bin/pip uninstall --yes --quiet pip setuptools

# --- runtime: Python, that venv, a user without rights ---------------------------------------
FROM ${PYTHON_IMAGE}
# A fixed numeric uid, so that an orchestrator can check runAsNonRoot without looking inside.
RUN useradd --uid 10001 --user-group --home-dir /nonexistent --no-create-home \
        --shell /usr/sbin/nologin captcha-ocr
# COPY, not a RUN with the wheels bind-mounted from the build stage: buildah's layer cache
# does not see a change in a mounted stage, and would keep serving the old code.
COPY --from=build /opt/captcha-ocr /opt/captcha-ocr

# CAPTCHA_OCR_SERVE_*: the server's settings (each one is also a flag of `captcha-ocr serve`;
# a flag wins). The image listens on all addresses, on the port it exposes, and reads the model
# at /model: a mounted run folder or .onnx file, or one built in (see the README).
# ORT_DISABLE_TELEMETRY: ONNX Runtime (recent releases, on Linux too) would otherwise write a
# device id under ~/.cache and send usage events to Microsoft; a service should do neither.
ENV PATH=/opt/captcha-ocr/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    ORT_DISABLE_TELEMETRY=1 \
    CAPTCHA_OCR_SERVE_MODEL=/model \
    CAPTCHA_OCR_SERVE_HOST=0.0.0.0 \
    CAPTCHA_OCR_SERVE_PORT=8000
EXPOSE 8000
USER 10001:10001

# The image has no curl; the probe is a few lines of the Python already there.
HEALTHCHECK --interval=10s --timeout=3s --start-period=30s --retries=3 \
    CMD ["python3", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/healthz' % os.environ['CAPTCHA_OCR_SERVE_PORT'], timeout=2)"]

# Exec form: the server is PID 1 and gets the orchestrator's SIGTERM itself; uvicorn then stops
# accepting, finishes the requests in flight and exits 0. Arguments after the image name are
# flags of `captcha-ocr serve` (try --help).
ENTRYPOINT ["captcha-ocr", "serve"]
