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


def test_help_shows_the_model_the_evaluate_and_the_clip_keys_texts(capsys):
    def doc_of(argv, key):
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

    assert "the paper's 64" in doc_of(["train"], "n_layers")
    assert "the paper's 1/8" in doc_of(["train"], "text_loss_weight")
    assert "0 keeps all" in doc_of(["evaluate"], "top_k")
    assert "KID" in doc_of(["evaluate"], "kid_subset_size")
    assert "text tower" in doc_of(["train-clip"], "text_width")
