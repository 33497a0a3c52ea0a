"""One way to warn (megadalle.warn), on a line of its own under a progress bar: the CLIP checks' warnings were
printed straight after evaluate's bar, on its line, beside the sampling verbs' own helper that was not."""
import sys

from tqdm import tqdm

from megadalle.sampling import compatible, prompt
from megadalle.warn import say_all, warn


def test_a_warning_under_a_progress_bar_begins_its_own_line(capsys):
    with tqdm(total=2, file=sys.stderr, ascii=True) as bar:
        bar.update(1)
        warn("one")
        say_all(["two", "three"])
        prompt.warn("four")
        bar.update(1)
    lines = [line.rsplit("\r", 1)[-1] for line in capsys.readouterr().err.split("\n")]
    for text in ("[megadalle] warning: one", "[megadalle] warning: two", "[megadalle] warning: three",
                 "[generate] four"):
        assert text in lines


def test_the_checks_warn_by_returning_what_to_say(tmp_path):
    """check_clip_tokenizer printed its warning at once, before the checks after it could refuse the run."""
    from tests.tiny_models import write_tiny_models

    write_tiny_models(tmp_path)
    (tmp_path / "clip.json").write_text((tmp_path / "clip.json").read_text().replace('"tokenizer"', '"other"'))
    warnings = compatible.check_clip_tokenizer(tmp_path / "clip.safetensors", tmp_path / "tokenizer.model", "0" * 64)
    assert len(warnings) == 1 and "records no tokenizer" in warnings[0]
    assert not hasattr(compatible, "warn")
