"""replica's ConcurrencyLimiter: FIFO admission, capacity changes, cancellation."""

from __future__ import annotations

import asyncio
from typing import List

import pytest

from ray_serving_ext._private.concurrency import ConcurrencyLimiter


async def _settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


async def _enter(limiter: ConcurrencyLimiter, name: str, order: List[str]) -> None:
    await limiter.acquire()
    order.append(name)


def test_waiters_are_admitted_in_arrival_order():
    async def main() -> List[str]:
        limiter = ConcurrencyLimiter(1)
        await limiter.acquire()
        order: List[str] = []
        tasks = [asyncio.ensure_future(_enter(limiter, str(i), order)) for i in range(4)]
        await _settle()
        assert order == [] and limiter.waiting == 4
        for _ in range(4):
            limiter.release()
            await _settle()
        await asyncio.gather(*tasks)
        assert limiter.running == 1 and limiter.waiting == 0
        return order

    assert asyncio.run(main()) == ["0", "1", "2", "3"]


def test_newcomer_does_not_overtake_a_waiter():
    async def main() -> List[str]:
        limiter = ConcurrencyLimiter(1)
        await limiter.acquire()
        order: List[str] = []
        first = asyncio.ensure_future(_enter(limiter, "waiter", order))
        await _settle()
        limiter.release()  # hands the slot to the waiter
        late = asyncio.ensure_future(_enter(limiter, "late", order))
        await _settle()
        assert order == ["waiter"] and not late.done()
        limiter.release()
        await asyncio.gather(first, late)
        return order

    assert asyncio.run(main()) == ["waiter", "late"]


def test_raising_capacity_admits_waiters_and_lowering_it_holds_new_ones():
    async def main() -> None:
        limiter = ConcurrencyLimiter(1)
        await limiter.acquire()
        order: List[str] = []
        tasks = [asyncio.ensure_future(_enter(limiter, str(i), order)) for i in range(3)]
        await _settle()
        limiter.set_capacity(3)
        await _settle()
        assert order == ["0", "1"] and limiter.running == 3 and limiter.waiting == 1
        limiter.set_capacity(1)  # running requests keep going; no one new gets in
        limiter.release()
        limiter.release()
        await _settle()
        assert order == ["0", "1"] and limiter.running == 1
        limiter.release()
        await asyncio.gather(*tasks)
        assert order == ["0", "1", "2"] and limiter.running == 1

    asyncio.run(main())


def test_cancelled_waiter_leaves_the_queue():
    async def main() -> None:
        limiter = ConcurrencyLimiter(1)
        await limiter.acquire()
        order: List[str] = []
        gone = asyncio.ensure_future(_enter(limiter, "gone", order))
        stays = asyncio.ensure_future(_enter(limiter, "stays", order))
        await _settle()
        gone.cancel()
        with pytest.raises(asyncio.CancelledError):
            await gone
        assert limiter.waiting == 1
        limiter.release()
        await stays
        assert order == ["stays"] and limiter.running == 1

    asyncio.run(main())


def test_waiter_cancelled_just_after_being_handed_a_slot_passes_it_on():
    async def main() -> None:
        limiter = ConcurrencyLimiter(1)
        await limiter.acquire()
        order: List[str] = []
        handed = asyncio.ensure_future(_enter(limiter, "handed", order))
        nxt = asyncio.ensure_future(_enter(limiter, "next", order))
        await _settle()
        limiter.release()  # the slot goes to `handed`, which has not resumed yet
        handed.cancel()
        with pytest.raises(asyncio.CancelledError):
            await handed
        await nxt
        assert order == ["next"] and limiter.running == 1 and limiter.waiting == 0

    asyncio.run(main())


def test_waiter_cancelled_then_skipped_by_a_release_still_raises_cancelled():
    # The release runs between the cancel and the waiter's resumption: the
    # cancelled waiter is already out of the queue when it cleans up.
    async def main() -> None:
        limiter = ConcurrencyLimiter(1)
        await limiter.acquire()
        gone = asyncio.ensure_future(limiter.acquire())
        await _settle()
        gone.cancel()
        limiter.release()
        with pytest.raises(asyncio.CancelledError):
            await gone
        assert limiter.running == 0 and limiter.waiting == 0

    asyncio.run(main())
