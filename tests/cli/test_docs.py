"""What the README and the config files' headers tell a user to type, and how long it takes, agrees with the code
and with itself: a copied command that fails, or two different times for one demo, costs the reader's trust."""
import ast
import re
import shlex
from pathlib import Path

from megadalle.config.compose import compose
from megadalle.config.demo import DemoConfig
from megadalle.preflight.runs import RUN_TASKS

ROOT = Path(__file__).resolve().parents[2]
README = (ROOT / "README.md").read_text()


def test_run_directories_in_the_examples_are_where_training_writes_them():
    used = re.findall(r"\brun=outputs/([^/\s]+)/", README)
    assert used and set(used) <= set(RUN_TASKS.values()), used


def test_the_commands_in_the_examples_compose():
    """Every `megadalle VERB key=value ...` line of the README's shell examples names keys its verb has, of their types
    (the paths are the reader's): the own-images recipe among them. A sweep (`-m`) is its jobs' business."""
    lines = [shlex.split(line.split(" #")[0]) for block in re.findall(r"```bash\n(.*?)```", README, re.S)
             for line in block.splitlines() if line.startswith("megadalle ")]
    commands = [words[1:] for words in lines if "-m" not in words and len(words) > 1]
    assert any(words[0] == "train-clip" for words in commands), "the own-images recipe is gone"
    for verb, *args in commands:
        compose(verb, args)


def test_python_examples_import_every_name_they_use():
    """Comments count: `(or torch.bfloat16)` beside an example without `import torch` sends the reader to a
    NameError. String literals do not (`"model"` is a folder, not a module)."""
    for block in re.findall(r"```python\n(.*?)```", README, re.S):
        tree = ast.parse(block)
        bound = {a.asname or a.name.split(".")[0] for node in ast.walk(tree)
                 if isinstance(node, (ast.Import, ast.ImportFrom)) for a in node.names}
        bound |= {t.id for node in ast.walk(tree) if isinstance(node, ast.Assign) for t in node.targets
                  if isinstance(t, ast.Name)}
        code = re.sub(r"\"[^\"\n]*\"|'[^'\n]*'", '""', block)
        named = set(re.findall(r"(?<![\w.])([A-Za-z_]\w*)\.[A-Za-z_]", code))
        assert named <= bound, (named - bound, block)


def test_the_demos_time_is_the_same_everywhere():
    full = re.search(r"in (\d+) to (\d+) minutes on 2 idle cores", README).groups()
    demo = (ROOT / "conf" / "demo.yaml").read_text()
    assert re.search(r"megadalle demo +\((\d+)-(\d+) minutes on 2 idle cores", demo).groups() == full
    assert re.search(r"in (\d+)-(\d+) minutes on 2 idle cores", (ROOT / "conf/demo/full.yaml").read_text()).groups() \
        == full
    assert "`megadalle demo demo=fast` is the 1-minute version" in README
    assert "demo=fast    (about a minute;" in demo
    assert (ROOT / "conf/demo/fast.yaml").read_text().startswith("# About a minute:")


def test_the_train_dvae_header_gives_the_demos_dvae_recipe():
    """conf/train-dvae.yaml's CPU example is the demo's dVAE stage (megadalle/demo_verbs.py, demo_dvae_config)."""
    header = (ROOT / "conf" / "train-dvae.yaml").read_text().split("defaults:")[0]
    recipe = header[header.index("dvae=tiny"):].replace("#", " ").replace("\\", " ").split("(")[0].split()
    cfg = compose("train-dvae", ["data.shards=shards", *recipe])
    d = DemoConfig()
    assert (cfg.trainer.steps, cfg.trainer.micro_batch, cfg.trainer.lr, cfg.trainer.min_lr, cfg.trainer.ema) == (
        d.dvae_steps, d.dvae_batch, d.dvae_lr, d.dvae_lr / 10, None)
    assert (cfg.dvae.objective.tau_anneal_steps, cfg.dvae.objective.kl_warmup_steps) == (
        d.dvae_steps, max(1, d.dvae_steps // 15))
