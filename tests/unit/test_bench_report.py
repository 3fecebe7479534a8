"""The benchmark comparison table: ratios against the fastest Ray Serve mode (no Ray needed)."""

from pathlib import Path

import pytest

from benchmarks import report, systems


def _result(rps64: float, p50_1: float, rss: float) -> dict:
    return {
        "http_noop": {"64": {"rps": rps64}, "1": {"p50_ms": p50_1}},
        "memory": {"rss_mib": rss},
    }


def _row(rows: list, label: str) -> dict:
    return next(row for row in rows if row["metric"] == label)


def test_best_mode_is_highest_for_throughput_and_lowest_for_latency() -> None:
    results = {
        "ours": _result(rps64=5000, p50_1=0.5, rss=300),
        "rayserve": _result(rps64=1000, p50_1=1.0, rss=800),
        "rayserve-throughput": _result(rps64=3000, p50_1=2.0, rss=900),
        "rayserve-haproxy": _result(rps64=2000, p50_1=3.0, rss=700),
    }
    rows = report.compare(results)

    rps = _row(rows, "HTTP no-op req/s @64")
    assert rps["best_rayserve_mode"] == "rayserve-throughput"
    assert rps["best_rayserve"] == 3000
    assert abs(rps["ratio_ours_over_best_rayserve"] - 5000 / 3000) < 1e-12
    assert rps["status"] == "MISS"  # target >= 2x the best mode, not the default one (5x)

    p50 = _row(rows, "HTTP no-op p50 @1")
    assert p50["best_rayserve_mode"] == "rayserve"
    assert p50["ratio_ours_over_best_rayserve"] == 0.5

    rss = _row(rows, "Serving actors RSS")
    assert rss["best_rayserve_mode"] == "rayserve-haproxy"
    assert abs(rss["ratio_ours_over_best_rayserve"] - 300 / 700) < 1e-12


def test_missing_modes_are_skipped_and_ties_go_to_the_first_mode() -> None:
    assert report.best_mode({"rayserve": None, "rayserve-haproxy": 5.0}, report.HIGHER) == "rayserve-haproxy"
    assert report.best_mode({"rayserve": 2.0, "rayserve-throughput": 2.0}, report.LOWER) == "rayserve"
    assert report.best_mode({"ours": 1.0}, report.HIGHER) is None

    rows = report.compare({"ours": _result(100, 1, 1)})
    row = _row(rows, "HTTP no-op req/s @64")
    assert row["best_rayserve_mode"] is None and row["ratio_ours_over_best_rayserve"] is None
    assert row["status"] == "n/a"


def test_table_has_a_column_per_system_and_names_the_best_mode() -> None:
    results = {
        "ours": _result(9000, 0.5, 300),
        "rayserve-haproxy": _result(2000, 3.0, 700),
        "uvicorn": {"http_noop": {"64": {"rps": 20000}}, "cpu_at_64": {"us_per_request": {"serving": 40.0}}},
    }
    table = report.format_table(report.compare(results))
    header = table.splitlines()[0]
    for column in ("ours", "RS default", "RS throughput", "RS haproxy", "uvicorn", "best RS", "ours/best RS"):
        assert column in header
    rps_line = next(line for line in table.splitlines() if "HTTP no-op req/s @64 " in line)
    assert "haproxy" in rps_line and "4.50x" in rps_line and "20,000" in rps_line
    cpu_line = next(line for line in table.splitlines() if "CPU/request proxy+replica" in line)
    assert "40.00" in cpu_line


def test_each_rayserve_mode_gets_its_switches_and_nothing_inherited() -> None:
    base = {"PATH": "/bin", "RAY_SERVE_ENABLE_HA_PROXY": "1", "RAY_SERVE_SOMETHING": "x"}
    with systems.system_env("rayserve", base) as env:
        assert env["RAY_SERVE_THROUGHPUT_OPTIMIZED"] == "0" and env["RAY_SERVE_ENABLE_HA_PROXY"] == "0"
        assert "RAY_SERVE_SOMETHING" not in env and env["PATH"] == "/bin"
    with systems.system_env("rayserve-throughput", base) as env:
        assert systems.mode_env_of(env) == {"RAY_SERVE_THROUGHPUT_OPTIMIZED": "1", "RAY_SERVE_ENABLE_HA_PROXY": "0"}
    with systems.system_env("rayserve-haproxy", base) as env:
        assert systems.mode_env_of(env) == {"RAY_SERVE_THROUGHPUT_OPTIMIZED": "1", "RAY_SERVE_ENABLE_HA_PROXY": "1"}
        haproxy_dir = Path(env["RAY_SERVE_HAPROXY_SERVER_STATE_BASE"])
        assert haproxy_dir.is_dir()
        # <dir>/<56-hex node id>/metrics.sock must fit a unix socket address (107 bytes).
        assert len(str(haproxy_dir / ("0" * 56) / "metrics.sock")) < 107
    assert not haproxy_dir.exists()


def test_full_run_timeouts_keep_the_later_systems_reserves_within_the_budget() -> None:
    from benchmarks import run

    order = list(systems.ALL_SYSTEMS)
    left = run.FULL_BUDGET_S
    for i, system in enumerate(order):  # every system uses its whole timeout
        timeout = run.timeout_for(system, order[i + 1 :], quick=False, budget_left_s=left)
        assert timeout >= run.RESERVE_S[system]
        left -= timeout
    assert left >= 0
    assert run.timeout_for("ours", [], quick=True, budget_left_s=0) == run.TIMEOUT_S["ours"][0]


def test_proc_readers_see_this_process_cpu_and_listening_socket() -> None:
    import os
    import socket

    from benchmarks import proccpu

    window = proccpu.CpuWindow({"me": [os.getpid()], "gone": [2**22 + 12345]})
    window.start()
    deadline = proccpu.cpu_seconds(os.getpid()) + 0.05
    while proccpu.cpu_seconds(os.getpid()) < deadline:
        sum(range(10_000))
    seconds = window.stop()
    assert seconds["me"] >= 0.04 and seconds["gone"] == 0.0
    assert window.per_request_us(100)["me"] == pytest.approx(seconds["me"] * 1e4)

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        port = sock.getsockname()[1]
        assert proccpu.listener_pids(port, [os.getpid()]) == [os.getpid()]
    assert proccpu.listener_pids(port, [os.getpid()]) == []
