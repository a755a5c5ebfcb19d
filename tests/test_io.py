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


def test_an_append_after_a_cut_line_starts_a_new_line(tmp_path):
    """A crash can leave the last line without its newline; the next append must not glue
    its first record onto it (that record would be lost on reading)."""
    path = tmp_path / "progress.jsonl"
    io.append_jsonl(path, {"s": 0})
    with open(path, "a", encoding="utf-8") as handle:
        handle.write('{"s": 1, "tok')  # killed mid-write
    io.append_jsonl(path, [{"s": 1}, {"s": 2}])
    assert io.read_jsonl(path) == [{"s": 0}, {"s": 1}, {"s": 2}]
    io.append_jsonl(path, {"s": 3})  # after a whole line: no blank line in between
    assert path.read_text().splitlines() == ['{"s": 0}', '{"s": 1, "tok', '{"s": 1}', '{"s": 2}',
                                             '{"s": 3}']
