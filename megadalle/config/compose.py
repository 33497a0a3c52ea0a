"""Compose a verb's config from `conf/`: the one place that knows where the YAML files live.

The CLI, the demo and the tests all build configs through `compose`, so a stage called from
Python gets exactly the config the same overrides would give on the command line. Keys written
`???` in the YAML stay required (megadalle.config.required) even where the schema has a default.
"""
from __future__ import annotations

from itertools import takewhile
from pathlib import Path

from omegaconf import DictConfig, open_dict

from megadalle.config.override import parser, printable, quoted, quoted_form, shell_word


PACKAGE = Path(__file__).resolve().parent.parent


def conf_dir(package: Path = PACKAGE) -> Path:
    """The copy of `conf/` installed inside the package, or in a checkout the one beside it. A checkout is told
    by its setup.py: an installed package's parent is site-packages, where a stray `conf/` of another
    distribution was taken for megadalle's own ("Cannot find primary config 'train'")."""
    for candidate in (package / "conf", package.parent / "conf"):
        checkout = candidate.parent == package.parent
        if (candidate / "config.yaml").is_file() and (not checkout or (package.parent / "setup.py").is_file()):
            return candidate
    raise FileNotFoundError(f"no conf/ directory found inside or beside {package}")


def compose(verb: str, overrides: list[str] | None = None) -> DictConfig:
    """The verb's config with `overrides` applied, as a DictConfig (also used by tests and demo)."""
    return compose_with_choices(verb, overrides)[0]


def group_options(group: str, extra: tuple[Path, ...] = ()) -> list[str]:
    """The options of a config group: its YAML files (the `schema` hydra stores is no option), in conf/ and in the
    folders `extra` adds to hydra's search path (`--config-dir`)."""
    return sorted({p.stem for folder in (conf_dir(), *extra) for p in (Path(folder) / group).glob("*.yaml")})


def verb_group_options(verb: str, group: str, extra: tuple[Path, ...] = ()) -> list[str]:
    """The options of `group` that `verb` reads (megadalle.config.verbs.GROUP_OPTIONS), where not all of them; a
    user's own options (in `extra`) are the user's to choose."""
    from megadalle.config.verbs import GROUP_OPTIONS

    own = sorted(set(group_options(group, extra)) - set(group_options(group)))
    return [*(GROUP_OPTIONS.get(verb, {}).get(group, ()) or group_options(group)), *own]


def searching(verb: str, extra: tuple[Path, ...]) -> None:
    """Hydra's compose API, just initialised on conf/, given `extra` (`--config-dir`) in its search path after conf/,
    before the schemas, as hydra's runner has them. A `hydra.searchpath` override, used before, reached the groups
    but not the primary config: `--cfg job` and every `-m` job of `--config-name NAME` (found in `extra`) failed in
    "Cannot find primary config" while the same command without them ran."""
    from hydra._internal.hydra import Hydra
    from hydra._internal.utils import create_config_search_path
    from hydra.core.config_search_path import SearchPathQuery
    from hydra.core.global_hydra import GlobalHydra

    search = create_config_search_path(str(conf_dir()))
    for folder in extra:  # where hydra's runner puts --config-dir (hydra/_internal/utils.py, `add_conf_dir`)
        search.prepend("command-line", f"file://{Path(folder).resolve()}", anchor=SearchPathQuery(provider="schema"))
    GlobalHydra.instance().clear()
    Hydra.create_main_hydra2(task_name=verb, config_search_path=search)


def primary_given(extra: tuple[Path, ...], name: str | None) -> list[str]:
    """`key=` for each key that a primary config of the user's (`--config-name NAME`, found in `extra`) sets: given,
    as a command line's key is, so megadalle.config.required does not take it back to `???`."""
    import yaml

    for folder in extra if name else ():
        path = Path(folder) / f"{name}.yaml"
        if path.is_file():
            return [f"{key}=" for key in dotted(yaml.safe_load(path.read_text()) or {})]
    return []


def dotted(node: dict, prefix: str = "") -> list[str]:
    """The dotted keys a YAML mapping sets, but its defaults list and its `???`."""
    keys = []
    for key, value in node.items():
        if (not prefix and key == "defaults") or value == "???":
            continue
        keys.append(f"{prefix}{key}")
        if isinstance(value, dict):
            keys.extend(dotted(value, f"{prefix}{key}."))
    return keys


