# slmctl, CPU image: `slmctl serve` on 0.0.0.0:11434 as user slmctl (uid 10001), models and keys in
# the /data volume (SLMCTL_HOME). GPU: Dockerfile.cuda. Without a registry or a Docker daemon:
# deploy/build-image.sh builds the same image with mmdebstrap + buildah (tests/test_container.py keeps
# the two in step: user, paths, port, entrypoint, healthcheck, labels).
#
#   docker build -t slmctl .
#   docker run --rm -v slmctl-data:/data slmctl keys create ops --role admin   # prints slmctl_..., once
#   docker run --rm -v slmctl-data:/data -v "$PWD:/in:ro" slmctl import /in/model.gguf --name mymodel
#   docker run -d --name slmctl -p 11434:11434 -v slmctl-data:/data slmctl
#   curl http://localhost:11434/api/health
#
# The server binds 0.0.0.0, so it wants an API key and will not start before one exists in
# /data/keys.json: create keys in the volume first (above), or override CMD with
# `serve --host 0.0.0.0:11434 --no-auth` on a trusted network only. A bind mount instead of a named
# volume must be owned by uid 10001 (`chown 10001:10001 DIR`).

ARG PYTHON_IMAGE=python:3.11-slim-bookworm

# ---- build: compile llama-cpp-python, install everything into the /opt/slmctl venv --------------
FROM ${PYTHON_IMAGE} AS build
# llama.cpp for any x86-64 CPU with AVX2/FMA, not for the build machine's CPU (-march=native);
# "-DGGML_NATIVE=ON" gives a faster image for that CPU only.
ARG CMAKE_ARGS="-DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON"
RUN apt-get update \
 && apt-get install -y --no-install-recommends build-essential cmake \
 && rm -rf /var/lib/apt/lists/*
RUN python -m venv /opt/slmctl
ENV PATH=/opt/slmctl/bin:$PATH \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
# Dependencies first (pinned in pyproject.toml), so a source change does not recompile llama.cpp.
COPY pyproject.toml README.md ./
RUN python -c "import tomllib; print('\n'.join(tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']))" > /tmp/requirements.txt \
 && CMAKE_ARGS="${CMAKE_ARGS}" CMAKE_BUILD_PARALLEL_LEVEL="$(nproc)" pip install -r /tmp/requirements.txt
COPY slmctl ./slmctl
# llama-cpp-python's wheel also ships its libraries and headers as site-packages/lib and include
# (37 MB) for C builds; llama_cpp loads the copies in llama_cpp/lib.
RUN pip install --no-deps . && pip check && slmctl --version \
 && rm -rf /opt/slmctl/lib/python3*/site-packages/lib /opt/slmctl/lib/python3*/site-packages/include

# ---- runtime: no compilers ------------------------------------------------------------------------
FROM ${PYTHON_IMAGE}
ARG VERSION=0.1.0
LABEL org.opencontainers.image.title="slmctl" \
      org.opencontainers.image.description="Run small language models locally: GGUF through llama.cpp, ONNX through ONNX Runtime GenAI, behind an Ollama/OpenAI-compatible API (CPU build)" \
      org.opencontainers.image.source="https://github.com/slmctl/slmctl" \
      org.opencontainers.image.licenses="MIT" \
      org.opencontainers.image.version="${VERSION}"
# libgomp1: llama.cpp's OpenMP threads
RUN apt-get update \
 && apt-get install -y --no-install-recommends libgomp1 \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --gid 10001 slmctl \
 && useradd --uid 10001 --gid 10001 --home-dir /data --no-create-home --shell /usr/sbin/nologin slmctl \
 && mkdir -p /data && chown 10001:10001 /data && chmod 0700 /data
COPY --from=build /opt/slmctl /opt/slmctl
COPY deploy/healthcheck.py /usr/local/bin/slmctl-healthcheck
ENV PATH=/opt/slmctl/bin:$PATH \
    SLMCTL_HOME=/data \
    PYTHONUNBUFFERED=1 \
    LANG=C.UTF-8
USER 10001:10001
WORKDIR /data
VOLUME ["/data"]
EXPOSE 11434
STOPSIGNAL SIGTERM
# /api/health needs no key; SLMCTL_HEALTHCHECK_URL points it elsewhere (another port, https).
HEALTHCHECK --interval=30s --timeout=5s --start-period=20s --retries=3 \
  CMD ["/opt/slmctl/bin/python", "/usr/local/bin/slmctl-healthcheck"]
ENTRYPOINT ["slmctl"]
CMD ["serve", "--host", "0.0.0.0:11434"]
