"""exporter.sugon.paging against a list that moves between reads: when every gap is bridged, no job that was
listed throughout was missed, whatever arrived, left, and in whatever order the pages were answered."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from exporter.sugon.paging import Chain, allowance, next_lap

SETTINGS = settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])


class MovingList:
    """Unique job ids in a stable order; between two reads, jobs leave and arrive (anywhere)."""

    def __init__(self, size: int) -> None:
        self.jobs = list(range(size))
        self.next_id = size

    def move(self, leave: list[int], arrive: list[int]) -> None:
        for position in leave:
            if self.jobs:
                del self.jobs[position % len(self.jobs)]
        for position in arrive:
            self.jobs.insert(position % (len(self.jobs) + 1), self.next_id)
            self.next_id += 1

    def read(self, offset: int, limit: int) -> list[int]:
        return self.jobs[offset : offset + limit]


moves = st.lists(st.tuples(st.lists(st.integers(0, 10**6), max_size=6), st.lists(st.integers(0, 10**6), max_size=6)))


@SETTINGS
@given(
    size=st.integers(1, 400),
    step=st.integers(2, 40),
    lap=st.integers(1, 8),
    order=st.randoms(use_true_random=False),
    churn=moves,
)
def test_a_chain_without_gaps_has_read_every_job_listed_throughout(
    size: int, step: int, lap: int, order: object, churn: list[tuple[list[int], list[int]]]
) -> None:
    lap = min(lap, step - 1)
    stride = step - lap
    listed = MovingList(size)
    start = set(listed.jobs)
    churn_left = list(churn)

    def read(offset: int) -> list[int]:
        if churn_left:
            listed.move(*churn_left.pop(0))
        return listed.read(offset, step)

    chain = Chain(step, lap)
    seen: set[int] = set()
    # The main pass: pages at every stride up to the end, answered in a random order (concurrency).
    first = read(0)
    chain.add(0, first)
    seen.update(first)
    offsets = list(range(stride, max(size, 1) + 10 * stride, stride))
    order.shuffle(offsets)  # type: ignore[attr-defined]
    for offset in offsets:
        rows = read(offset)
        chain.add(offset, rows)
        seen.update(rows)
    # Gaps read again, as SugonClient.fetch_jobs does, with a generous allowance.
    gap, offset_next, extra = chain.gap(), None, 0
    while gap is not None and extra < 200:
        offset = chain.first_read(gap) if offset_next is None else offset_next
        rows = read(offset)
        extra += 1
        seen.update(rows)
        offset_next = chain.place(gap, offset, rows)
        gap = chain.gap()
    if gap is None:
        throughout = start & set(listed.jobs)
        assert throughout <= seen


def test_a_full_last_page_is_a_gap_at_the_end_until_a_read_shows_the_end() -> None:
    chain = Chain(100, 1)
    chain.add(0, list(range(100)))
    chain.add(99, list(range(99, 199)))  # full; the read after it found nothing: the list shrank meanwhile
    assert chain.gap() == 1 and chain.first_read(1) == 99
    assert chain.place(1, 99, []) == 0  # nothing there any more: read back
    chain.place(1, 99, list(range(130, 180)))  # the list's end now: 50 rows from 99, sharing the last page's
    assert chain.gap() is None


def test_a_still_list_has_no_gap_and_every_job_read() -> None:
    rows = list(range(1000))
    chain = Chain(100, 2)
    for offset in range(0, 1000, 98):
        chain.add(offset, rows[offset : offset + 100])
    assert chain.gap() is None and chain.distinct() == 1000


def test_a_row_that_fell_between_two_pages_is_a_gap_and_a_read_of_the_page_before_again_bridges_it() -> None:
    jobs = list(range(300))
    chain = Chain(100, 1)
    chain.add(0, jobs[0:100])  # 0..99
    del jobs[10:13]  # three jobs ahead of the read position leave: the rest moves three rows left
    chain.add(99, jobs[99:199])  # 102..201: 100 and 101 fell between the pages
    chain.add(198, jobs[198:])  # 201..299: 99 rows, the list's end
    assert chain.gap() == 0
    assert chain.first_read(0) == 0
    assert chain.place(0, 0, jobs[0:100]) is None  # 0..102 without 10..12: it holds rows of both pages
    assert chain.gap() is None and chain.distinct() == 300


def test_a_page_read_again_that_only_carries_the_page_before_on_says_to_read_further() -> None:
    chain = Chain(100, 1)
    chain.add(0, list(range(100)))
    chain.add(99, list(range(150, 250)))  # fifty rows arrived ahead... or anything: 100..149 unread
    chain.add(198, list(range(249, 260)))  # the end
    assert chain.place(0, 0, list(range(50, 130))) == 79  # shares the first page; read on from its end
    assert chain.gap() == 1
    assert chain.place(1, 79, list(range(129, 229))) is None
    assert chain.gap() is None


def test_a_page_read_again_that_only_shares_the_page_after_says_to_read_back() -> None:
    chain = Chain(100, 1)
    chain.add(0, list(range(100)))
    chain.add(99, list(range(300, 400)))
    assert chain.place(0, 0, list(range(250, 350))) == 0  # before it: read back, not below 0
    assert chain.place(0, 150, list(range(200, 260))) == 91  # wholly in the gap: kept, and read back from it


def test_the_allowance_is_a_quarter_more_than_the_pages_and_at_least_two() -> None:
    assert [allowance(p) for p in (1, 4, 8, 9, 40, 2000)] == [3, 6, 10, 11, 50, 2500]


def test_the_overlap_doubles_after_a_gap_up_to_a_tenth_of_a_page_and_halves_after_none() -> None:
    assert [next_lap(1, 100, True), next_lap(8, 100, True), next_lap(10, 100, True)] == [2, 10, 10]
    assert [next_lap(10, 100, False), next_lap(1, 100, False)] == [5, 1]
    assert [next_lap(1, 5, True), next_lap(3, 2, True), next_lap(5, 1, True)] == [1, 1, 0]
