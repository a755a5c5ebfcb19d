"""rl_onoff.io: writes are atomic and readable like any file; NPZ loads never unpickle."""

import os
import stat

import numpy as np
import pytest

from rl_onoff import io


def test_a_failed_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path):
    path = tmp_path / "summary.json"
    io.write_json(path, {"accuracy": 0.5})

    def crash(handle):
        handle.write(b"{\"accur")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        io._atomic_write(path, crash)
    assert io.read_json(path) == {"accuracy": 0.5}
    assert [p.name for p in tmp_path.iterdir()] == ["summary.json"]


def test_written_files_get_the_mode_a_plain_open_would_give(tmp_path):
    io.write_json(tmp_path / "mine.json", {})
    with open(tmp_path / "plain.json", "w"):
        pass
    mode = lambda name: stat.S_IMODE(os.stat(tmp_path / name).st_mode)  # noqa: E731
    assert mode("mine.json") == mode("plain.json")


def test_npz_loads_refuse_pickled_arrays(tmp_path):
    np.savez(tmp_path / "objects.npz", ragged=np.array([[1], [2, 3]], dtype=object))
    with pytest.raises(ValueError, match="pickle"):
        io.load_npz(tmp_path / "objects.npz")["ragged"]
