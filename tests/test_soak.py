"""The short soak (bench/soak.py): mixed load on a master/slave pair, the master killed with
SIGKILL twice; nothing confirmed may be lost, nothing may arrive twice."""

import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "bench"))

import soak  # noqa: E402


def test_short_soak_loses_nothing(tmp_path, capsys):
    run = soak.Soak(seconds=12, kill_every=5, workdir=str(tmp_path))
    code = run.run()
    out = capsys.readouterr().out
    assert run.kills >= 2, out
    for key in ("queue", "tx", "sched"):
        sent, got = run.sent[key], run.got[key]
        assert sent, key
        assert set(sent) <= set(got), "%s lost %d\n%s" % (key, len(set(sent) - set(got)), out)
        assert len(got) == len(set(got)), "%s duplicates\n%s" % (key, out)
    assert not set(run.got["tx"]) & run.rolled_back_bodies
    assert code == 0, out
