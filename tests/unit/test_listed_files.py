"""megadalle.listed_files: only files a verb's own record lists, of its own names, are the verb's."""
import json
import re

from megadalle.listed_files import listed_files, remove_listed_files

OWN = re.compile(r"own_\d\.png")


def files_of(record):
    return record["files"]


def test_only_listed_files_of_the_verbs_names_are_removed(tmp_path):
    for name in ("own_1.png", "own_2.png", "own_x.png", "notes.txt"):
        (tmp_path / name).write_text("")
    listed = ["own_1.png", "own_x.png", "notes.txt", 3, "own_9.png"]
    (tmp_path / "record.json").write_text(json.dumps({"files": listed}))
    assert listed_files(tmp_path, "record.json", files_of, OWN) == [tmp_path / "own_1.png", tmp_path / "own_9.png"]
    assert remove_listed_files(tmp_path, "record.json", files_of, OWN)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt", "own_2.png", "own_x.png", "record.json"]


def test_without_a_record_of_the_verbs_nothing_is_its(tmp_path):
    (tmp_path / "own_1.png").write_text("")
    assert listed_files(tmp_path, "record.json", files_of, OWN) is None  # no record
    for text in ("{not json", json.dumps(["own_1.png"]), json.dumps({"other": 1})):
        (tmp_path / "record.json").write_text(text)
        assert not remove_listed_files(tmp_path, "record.json", files_of, OWN)
    assert (tmp_path / "own_1.png").exists()
