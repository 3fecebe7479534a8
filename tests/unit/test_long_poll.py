"""Long polling without Ray: the host's versions and timeouts, and a client fed by a
fake controller whose `listen_for_change.remote` is an awaitable. Every wait is bounded."""

from __future__ import annotations

import asyncio
from typing import Any, Callable, Dict, List

from ray_serving_ext._private.long_poll import LongPollClient, LongPollHost

BOUND_S = 5.0  # no test waits longer than this for anything


def run(coro: Any) -> Any:
    return asyncio.run(asyncio.wait_for(coro, BOUND_S))


def test_versions_start_at_an_epoch_and_count_up() -> None:
    async def go() -> None:
        host = LongPollHost()
        host.notify_changed("routes", {"/": 1})
        (first, value), = (await host.listen_for_change({"routes": -1}, timeout_s=1)).values()
        assert value == {"/": 1} and first > 0  # a restarted controller never repeats a version
        host.notify_changed("routes", {"/": 2})
        updates = await host.listen_for_change({"routes": first}, timeout_s=1)
        assert updates == {"routes": (first + 1, {"/": 2})}
        assert host.get("routes") == {"/": 2} and host.get("missing") is None

    run(go())


def test_listen_times_out_empty_and_ignores_unasked_and_unknown_keys() -> None:
    async def go() -> None:
        host = LongPollHost()
        host.notify_changed("a", 1)
        version = (await host.listen_for_change({"a": -1}, timeout_s=1))["a"][0]
        loop = asyncio.get_running_loop()
        started = loop.time()
        assert await host.listen_for_change({"a": version, "unknown": -1}, timeout_s=0.1) == {}
        assert loop.time() - started >= 0.09
        host.notify_changed("b", 2)  # not asked for: still nothing for this caller
        assert await host.listen_for_change({"a": version}, timeout_s=0.05) == {}

    run(go())


def test_a_waiting_listener_wakes_on_change() -> None:
    async def go() -> None:
        host = LongPollHost()
        host.notify_changed("a", 1)
        version = (await host.listen_for_change({"a": -1}, timeout_s=1))["a"][0]
        waiter = asyncio.ensure_future(host.listen_for_change({"a": version}, timeout_s=BOUND_S))
        await asyncio.sleep(0.05)
        assert not waiter.done()
        host.notify_changed("a", 2)
        assert await asyncio.wait_for(waiter, 1) == {"a": (version + 1, 2)}

    run(go())


class FakeController:
    """`listen_for_change.remote(versions)` is an awaitable answered by a real host,
    after `failures` calls that raise (a controller that is restarting)."""

    def __init__(self, host: LongPollHost, failures: int = 0) -> None:
        self.host = host
        self.failures = failures
        self.calls: List[Dict[str, int]] = []
        controller = self

        class _Listen:
            def remote(self, versions: Dict[str, int]) -> Any:
                controller.calls.append(dict(versions))
                if controller.failures:
                    controller.failures -= 1
                    raise ConnectionError("controller restarting")
                return controller.host.listen_for_change(versions, timeout_s=0.2)

        self.listen_for_change = _Listen()


async def until(condition: Callable[[], bool]) -> None:
    while not condition():
        await asyncio.sleep(0.01)


def test_client_feeds_callbacks_with_newest_values_and_survives_errors() -> None:
    async def go() -> None:
        host = LongPollHost()
        controller = FakeController(host, failures=2)
        seen: List[Any] = []

        def bad(value: Any) -> None:
            raise ValueError("callback bug")

        host.notify_changed("routes", "r1")
        host.notify_changed("other", "o1")
        client = LongPollClient(lambda: controller, {"routes": seen.append, "other": bad},
                                asyncio.get_running_loop())
        try:
            await until(lambda: seen == ["r1"])  # after two failed calls it retried
            assert controller.calls[0] == {"routes": -1, "other": -1}
            host.notify_changed("routes", "r2")  # a failing callback did not stop updates
            await until(lambda: seen == ["r1", "r2"])
            await asyncio.sleep(0.3)  # long polls time out and are renewed: no repeats
            assert seen == ["r1", "r2"]
            assert controller.calls[-1]["routes"] == host._snapshots["routes"][0]
        finally:
            client.stop()
        await asyncio.wait([client._task], timeout=1)
        assert client._task.cancelled()  # stop() ends the polling task

    run(go())
