# The GPU worker image: what synthesis, training and evaluation pods run
# (python -m asagi_dagster.synth / .train / .eval under Dagster Pipes) and the judge server.
#   docker build -f k8s/docker/gpu-worker.Dockerfile -t ghcr.io/my-lab/asagi-worker:0.1.0 .
FROM nvidia/cuda:12.9.1-cudnn-runtime-ubuntu24.04

ENV DEBIAN_FRONTEND=noninteractive PIP_NO_CACHE_DIR=1 PYTHONUNBUFFERED=1
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3.12 python3.12-venv python3.12-dev build-essential \
 && rm -rf /var/lib/apt/lists/* \
 && python3.12 -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH

WORKDIR /opt/asagi
COPY k8s/docker/gpu-requirements.txt ./
RUN pip install -r gpu-requirements.txt

# The library only: its dependencies are above (with vllm's torch), not pyproject's CPU pin.
COPY pyproject.toml README.md ./
COPY asagi_dagster ./asagi_dagster
COPY asagi_cli ./asagi_cli
COPY assets ./assets
COPY resources ./resources
RUN pip install --no-deps .

# Models are cached on the model-cache PVC (k8s/cluster/model-cache-pvc.yaml).
ENV HF_HOME=/models/huggingface
CMD ["python", "-c", "import asagi_dagster, torch, vllm; print('asagi worker', torch.__version__, vllm.__version__)"]
