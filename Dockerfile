# GPU image for clusters. NVIDIA's PyTorch container brings CUDA, NCCL, a CUDA build of torch
# (25.10: PyTorch 2.9.0a0, CUDA 13.0, Python 3.12; see NVIDIA's PyTorch release notes), Triton and
# apex (megadalle uses apex's fused LayerNorm when it can import and run it). We install
# megadalle on top without touching that torch: the container's pip constraints
# (/etc/pip/constraint.txt) pin it, and `torch>=2.4` is satisfied. Never `pip install apex`
# (the PyPI package of that name is an unrelated project).
#
#   docker build -t megadalle .
#   docker run --gpus all --ipc=host --network=host -v /shared:/shared megadalle \
#       megadalle train out_dir=/shared/outputs ...
#
# out_dir on the mounted /shared: the default, outputs in the working directory, is in the container's own layer and
# goes with it. The build context is only what the COPY lines below take (.dockerignore), never a checkout's .venv,
# outputs/ or .git.
# --ipc=host: the data loaders' worker processes share tensors through /dev/shm, which Docker caps
# at 64 MB; NCCL uses it too. --network=host: NCCL and the rendezvous need the node's interfaces.
# Multi-node with the DeepSpeed launcher (`launch/train.sh` with a hostfile, pdsh over ssh): start
# every worker node's container with sshd as its command (port 2222, so it never collides with
# the host's sshd under --network=host), with the launching node's public key mounted at
# /etc/megadalle/authorized_keys: sshd refuses an authorized_keys that root does not own (StrictModes), as a
# file bind-mounted from a user's home is, so launch/docker/50-ssh-host-keys.sh installs a root-owned copy:
#   docker run -d --gpus all --ipc=host --network=host -v /shared:/shared \
#       -v ~/.ssh/megadalle.pub:/etc/megadalle/authorized_keys:ro megadalle /usr/sbin/sshd -D -e
#   SSH_PORT=2222 HOSTFILE=/shared/hostfile launch/train.sh model=12b ...    (in the launching container)
FROM nvcr.io/nvidia/pytorch:25.10-py3

# sshd and pdsh for DeepSpeed's multi-node launcher; host keys are made per container at start
# (launch/docker/50-ssh-host-keys.sh), never baked into the image where every container would share them.
RUN apt-get update && apt-get install -y --no-install-recommends openssh-server openssh-client pdsh \
    && rm -rf /var/lib/apt/lists/* /etc/ssh/ssh_host_*key* \
    && mkdir -p /run/sshd /root/.ssh && chmod 700 /root/.ssh
COPY launch/docker/sshd_config /etc/ssh/sshd_config.d/megadalle.conf
COPY launch/docker/50-ssh-host-keys.sh /opt/nvidia/entrypoint.d/50-ssh-host-keys.sh

# Installed from a copy that is removed afterwards: a megadalle/ source folder in the working directory would
# shadow the installed package, and it has no kernels/ inside (setup.py maps the top-level kernels/ to
# megadalle.kernels), so `import megadalle.kernels`, `python -m megadalle` and `deepspeed --module megadalle` run
# there would fail. constraints/common.txt pins DeepSpeed and the rest as the tests run them (train/universal.py
# patches DeepSpeed 0.19's internals); the container's own constraints keep its torch.
COPY setup.py README.md /tmp/megadalle-src/
COPY constraints/common.txt /tmp/megadalle-src/constraints/
COPY megadalle /tmp/megadalle-src/megadalle
COPY kernels /tmp/megadalle-src/kernels
COPY conf /tmp/megadalle-src/conf
RUN pip install --no-cache-dir -c /tmp/megadalle-src/constraints/common.txt /tmp/megadalle-src \
    && rm -rf /tmp/megadalle-src \
    && cd / && python -c "import megadalle.kernels, megadalle.cli"

# The launch scripts (launch/train.sh, launch/slurm/) in the working directory, the same path on every node.
WORKDIR /workspace
COPY launch ./launch

ENV WANDB_MODE=offline
# `docker run --user UID:GID` (files on /shared owned by the user, not root) runs with HOME=/ where no passwd entry
# names the uid, and / is not writable: Triton compiles every kernel into $TRITON_HOME/.triton (default ~/.triton:
# PermissionError at the first kernel), wandb and torch's extensions cache into $XDG_CACHE_HOME (default ~/.cache).
ENV TRITON_HOME=/tmp XDG_CACHE_HOME=/tmp/.cache
# NVIDIA's entrypoint stays first: it prints the banner and the driver checks, runs the parts under
# /opt/nvidia/entrypoint.d (ours makes the ssh host keys and installs the mounted public key), then runs the command.
ENTRYPOINT ["/opt/nvidia/nvidia_entrypoint.sh"]
CMD ["megadalle", "--help"]
