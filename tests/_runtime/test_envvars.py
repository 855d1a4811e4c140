"""envvars.get reads what os.environ holds, changes made at run time included."""
import os

import pytest

from pygpu_ops._runtime import envvars

NAME = "PYGPU_OPS_TEST_ENVVARS_VALUE"


def test_unset_variable_is_none(monkeypatch):
    monkeypatch.delenv(NAME, raising=False)
    assert envvars.get(NAME) is None and os.environ.get(NAME) is None


@pytest.mark.parametrize("value", ["3", "", " 0 ", "naïve", "a=b"])
def test_set_changed_and_removed_at_run_time(monkeypatch, value):
    monkeypatch.setenv(NAME, value)
    assert envvars.get(NAME) == os.environ.get(NAME) == value
    os.environ[NAME] = value + "x"
    assert envvars.get(NAME) == value + "x"
    del os.environ[NAME]
    assert envvars.get(NAME) is None


def test_every_variable_of_the_process_reads_the_same():
    for name, value in os.environ.items():
        assert envvars.get(name) == value
