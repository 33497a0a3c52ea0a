"""What `megadalle --help`, `megadalle VERB --help` (or `megadalle help VERB`) and `megadalle --version` print."""
from __future__ import annotations


def version() -> str:
    """The installed package's version (setup.py's), which a bug report asks for."""
    from importlib import metadata

    try:
        return metadata.version("megadalle")
    except metadata.PackageNotFoundError:
        return "(not installed: run from a checkout)"


def print_help(verbs: dict, usage: str) -> None:
    """The verbs, each with its one-line summary, in pipeline order."""
    print("megadalle: train DALL-E-style text-to-image models, from image-caption pairs to reranked samples.\n")
    print(usage + "\n\nverbs (in pipeline order):")
    for name, verb in verbs.items():
        print(f"  {name:<11} {verb.summary}")
    print("\nEvery verb takes hydra overrides, e.g. `megadalle plan model=12b gpus=64 gpu_mem_gb=80`.")


def print_verb_help(verb: str, summary: str, args: list[str]) -> None:
    """The verb's config with the overrides of `args` applied, a docstring beside each key, and each group's options.
    Hydra's flags among `args` are no overrides (`-m` was refused as one); with `-m`, a sweep's values are left out
    (they are several configs), and `--config-dir`'s options count."""
    from megadalle.config.compose import compose_with_choices, conf_dir, verb_group_options
    from megadalle.config.help import all_docs, render
    from megadalle.config.verbs import VERB_SCHEMAS
    from megadalle.hydra_app import config_flags, is_multirun, override_key, split_flags
    from megadalle.sweep_jobs import swept_keys

    flags, overrides = split_flags(args)
    extra, primary = config_flags(flags)
    if is_multirun(flags):
        swept = swept_keys(overrides)
        overrides = [item for item in overrides if override_key(item) not in swept]
    cfg, choices = compose_with_choices(verb, overrides, extra, primary)
    print(f"megadalle {verb}: {summary}\n")
    if choices:
        print("groups (group=option; [chosen]):")
        keys = list(cfg)
        for group, chosen in sorted(choices.items(), key=lambda item: keys.index(item[0]) if item[0] in keys else 0):
            options = " ".join(f"[{o}]" if o == chosen else o for o in verb_group_options(verb, group, extra))
            print(f"  {group:<10} {options}")
        print()
    print(f"config (conf/{verb}.yaml{' + ' + ' '.join(overrides) if overrides else ''}); key=value changes a value, "
          "??? must be given:\n")
    docs = all_docs(conf_dir(), verb, list(VERB_SCHEMAS.get(verb, ())), list(choices))
    print("\n".join(render(cfg, docs)))