def check_group_choices(verb: str, overrides: list[str], extra: tuple[Path, ...] = ()) -> None:
    """A `group=option` naming no YAML file of the group is refused with the real options listed
    (hydra's own message would list the ConfigStore's `schema` entry as an option), and so is an option the verb
    cannot read (megadalle.config.verbs.GROUP_OPTIONS: `train data=images`). Sweeps (`model=tiny,small`) are
    checked option by option; hydra's sweep functions are left to hydra. A group cannot be left out
    (`model=null`, `~model`): every stage reads the groups its verb composes. A group of other verbs only
    (`generate clip=base`) is no group here: its key is refused as undeclared (megadalle.config.declared). `extra`:
    folders of the user's searched too (`--config-dir`), whose options count."""
    from megadalle.config import ConfigError
    from megadalle.config.declared import verb_groups
    from megadalle.config.verbs import VERB_SCHEMAS

    groups = verb_groups(verb)
    for item in overrides:
        key, sep, value = item.lstrip("+~").partition("=")
        if key not in groups or "(" in value:
            continue
        options = group_options(key, extra)
        if item.startswith("~") or "null" in value.split(","):
            raise ConfigError(f"{item}: a config group cannot be left out; choose a {key} config: {', '.join(options)}")
        readable = verb_group_options(verb, key, extra)
        for option in value.split(",") if sep else ():
            if option not in options:
                raise ConfigError(f"{key}={option}: no such {key} config; choose one of {', '.join(options)}")
            if option not in readable:
                readers = " and ".join(v for v in VERB_SCHEMAS
                                       if key in verb_groups(v) and option in verb_group_options(v, key, extra))
                raise ConfigError(f"{key}={option}: {readers} read{'s' if ' and ' not in readers else ''} this {key} "
                                  f"config, not {verb}; {verb} takes {' or '.join(f'{key}={o}' for o in readable)}")


def list_form(key: str, value: str) -> str | None:
    """`key=[a=1,b c]` with each item quoted (`'key=["a=1","b c"]'`), when the value is bracketed and that form
    reads as one list: quoting the whole value would make it one string, which a list setting
    (`demo.dvae_overrides`) refuses."""
    from hydra.errors import HydraException

    if not (value.startswith("[") and value.endswith("]")):
        return None
    candidate = f"{key}=[{','.join(quoted(item.strip()) for item in value[1:-1].split(','))}]"
    try:
        parser().parse_override(candidate)
    except HydraException:
        return None
    return shell_word(candidate)


def one_line(item: str) -> str:
    """An override as typed, where it prints on one line; else as `shell_word` writes it."""
    return item if item.isprintable() else shell_word(item)


BARE_WORD_KEY = {"generate": "prompt"}
"""The key a word typed without `key=` most likely belongs to: `megadalle generate weights=model a red circle`
(the shell's quotes gone) is a prompt."""


def is_bare(item: str) -> bool:
    """Whether a command-line item is no override: no `=`, and not a `~key` deletion."""
    return "=" not in item and not item.startswith("~")


def bare_item(verb: str | None, words: list[str], given: str = "") -> str:
    """The message for consecutive items without `=` (`is_bare`): they set no key, and quoting one as itself (what
    the message once advised) still sets none. For `verb`'s likely key the words are one value, as typed before the
    shell took its quotes away: `a red circle` was advised 'prompt="a"', which drew "a". `given`: that key's value
    typed just before the words (`prompt=a red circle`), the value's first words: advised without them, the prompt
    lost them."""
    key = BARE_WORD_KEY.get(verb or "")
    if key is not None:
        text = " ".join([given, *words] if given else words)
        return f"{one_line(' '.join(words))}: expected key=value; for the {key}, write {quoted_form(key, text)}"
    return f"{one_line(words[0])}: expected key=value" + (f" (megadalle {verb} --help lists the keys)" if verb else "")


def meant_text(value: str) -> str:
    """The text a value hydra cannot read was meant to be: `prompt="a "red" circle"` is README's quoted form typed
    around a prompt with quotes inside, meant as `a "red" circle`; quoting it whole advised a prompt that drew its
    outer quotes too."""
    return value[1:-1] if len(value) >= 2 and value[0] == value[-1] == '"' else value


