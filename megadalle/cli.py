"""`megadalle <verb> key=value ...`: one entry point, one verb per pipeline stage.

Each verb is a hydra app: its primary config is `conf/<verb>.yaml`, composed with the command
line's overrides. The CLI only parses and hands the composed config to the stage's function;
the stages never read the command line themselves, so `demo` and the tests call them directly.
"""
from __future__ import annotations

import importlib
import re
import sys
from dataclasses import dataclass

from megadalle.config.compose import compose

LOCAL_RANK_FLAG = re.compile(r"^--local[_-]rank(=\d+)?$")
"""Added by `deepspeed` without `--no_local_rank`; ranks come from the environment, so it is dropped
before hydra (which would reject it) sees the overrides."""

USAGE = "usage: megadalle <verb> [key=value ...]   (megadalle <verb> --help shows the verb's config)"


@dataclass(frozen=True)
class Verb:
    target: str
    """`module:function` taking the composed DictConfig."""
    summary: str


VERBS: dict[str, Verb] = {
    "prepare": Verb("megadalle.data.prepare:run", "images + captions -> webdataset shards (bad files skipped and reported)"),
    "tokenizer": Verb("megadalle.data.tokenizer:run", "train the sentencepiece BPE tokenizer on the shards' captions"),
    "train-dvae": Verb("megadalle.train.dvae:run", "train the discrete VAE (stage 1) on image shards"),
    "encode": Verb("megadalle.encode:run", "image shards -> token shards (dVAE codes + captions)"),
    "train-clip": Verb("megadalle.train.clip:run", "train the CLIP reranker on image shards"),
    "train": Verb("megadalle.train.transformer:run", "train the Transformer (stage 2) with DeepSpeed ZeRO or pipeline"),
    "export": Verb("megadalle.export:run", "consolidate a training run's checkpoint into safetensors + config JSON"),
    "generate": Verb("megadalle.sample:run", "sample images for a prompt, decode, rerank with CLIP, write a grid"),
    "evaluate": Verb("megadalle.evaluate:run", "CLIP score, FID and KID of a model's samples; JSON + Markdown"),
    "plan": Verb("megadalle.plan:run", "parameters, FLOPs, memory per GPU and a parallel layout for a model size"),
    "demo": Verb("megadalle.demo:run", "the whole pipeline on a small generated data set, on CPU"),
}


def resolve(verb: str):
    """The stage function behind a verb."""
    module_name, function = VERBS[verb].target.split(":")
    return getattr(importlib.import_module(module_name), function)


def print_help() -> None:
    print("megadalle: train DALL-E-style text-to-image models, from image-caption pairs to reranked samples.\n")
    print(USAGE + "\n\nverbs (in pipeline order):")
    for name, verb in VERBS.items():
        print(f"  {name:<11} {verb.summary}")
    print("\nEvery verb takes hydra overrides, e.g. `megadalle plan model=12b gpus=64 gpu_mem_gb=80`.")


def print_verb_help(verb: str) -> None:
    from omegaconf import OmegaConf

    print(f"megadalle {verb}: {VERBS[verb].summary}\n")
    print(f"config (conf/{verb}.yaml); change any value with key=value, a group with group=name:\n")
    print(OmegaConf.to_yaml(compose(verb)))


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print_help()
        return 0 if argv else 2
    verb, rest = argv[0], [a for a in argv[1:] if not LOCAL_RANK_FLAG.match(a)]
    if verb not in VERBS:
        print(f"megadalle: unknown verb {verb!r}.\n", file=sys.stderr)
        print_help()
        return 2
    if "-h" in rest or "--help" in rest:
        print_verb_help(verb)
        return 0
    from hydra.errors import HydraException

    from megadalle.errors import UserError

    try:
        cfg = compose(verb, rest)
        stage = resolve(verb)
        result = stage(cfg)
    except HydraException as err:
        cause = f" ({err.__cause__})" if err.__cause__ else ""
        print(f"megadalle {verb}: bad config: {err}{cause}", file=sys.stderr)
        return 2
    except UserError as err:
        print(f"megadalle {verb}: {err}", file=sys.stderr)
        return 2
    return result if isinstance(result, int) else 0


if __name__ == "__main__":
    sys.exit(main())
