"""`serve --state-dir DIR` as the settings it stands for: the emulator's directory and, unless a
store is named, the database inside it."""

from __future__ import annotations

import argparse
from pathlib import Path

from tuningd.config import settings_from
from tuningd.serve import flag_overrides


def args(**values: str) -> argparse.Namespace:
    return argparse.Namespace(**values)


def test_state_dir_holds_the_emulator_state_and_the_database(tmp_path: Path) -> None:
    """--state-dir sets emulator.state_dir and store.path DIR/tuningd.db, both absolute."""
    env = flag_overrides(args(state_dir="demo"), {})
    settings = settings_from({}, env)
    assert settings.emulator.state_dir == str(Path("demo").absolute())
    assert settings.store.path == str(Path("demo").absolute() / "tuningd.db")


def test_a_named_store_wins_over_the_state_dir(tmp_path: Path) -> None:
    """--store, or TUNINGD_STORE_PATH / _URL, keeps the database where it says."""
    db = str(tmp_path / "elsewhere.db")
    assert flag_overrides(args(state_dir="d", store=db), {})["TUNINGD_STORE_PATH"] == db
    assert flag_overrides(args(state_dir="d"), {"TUNINGD_STORE_PATH": db})[
        "TUNINGD_STORE_PATH"] == db
    url = "postgresql://u@h/db"
    assert "TUNINGD_STORE_PATH" not in flag_overrides(args(state_dir="d"),
                                                      {"TUNINGD_STORE_URL": url})


def test_no_state_dir_changes_nothing() -> None:
    """Without the flag the emulator keeps no state and the store is as configured."""
    env = flag_overrides(args(), {})
    assert "TUNINGD_EMULATOR_STATE_DIR" not in env and "TUNINGD_STORE_PATH" not in env
    assert settings_from({}, env).emulator.state_dir == ""
