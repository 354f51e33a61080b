# nemo_emmett on the NeMo container (which brings CUDA torch, NeMo, Lightning, lhotse).
#   docker build -t nemo_emmett .
#   docker run --gpus all --rm -it nemo_emmett python examples/train.py --config-name salm_t5
# Pick a NeMo container whose nemo-toolkit is 3.0.0 (check with `pip show nemo-toolkit` inside it).
ARG NEMO_IMAGE=nvcr.io/nvidia/nemo:25.11
FROM ${NEMO_IMAGE}

RUN apt-get update && apt-get install -y --no-install-recommends espeak-ng make \
    && rm -rf /var/lib/apt/lists/*

WORKDIR /workspace/nemo_emmett
COPY . .
# The container's torch is kept: pyproject.toml asks only for a range.
RUN pip install --no-cache-dir -e ".[dev]"
ENV NEMO_EMMETT_CACHE=/workspace/.cache/nemo_emmett
