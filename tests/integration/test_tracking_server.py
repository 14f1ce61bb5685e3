"""The local MLflow server helper: start, reuse, and fail fast naming the URI."""

from __future__ import annotations

import time

import pytest

from leviathan.tracking.server import (
    TrackingUnreachable,
    check_reachable,
    ensure_local_server,
    free_port,
    is_up,
)


def test_unreachable_uri_fails_fast_naming_it():
    uri = f"http://127.0.0.1:{free_port()}"
    t0 = time.monotonic()
    with pytest.raises(TrackingUnreachable) as err:
        check_reachable(uri, timeout=1.0)
    assert time.monotonic() - t0 < 10
    assert uri in str(err.value) and "tracking.uri" in str(err.value)


def test_remote_uri_is_never_started(tmp_path):
    with pytest.raises(TrackingUnreachable, match="203.0.113.1"):
        ensure_local_server("http://203.0.113.1:5999", tmp_path)


def test_file_store_needs_no_server():
    check_reachable("file:///tmp/nowhere")  # a local store: nothing to reach


@pytest.mark.integration
def test_running_server_answers_and_is_reused(mlflow_server, tmp_path, caplog):
    assert is_up(mlflow_server)
    with caplog.at_level("INFO", logger="leviathan.tracking.server"):
        server = ensure_local_server(mlflow_server, tmp_path)
    said = [r.getMessage() for r in caplog.records if r.name == "leviathan.tracking.server"]
    assert server.process is None and said == []  # reused, not started again
    server.stop()  # stopping a reused server is a no-op
    assert is_up(mlflow_server)


@pytest.mark.integration
@pytest.mark.slow
def test_ensure_starts_a_local_server_when_silent(tmp_path, caplog):
    uri = f"http://127.0.0.1:{free_port()}"
    with caplog.at_level("INFO", logger="leviathan.tracking.server"):
        server = ensure_local_server(uri, tmp_path / "store")
    said = [r.getMessage() for r in caplog.records if r.name == "leviathan.tracking.server"]
    try:
        assert server.process is not None and is_up(uri)
        assert said and uri in said[0]
        assert (tmp_path / "store" / "mlflow.db").exists()
    finally:
        server.stop()
    assert not is_up(uri)