def check_override_syntax(overrides: list[str], verb: str | None = None, sweeps: bool = False) -> None:
    """An override hydra cannot read as one value is refused with the quoted form that it reads as the text
    given. Prompts and paths are where users meet hydra's grammar: a comma makes a sweep, and an apostrophe,
    a bracket or a letter outside ASCII is syntax unless the value is quoted; hydra's own message
    (`LexerNoViableAltException`, `Ambiguous value`) does not say so. An item without `=` is no override at
    all: said as such (`bare_item`), with the `key=` that `verb` most likely wants. A sweep is refused unless
    `sweeps` (hydra's runner, `-m`, runs them)."""
    from hydra.errors import HydraException

    from megadalle.config import ConfigError

    for at, item in enumerate(overrides):
        key, sep, value = item.partition("=")
        if is_bare(item):
            raise ConfigError(bare_item(verb, list(takewhile(is_bare, overrides[at:]))))
        words = list(takewhile(is_bare, overrides[at + 1:]))
        # Its value, cut by the shell: `prompt=a, red`, `++prompt=a red`, `'prompt="a red"' circle`.
        if sep and words and key.lstrip("+") == BARE_WORD_KEY.get(verb or ""):
            raise ConfigError(bare_item(verb, words, meant_text(value)))
        named, quoted = one_line(item), quoted_form(key, meant_text(value)) if sep else item
        try:
            sweep = parser().parse_override(item).is_sweep_override()
        except HydraException as err:
            reason = printable(str(err).strip().split("\n")[0]) if str(err).strip() else type(err).__name__
            listed = list_form(key, value) if sep else None
            fix = f"{quoted} (as text), or {listed} (as a list)" if listed else quoted
            raise ConfigError(f"{named}: hydra cannot read this value ({reason}); quote it: {fix}") from None
        if sweep and sep and not sweeps:
            raise ConfigError(f"{named}: hydra reads the comma as a sweep over several values; quote the value to keep "
                              f"it as text: {quoted}, or add --multirun to sweep")


def check_overrides(verb: str, overrides: list[str], sweeps: bool = False, extra: tuple[Path, ...] = ()) -> None:
    """The checks every command line passes before hydra sees it, a plain run's and `-m`'s alike: each override
    read as one value (or, with `sweeps`, a sweep), each group option one the verb reads (or one of the user's
    folders `extra`), each key declared."""
    from megadalle.config.declared import check_keys

    check_override_syntax(overrides, verb, sweeps)
    check_group_choices(verb, overrides, extra)
    check_keys(verb, overrides)


def keep_text(cfg: DictConfig, verb: str, overrides: list[str]) -> None:
    """A value given to a text key keeps the text given, in place in `cfg`. Hydra types every override it can
    read as a number or a boolean, and a text key turns that back into other text (`prompt=1e3` sampled
    '1000.0', `prompt=3.10` '3.1', `prompt=true` 'True') or keeps the number (`name=1_000`, `run_dir=2024`:
    ints, which Path() refuses). A key is text where its group's schema types it so (hydra has then already
    made the number text) or where the verb's dataclass declares it `str` (megadalle.config.verbs); other keys
    keep hydra's value (`trainer.lr=1e-3` stays a float), and so does null."""
    from omegaconf import OmegaConf

    from megadalle.config.verbs import declares_text

    for item in overrides:
        override = parser().parse_override(item)
        key = override.key_or_group
        if (override.is_delete() or override.package is not None or override.is_sweep_override()
                or not isinstance(override.value(), (bool, int, float))):
            continue
        if isinstance(OmegaConf.select(cfg, key), str) or ("." not in key and declares_text(verb, key)):
            OmegaConf.update(cfg, key, item.partition("=")[2].strip(), merge=False)


def compose_with_choices(verb: str, overrides: list[str] | None = None, extra: tuple[Path, ...] = (),
                         primary: str | None = None, keep_hydra: bool = False) -> tuple[DictConfig, dict[str, str]]:
    """(config, {group: chosen option}) for the verb and `overrides`; `extra` and `primary` are `--config-dir`'s
    folders and `--config-name`'s config, and `keep_hydra` keeps hydra's own config in it (`cfg.hydra`, for where
    a sweep's jobs go)."""
    from hydra import compose as hydra_compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    from megadalle.config import register_schemas
    from megadalle.config.required import restore

    register_schemas()
    GlobalHydra.instance().clear()
    overrides = list(overrides or [])
    check_overrides(verb, overrides, extra=extra)
    with initialize_config_dir(config_dir=str(conf_dir()), version_base="1.3", job_name=verb):
        if extra:
            searching(verb, extra)
        cfg = hydra_compose(config_name=primary or verb, overrides=overrides,
                            return_hydra_config=True)
    choices = {group: option for group, option in cfg.hydra.runtime.choices.items() if not group.startswith("hydra")}
    with open_dict(cfg):
        if not keep_hydra:
            del cfg["hydra"]
        restore(cfg, conf_dir(), verb, choices, [*overrides, *primary_given(extra, primary)])
    keep_text(cfg, verb, overrides)
    return cfg, choices
