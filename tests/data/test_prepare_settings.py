"""prepare records every PrepareConfig field that decides what it writes (index.json's meta, the rebuild advice of
coverage.py): the list is the dataclass's fields, so a new one is recorded without being listed by hand."""
from dataclasses import fields, make_dataclass

from megadalle.config.data import PrepareConfig
from megadalle.data.prepare import NOT_SETTINGS, SETTINGS, settings


def test_a_new_field_is_a_recorded_setting():
    grown = make_dataclass("GrownPrepareConfig", [("sharpen", float, 0.0)], bases=(PrepareConfig,))
    assert settings(grown) == (*SETTINGS, "sharpen")


def test_every_field_is_a_setting_or_excluded_by_name():
    names = {f.name for f in fields(PrepareConfig)}
    assert set(NOT_SETTINGS) <= names and set(SETTINGS) == names - set(NOT_SETTINGS)
    assert {"input", "output", "num_workers", "report"}.isdisjoint(SETTINGS)
