"""Every key `--help` shows has its help text: the docstring under its dataclass field (megadalle.config.help)."""
import dataclasses
import typing

from megadalle.cli import main
from megadalle.config.help import dataclass_docs, group_schemas
from megadalle.config.verbs import VERB_SCHEMAS


def leaf_fields(cls: type, prefix: str = "") -> list[str]:
    """Dotted names of `cls`'s fields, a nested dataclass's fields in its place."""
    hints = typing.get_type_hints(cls)
    names = []
    for f in dataclasses.fields(cls):
        nested = hints.get(f.name)
        names += leaf_fields(nested, f"{prefix}{f.name}.") if dataclasses.is_dataclass(nested) else [prefix + f.name]
    return names


def schemas() -> list[tuple[str, type]]:
    return [*group_schemas().items(), *((verb, cls) for verb, classes in VERB_SCHEMAS.items() for cls in classes)]


def test_every_declared_field_has_help_text():
    missing = {(where, name) for where, cls in schemas() for name in leaf_fields(cls)
               if name not in dataclass_docs(cls)}
    assert missing == set()


def doc_of(capsys, argv, key):
    """The key's help text, its wrapped lines (those holding only a comment) joined."""
    assert main([*argv, "--help"]) == 0
    lines = capsys.readouterr().out.splitlines()
    at = next(i for i, line in enumerate(lines) if line.strip().startswith(f"{key}:"))
    text = [lines[at].split("#", 1)[1] if "#" in lines[at] else ""]
    for line in lines[at + 1:]:
        if not line.strip().startswith("#"):
            break
        text.append(line.strip()[1:])
    return " ".join(part.strip() for part in text)


def test_help_shows_the_model_the_evaluate_and_the_clip_keys_texts(capsys):
    assert "the paper's 64" in doc_of(capsys, ["train"], "n_layers")
    assert "the paper's 1/8" in doc_of(capsys, ["train"], "text_loss_weight")
    assert "0 keeps all" in doc_of(capsys, ["evaluate"], "top_k")
    assert "KID" in doc_of(capsys, ["evaluate"], "kid_subset_size")
    assert "text tower" in doc_of(capsys, ["train-clip"], "text_width")


def test_sampling_help_says_a_folder_or_run_takes_its_own_pieces_first(capsys):
    """generate's and evaluate's tokenizer and dvae_weights said "null = tokenizer.model / dvae.safetensors beside
    weights": a model folder takes what its bundle.json names, a run directory what its run.json records."""
    for verb in ("generate", "evaluate"):
        for key in ("tokenizer", "dvae_weights", "clip_weights"):
            text = doc_of(capsys, [verb], key)
            assert "model folder's own" in text and "run directory" in text and "else" in text, (verb, key, text)
