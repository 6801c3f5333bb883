from __future__ import annotations

import json

import pytest

from harness.store import atomic_dir, atomic_write_text, read_jsonl, write_json, write_jsonl


def test_atomic_write_leaves_nothing_behind_on_failure(tmp_path):
    target = tmp_path / "out.json"
    write_json(target, {"a": 1})

    class Boom(Exception):
        pass

    def records():
        yield {"ok": 1}
        raise Boom

    with pytest.raises(Boom):
        write_jsonl(tmp_path / "records.jsonl", records())
    assert not (tmp_path / "records.jsonl").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.json"]  # no temp files left
    assert json.loads(target.read_text()) == {"a": 1}


def test_atomic_write_replaces_whole_files(tmp_path):
    target = tmp_path / "a.txt"
    atomic_write_text(target, "first")
    atomic_write_text(target, "second")
    assert target.read_text() == "second"
    assert write_jsonl(tmp_path / "r.jsonl", [{"x": "é"}, {"x": 2}]) == 2
    assert read_jsonl(tmp_path / "r.jsonl") == [{"x": "é"}, {"x": 2}]


def test_atomic_dir_only_appears_when_complete(tmp_path):
    target = tmp_path / "policy"
    with pytest.raises(RuntimeError):
        with atomic_dir(target) as tmp:
            (tmp / "weights").write_text("half")
            raise RuntimeError("killed")
    assert not target.exists() and list(tmp_path.iterdir()) == []
    with atomic_dir(target) as tmp:
        (tmp / "weights").write_text("whole")
    assert (target / "weights").read_text() == "whole"
