"""`megadalle <verb> --help` as a user reads it: where each key's text comes from, how a value is written, and the
layout of the comments beside the keys. Expectations come from conf/*.yaml read as plain text and YAML, and from
the schemas' source read with `ast`, never from megadalle.config.help itself."""
import ast
import inspect
import re

import yaml

from megadalle.config.compose import conf_dir
from megadalle.config.model import TransformerConfig
from tests.unit.helpers import help_lines, line_of


def comment(line: str) -> str:
    """The text after `# ` of one help line."""
    return line.split("# ", 1)[1]


def documented(lines: list[str], start: str) -> str:
    """The whole comment of the key whose line starts with `start`: its first line and the lines wrapped under it."""
    at = next(i for i, line in enumerate(lines) if line.strip().startswith(start))
    column = lines[at].index("# ")
    text = [comment(lines[at])]
    for line in lines[at + 1:]:
        if line[:column].strip() or line[column:column + 2] != "# ":
            break
        text.append(line[column + 2:])
    return " ".join(text)


def field_docstring(cls: type, name: str) -> str:
    """The string literal under the field `name` of `cls`, whitespace folded, read here from the class's source."""
    body = ast.parse(inspect.getsource(inspect.getmodule(cls))).body
    node = next(n for n in body if isinstance(n, ast.ClassDef) and n.name == cls.__name__)
    for stmt, after in zip(node.body, node.body[1:]):
        if isinstance(stmt, ast.AnnAssign) and stmt.target.id == name:
            return " ".join(after.value.value.split())
    raise KeyError(name)


def test_a_key_no_schema_documents_shows_the_comment_beside_it_in_config_yaml(capsys):
    """`out_dir` is documented by conf/config.yaml's comment alone, which every verb's help shows."""
    line = next(text for text in (conf_dir() / "config.yaml").read_text().splitlines() if text.startswith("out_dir:"))
    expected = line.split("#", 1)[1].strip()
    for verb in ("train", "plan"):
        assert comment(line_of(help_lines(capsys, [verb, "--help"]), "out_dir:")) == expected


def test_a_long_docstring_is_wrapped_under_its_key_whole_and_in_one_column(capsys):
    lines = help_lines(capsys, ["train", "--help"])
    assert documented(lines, "vocab_chunk:") == field_docstring(TransformerConfig, "vocab_chunk")
    assert documented(lines, "image_loss_weight:") == field_docstring(TransformerConfig, "image_loss_weight")
    at = next(i for i, line in enumerate(lines) if line.strip().startswith("vocab_chunk:"))
    assert lines[at + 1].startswith(" " * 44 + "# ") and lines[at + 1][44 + 2] != " "


def test_comments_start_in_one_column_and_no_line_passes_120_characters(capsys):
    lines = help_lines(capsys, ["train", "--help"])
    config = lines[lines.index("config (conf/train.yaml); key=value changes a value, ??? must be given:") + 1:]
    short = [line for line in config if "# " in line and 0 < len(line.split("# ")[0].rstrip()) < 42]
    assert short and {line.index("# ") for line in short} == {44}
    assert max(len(line) for line in config) <= 120
    # A key too long for the column: its comment two spaces after it, continued in that column.
    pattern = line_of(lines, "attention_pattern:")
    text = pattern.split("# ")[0]
    assert text.endswith("]  ") and not text.endswith("]   ")
    after = lines[lines.index(pattern) + 1]
    assert after.index("# ") == len(text)


def test_a_value_is_shown_as_the_yaml_writes_it_text_as_given_and_an_interpolation_unresolved(capsys):
    lines = help_lines(capsys, ["generate", "weights=x", "prompt=a red circle", "--help"])
    assert line_of(lines, "prompt:").split("#")[0].rstrip() == "prompt: a red circle"
    for typed, text in (("prompt=1e3", "1e3"), ('prompt="a, b"', "a, b")):  # text a command line quotes: as it is
        shown = line_of(help_lines(capsys, ["generate", "weights=x", typed, "--help"]), "prompt:")
        assert shown.split("#")[0].rstrip() == f"prompt: {text}"
    generate = yaml.safe_load((conf_dir() / "generate.yaml").read_text())
    assert line_of(lines, "output:").split("#")[0].rstrip() == f"output: {generate['output']}"
    assert (generate["rerank"], generate["keep"]) == (True, None)  # written as YAML writes them
    assert line_of(lines, "rerank:").split("#")[0].rstrip() == "rerank: true"
    assert line_of(lines, "keep:").split("#")[0].rstrip() == "keep: null"


def test_an_empty_mapping_and_a_long_list_are_each_one_line(capsys):
    lines = help_lines(capsys, ["train", "--help"])
    assert line_of(lines, "extra:").split("#")[0].rstrip() == "  extra: {}"
    pattern = ["row", "column", "row", "row"] * 6
    lines = help_lines(capsys, ["train", f"model.attention_pattern=[{','.join(pattern)}]", "--help"])
    value = re.match(r"^  attention_pattern: (\[.*\])  # ", line_of(lines, "attention_pattern:"))
    assert value and yaml.safe_load(value.group(1)) == pattern
