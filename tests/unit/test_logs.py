"""One logging setup (leviathan.logs): plain messages as the CLIs printed them, our INFO to
stdout and warnings to stderr, and only global rank 0 saying what it does."""

from __future__ import annotations

import logging
import subprocess
import sys

import pytest
from helpers import REPO

from leviathan.logs import RankZeroFilter, global_rank, setup_logging

LIGHTNING_RANK = "lightning_utilities.core.rank_zero"


@pytest.fixture
def clean_root():
    """The root logger and our loggers as they were before the test."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    levels = {n: logging.getLogger(n).level for n in ("leviathan", "analysis", "__main__")}
    yield root
    root.handlers[:] = handlers
    root.setLevel(level)
    for n, lv in levels.items():
        logging.getLogger(n).setLevel(lv)


def record(level: int, name: str = "leviathan.training.run") -> logging.LogRecord:
    return logging.LogRecord(name, level, __file__, 1, "step 1/8 loss 7.6", None, None)


def test_rank_zero_filter_drops_other_ranks_info(monkeypatch):
    monkeypatch.delitem(sys.modules, LIGHTNING_RANK, raising=False)  # rank from the env
    f = RankZeroFilter()
    monkeypatch.setenv("RANK", "1")
    assert global_rank() == 1
    assert not f.filter(record(logging.INFO))  # rank 1: dropped
    assert f.filter(record(logging.WARNING))  # a rank's own warning: kept
    monkeypatch.setenv("RANK", "0")
    assert f.filter(record(logging.INFO))  # rank 0: kept
    monkeypatch.delenv("RANK")
    monkeypatch.setenv("SLURM_PROCID", "3")
    assert global_rank() == 3 and not f.filter(record(logging.INFO))


def test_rank_is_lightnings_once_it_is_loaded(monkeypatch):
    from lightning_utilities.core.rank_zero import rank_zero_only

    monkeypatch.setenv("RANK", "0")
    monkeypatch.setattr(rank_zero_only, "rank", 1, raising=False)  # a DDP trainer set it
    assert global_rank() == 1
    assert not RankZeroFilter().filter(record(logging.INFO))


def test_messages_print_plain_info_to_stdout_warnings_to_stderr(clean_root, capsys,
                                                                 monkeypatch):
    monkeypatch.delitem(sys.modules, LIGHTNING_RANK, raising=False)
    monkeypatch.delenv("RANK", raising=False)
    monkeypatch.delenv("SLURM_PROCID", raising=False)
    monkeypatch.delenv("LOCAL_RANK", raising=False)
    setup_logging()
    setup_logging()  # a second call replaces the first: nothing printed twice
    ours = logging.getLogger("leviathan.sweep.launch")
    ours.info("Sweep %s: submitted %d job(s)", "smoke", 4)
    ours.debug("not shown at INFO")
    ours.warning("warning: MLflow is not reachable")
    logging.getLogger("__main__").info("from a `python -m` module")
    logging.getLogger("somelib").info("a library's INFO is not ours to show")
    logging.getLogger("somelib").warning("a library's warning is")
    quiet = logging.getLogger("quietlib")
    quiet.addHandler(logging.NullHandler())  # as urllib3 does: it decides what it shows
    try:
        logging.getLogger("quietlib.connectionpool").warning("Retrying (Retry(total=6))")
    finally:
        quiet.handlers.clear()
    out, err = capsys.readouterr()
    assert out == "Sweep smoke: submitted 4 job(s)\nfrom a `python -m` module\n"
    assert err == "warning: MLflow is not reachable\na library's warning is\n"

    setup_logging(info_to_stderr=True)  # stdout carries JSON
    ours.info("sync: 0 run folder(s)")
    out, err = capsys.readouterr()
    assert out == "" and err == "sync: 0 run folder(s)\n"

    monkeypatch.setenv("RANK", "1")
    ours.info("rank 1 says nothing")
    ours.error("but its errors show")
    assert capsys.readouterr().err == "but its errors show\n"


def test_hydras_console_handler_is_replaced_its_log_file_kept(clean_root, tmp_path, capsys):
    console = logging.StreamHandler(sys.stdout)  # what Hydra's job logging installs
    file = logging.FileHandler(tmp_path / "train.log")
    clean_root.addHandler(console)
    clean_root.addHandler(file)
    clean_root.setLevel(logging.INFO)
    setup_logging()
    assert console not in clean_root.handlers and file in clean_root.handlers
    logging.getLogger("leviathan.training.engine").info("resuming from last.ckpt")
    file.flush()
    assert capsys.readouterr().out == "resuming from last.ckpt\n"
    assert "resuming from last.ckpt" in (tmp_path / "train.log").read_text()
    file.close()


def test_the_logging_setup_imports_neither_torch_nor_lightning():
    code = ("import sys; from leviathan.logs import setup_logging; setup_logging(); "
            "import logging; logging.getLogger('leviathan').info('x'); "
            "bad = [m for m in ('torch', 'lightning', 'lightning_utilities') if m in sys.modules]; "
            "sys.exit(str(bad) if bad else 0)")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout == "x\n"
