"""The download probe every downloading plugin asks first: answers within its timeout."""

from __future__ import annotations

import http.server
import socket
import threading

import pytest

from tlbench.data.downloads import download_blocker


@pytest.fixture
def online_settings(monkeypatch):
    for name in ("TLBENCH_OFFLINE", "HF_HUB_OFFLINE"):
        monkeypatch.delenv(name, raising=False)


def test_any_http_answer_counts_and_a_closed_port_does_not(online_settings):
    server = http.server.HTTPServer(("127.0.0.1", 0), http.server.BaseHTTPRequestHandler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_port}/"
    assert download_blocker(url, timeout=2) is None  # 501 for HEAD: the server is there
    server.shutdown()
    server.server_close()
    assert download_blocker(url, timeout=1).startswith("unreachable")  # nothing listens now


@pytest.mark.timeout(30)  # a probe that waited for an answer would never return
def test_a_server_that_never_answers_is_given_up_on_time(online_settings):
    with socket.socket() as silent:  # accepts connections, never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        problem = download_blocker(f"http://127.0.0.1:{silent.getsockname()[1]}/", timeout=0.5)
    assert problem == "no answer within 0.5 s" or problem.startswith("unreachable")


@pytest.mark.parametrize("name, extra", [("TLBENCH_OFFLINE", ()), ("HF_HUB_OFFLINE", ("HF_HUB_OFFLINE",))])
def test_offline_settings_answer_without_asking(online_settings, monkeypatch, name, extra):
    monkeypatch.setenv(name, "1")
    with socket.create_server(("127.0.0.1", 0)) as server:
        url = f"http://127.0.0.1:{server.getsockname()[1]}/"
        assert download_blocker(url, offline_envs=extra) == f"{name} is set"
        server.setblocking(False)
        with pytest.raises(BlockingIOError):  # no connection is waiting: nothing was asked
            server.accept()
