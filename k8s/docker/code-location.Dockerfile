# The code-location image: Dagster's gRPC server for this project, and the image every
# run pod (K8sRunLauncher) starts from. CPU only: GPU work runs in the worker image.
#   docker build -f k8s/docker/code-location.Dockerfile -t ghcr.io/my-lab/asagi-dagster:0.1.0 .
FROM python:3.11-slim-bookworm

RUN apt-get update \
 && apt-get install -y --no-install-recommends libgomp1 \
 && rm -rf /var/lib/apt/lists/*

WORKDIR /opt/asagi
COPY pyproject.toml README.md workspace.yaml ./
COPY asagi_dagster ./asagi_dagster
COPY asagi_cli ./asagi_cli
COPY assets ./assets
COPY resources ./resources
COPY configs ./configs

# torch from the CPU index first, so the project's torch pin does not pull a CUDA build.
RUN pip install --no-cache-dir torch==2.13.0 --index-url https://download.pytorch.org/whl/cpu \
 && pip install --no-cache-dir .

# The profile is mounted from a ConfigMap (k8s/helm/values.yaml); secrets come as env.
ENV ASAGI_CONFIG=/etc/asagi/cluster.yaml
EXPOSE 3030
CMD ["dagster", "api", "grpc", "--host", "0.0.0.0", "--port", "3030", "--module-name", "asagi_dagster.definitions"]
