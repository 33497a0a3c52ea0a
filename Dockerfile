# GPU image for clusters. NVIDIA's PyTorch container brings CUDA, NCCL, a CUDA build of torch,
# Triton and apex (megadalle uses apex's fused LayerNorm and Adam when it can import them).
# We install megadalle on top without touching that torch: never `pip install apex` (the PyPI
# package of that name is an unrelated project).
FROM nvcr.io/nvidia/pytorch:25.10-py3

RUN apt-get update && apt-get install -y --no-install-recommends openssh-client pdsh \
    && rm -rf /var/lib/apt/lists/*

WORKDIR /opt/megadalle
COPY setup.py README.md ./
COPY megadalle ./megadalle
COPY kernels ./kernels
COPY conf ./conf
COPY launch ./launch
# The container's torch satisfies `torch>=...`; pip keeps it rather than pulling another build.
RUN pip install --no-cache-dir . && python -c "import megadalle.kernels, megadalle.cli"

ENV WANDB_MODE=offline
ENTRYPOINT ["megadalle"]
CMD ["--help"]
