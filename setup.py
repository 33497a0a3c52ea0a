"""megadalle: DALL-E-style text-to-image training at scale.

The Triton kernels live in the top-level `kernels/` folder and install as `megadalle.kernels`;
the hydra configs in `conf/` install inside the package so an installed `megadalle` finds them.
apex is optional (used when importable, e.g. in NVIDIA containers) and is deliberately not a
dependency: the PyPI package named `apex` is an unrelated project.
"""
from setuptools import find_packages, setup

PACKAGES = (
    find_packages(include=["megadalle", "megadalle.*"])
    + ["megadalle.kernels"] + [f"megadalle.kernels.{name}" for name in find_packages("kernels")]
    + ["megadalle.conf"]
)

setup(
    name="megadalle",
    version="0.1.0",
    description="Train DALL-E-style text-to-image models: dVAE, sparse-attention Transformer, CLIP rerank",
    python_requires=">=3.10",
    packages=PACKAGES,
    package_dir={"megadalle": "megadalle", "megadalle.kernels": "kernels", "megadalle.conf": "conf"},
    package_data={"megadalle.conf": ["*.yaml", "*/*.yaml"]},
    install_requires=[
        "torch>=2.4",
        "deepspeed>=0.15",
        "triton>=3.0; platform_system == 'Linux'",
        "sentencepiece>=0.2",
        "protobuf>=3.20",  # sentencepiece's model proto: a tokenizer's model type and piece types (user-defined)
        "webdataset>=0.2.90",
        "wandb>=0.17",
        "hydra-core>=1.3",
        "safetensors>=0.4",
        "pillow>=10",
        "numpy>=1.24",
        "tqdm>=4.60",
    ],
    extras_require={
        # the tests, the submitit one included (scripts/setup.sh dev also adds OpenAI's DALL-E package, without
        # its declared dependencies, which pull torchvision: import-dvae's tests build files with it)
        # open_clip: tests/imports/test_open_clip.py proves the open_clip reranker with a random tiny model
        "dev": ["pytest>=8", "pytest-timeout>=2.3", "hydra-submitit-launcher>=1.2", "attrs", "requests",
                "pytest-xdist>=3.5",  # pytest.ini's 2 workers (tests/conftest.py: which tests share one)
                "scikit-learn",  # the learning check's real data (digits) and its independent judge
                "open_clip_torch>=2.24"],
        # hydra's submitit launcher: `megadalle <verb> -m hydra/launcher=submitit_slurm ...` submits each job to Slurm
        "slurm": ["hydra-submitit-launcher>=1.2"],
        # an open_clip architecture as the reranker (generate clip_model=open_clip:<arch> clip_weights=FILE)
        "open_clip": ["open_clip_torch>=2.24"],
        # `megadalle evaluate feature_extractor=inception`: torch-fidelity's InceptionV3 (it needs a torchvision
        # built for the installed torch)
        "eval": ["torch-fidelity>=0.4", "torchvision"],
    },
    entry_points={"console_scripts": ["megadalle = megadalle.cli:entry"]},
)
