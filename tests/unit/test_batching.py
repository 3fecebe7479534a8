"""@serve.batch without Ray: batching by size and time, errors, per-instance queues, validation."""

import asyncio
from typing import List

import pytest

import ray_serving_ext as serve


class Model:
    def __init__(self) -> None:
        self.batches: List[List[int]] = []

    @serve.batch(max_batch_size=4, batch_wait_timeout_s=0.05)
    async def double(self, xs: List[int]) -> List[int]:
        self.batches.append(list(xs))
        return [x * 2 for x in xs]


def test_concurrent_calls_share_batches_and_get_their_own_results():
    model = Model()

    async def main():
        return await asyncio.gather(*[model.double(i) for i in range(10)])

    assert asyncio.run(main()) == [i * 2 for i in range(10)]
    assert [len(b) for b in model.batches] == [4, 4, 2]
    assert sum(model.batches, []) == list(range(10))


def test_a_lone_call_goes_after_the_timeout():
    model = Model()

    async def main():
        loop = asyncio.get_running_loop()
        start = loop.time()
        result = await model.double(21)
        return result, loop.time() - start

    result, elapsed = asyncio.run(main())
    assert result == 42
    assert 0.04 <= elapsed < 1.0
    assert model.batches == [[21]]


def test_errors_reach_every_caller_of_the_batch():
    @serve.batch(max_batch_size=3, batch_wait_timeout_s=0.05)
    async def boom(xs):
        raise ValueError(f"bad batch of {len(xs)}")

    async def main():
        return await asyncio.gather(*[boom(i) for i in range(3)], return_exceptions=True)

    results = asyncio.run(main())
    assert all(isinstance(r, ValueError) and "bad batch of 3" in str(r) for r in results)


def test_wrong_result_length_is_an_error():
    @serve.batch(max_batch_size=2, batch_wait_timeout_s=0.01)
    async def short(xs):
        return xs[:1]

    async def main():
        return await asyncio.gather(short(1), short(2), return_exceptions=True)

    results = asyncio.run(main())
    assert all(isinstance(r, TypeError) and "one result per input" in str(r) for r in results)


def test_instances_have_separate_queues_and_limits_change_at_run_time():
    a, b = Model(), Model()
    a.double.set_max_batch_size(2)

    async def main():
        return await asyncio.gather(*[a.double(i) for i in range(4)], *[b.double(i) for i in range(4)])

    asyncio.run(main())
    assert [len(x) for x in a.batches] == [2, 2]
    assert [len(x) for x in b.batches] == [2, 2]  # the limit is the decorated function's, shared
    a.double.set_max_batch_size(4)


def test_validation():
    with pytest.raises(TypeError, match="async"):
        serve.batch(lambda xs: xs)
    with pytest.raises(ValueError, match="max_batch_size"):
        serve.batch(max_batch_size=0)(Model.double.__wrapped__)
    with pytest.raises(ValueError, match="batch_wait_timeout_s"):
        serve.batch(batch_wait_timeout_s=-1)(Model.double.__wrapped__)


class Tokens:
    """Batches bounded by the summed length of the strings, not by their count."""

    def __init__(self) -> None:
        self.batches: List[List[str]] = []

    @serve.batch(max_batch_size=6, batch_wait_timeout_s=0.05, batch_size_fn=lambda items: sum(len(s) for s in items))
    async def upper(self, texts: List[str]) -> List[str]:
        self.batches.append(list(texts))
        return [t.upper() for t in texts]


def test_batch_size_fn_bounds_the_summed_size_and_keeps_order():
    model = Tokens()
    texts = ["aaa", "bb", "c", "dddd", "ee", "ffffff", "g"]

    async def main():
        return await asyncio.gather(*[model.upper(t) for t in texts])

    assert asyncio.run(main()) == [t.upper() for t in texts]
    assert all(sum(len(t) for t in b) <= 6 for b in model.batches)
    assert sum(model.batches, []) == texts  # an item that did not fit leads the next batch
    assert model.batches == [["aaa", "bb", "c"], ["dddd", "ee"], ["ffffff"], ["g"]]


def test_batch_size_fn_item_bigger_than_the_limit_fails_only_its_caller():
    model = Tokens()

    async def main():
        return await asyncio.gather(model.upper("x" * 7), model.upper("ok"), return_exceptions=True)

    too_big, ok = asyncio.run(main())
    assert isinstance(too_big, RuntimeError) and "greater than max_batch_size" in str(too_big)
    assert ok == "OK"
    assert model.batches == [["ok"]]


def test_batch_size_fn_must_be_callable_and_sync_functions_are_refused():
    with pytest.raises(TypeError, match="batch_size_fn must be a callable"):
        serve.batch(batch_size_fn=3)
    with pytest.raises(TypeError, match="must be 'async def'"):
        @serve.batch
        def sync(xs):
            return xs
    with pytest.raises(TypeError, match="must be 'async def'"):
        serve.batch(max_batch_size=2)(lambda xs: xs)


def test_each_decorated_function_gets_its_own_limits():
    deco = serve.batch(max_batch_size=3)

    @deco
    async def f(xs):
        return xs

    @deco
    async def g(xs):
        return xs

    f.set_max_batch_size(1)
    assert f._serve_batch_config.max_batch_size == 1
    assert g._serve_batch_config.max_batch_size == 3


class Streamer:
    def __init__(self) -> None:
        self.batches: List[List[int]] = []
        self.closed = 0

    @serve.batch(max_batch_size=3, batch_wait_timeout_s=0.05)
    async def count(self, ns: List[int]):
        self.batches.append(list(ns))
        try:
            for step in range(max(ns)):
                yield [step if step < n else StopIteration for n in ns]
        finally:
            self.closed += 1


def test_a_streaming_batch_gives_each_caller_its_own_stream():
    model = Streamer()

    async def collect(n):
        return [x async for x in model.count(n)]

    async def main():
        return await asyncio.gather(collect(1), collect(3), collect(2))

    assert asyncio.run(main()) == [[0], [0, 1, 2], [0, 1]]
    assert model.batches == [[1, 3, 2]] and model.closed == 1


def test_a_streaming_batch_error_reaches_every_caller():
    class Broken:
        @serve.batch(max_batch_size=2, batch_wait_timeout_s=0.05)
        async def gen(self, xs):
            yield [x for x in xs]
            raise ValueError("mid-stream")

    broken = Broken()

    async def collect(x):
        got = []
        with pytest.raises(ValueError, match="mid-stream"):
            async for value in broken.gen(x):
                got.append(value)
        return got

    async def main():
        return await asyncio.gather(collect("a"), collect("b"))

    assert asyncio.run(main()) == [["a"], ["b"]]


def test_a_caller_leaving_a_stream_early_does_not_stop_the_others():
    model = Streamer()

    async def first_only(n):
        async for x in model.count(n):
            return x

    async def collect(n):
        return [x async for x in model.count(n)]

    async def main():
        return await asyncio.gather(first_only(5), collect(4))

    assert asyncio.run(main()) == [0, [0, 1, 2, 3]]


def test_batches_are_split_by_multiplexed_model_id():
    from ray_serving_ext.context import RequestContext, _set_request_context

    model = Model()

    async def call(x, model_id):
        _set_request_context(RequestContext(request_id=model_id, multiplexed_model_id=model_id))
        return await model.double(x)

    async def main():
        return await asyncio.gather(call(1, "a"), call(2, "b"), call(3, "a"))

    assert asyncio.run(main()) == [2, 4, 6]
    assert sorted(model.batches) == [[1, 3], [2]]
