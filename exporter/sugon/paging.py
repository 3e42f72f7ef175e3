"""Offset paging that notices when the list moved between two of its pages. Pure: no I/O.

A job that leaves ahead of the read position shifts the list left, so that a row falls between two pages. So
neighbouring pages overlap by a few rows (``next_lap``) and must share a job: then, while the list keeps its
order, every job listed throughout the read was read. Where two pages share none (a gap), the stretch between
them is read again (``Chain.first_read``, ``Chain.place``) until a page bridges it, within the ``allowance``.
"""

from __future__ import annotations

from collections.abc import Collection, Hashable, Sequence
from dataclasses import dataclass

JobId = Hashable


def allowance(pages: int) -> int:
    """Requests a read of ``pages`` pages may make in all, gaps and lookups of missing jobs included: a quarter
    more than its pages, at least two more."""
    return pages + max(2, pages // 4)


def next_lap(lap: int, step: int, gaps: bool) -> int:
    """Rows that neighbouring pages of ``step`` rows share in the next poll: twice as many after a poll with a gap,
    up to a tenth of a page; half as many after one without, at least one (none for pages of one row)."""
    if step < 2:
        return 0
    lap = min(2 * lap, step // 10) if gaps else lap // 2
    return min(max(lap, 1), step - 1)


@dataclass
class _Page:
    offset: int
    ids: tuple[JobId, ...]  # kept for every page of a poll: a tuple, where a set would take several times the memory
    size: int  # rows, those without a usable id included

    def shares(self, ids: Collection[JobId]) -> bool:
        """Whether the page holds any of ``ids``."""
        return not set(self.ids).isdisjoint(ids)


class Chain:
    """The pages of one list in list order, by their rows' job ids (None never links two pages), to find the gaps
    between them. A last page of ``step`` rows is a gap too: rows may have moved past it while a read beyond it
    found nothing."""

    def __init__(self, step: int, lap: int) -> None:
        self.step = step
        self.lap = lap
        self._pages: list[_Page] = []
        self._sorted = True

    def add(self, offset: int, ids: Sequence[JobId | None]) -> None:
        """A page of the main pass (any order); empty pages are the list's end and are not kept."""
        if ids:
            self._pages.append(_Page(offset=offset, ids=tuple(i for i in ids if i is not None), size=len(ids)))
            self._sorted = False

    def distinct(self) -> int:
        """Distinct job ids on the pages."""
        return len(set().union(*(page.ids for page in self._pages)))

    def gap(self) -> int | None:
        """The index of the first page that shares no job with the page after it, or of the last page when it
        is full; None: no gap."""
        if not self._sorted:
            self._pages.sort(key=lambda p: p.offset)
            self._sorted = True
        for i in range(len(self._pages) - 1):
            if not self._pages[i].shares(self._pages[i + 1].ids):
                return i
        if self._pages and self._pages[-1].size >= self.step:
            return len(self._pages) - 1
        return None

    def first_read(self, gap: int) -> int:
        """Where to read first for ``gap``: the page before it again (the list moved left since)."""
        return self._pages[gap].offset

    def place(self, gap: int, offset: int, ids: Sequence[JobId | None]) -> int | None:
        """Take a page read again for ``gap`` at ``offset``; returns where to read next (None: it bridged the gap).
        A page that shares jobs with pages before the gap and after it bridges it; only with earlier ones, it
        extends the page before (read on); only with later ones, the page after (read back); none, it lies in it."""
        known = frozenset(i for i in ids if i is not None)
        step_back = max(len(ids) - self.lap, 1)
        if not ids:  # past the end of a list that shrank: read back
            return max(offset - max(self.step - self.lap, 1), 0)
        before = any(not known.isdisjoint(p.ids) for p in self._pages[: gap + 1])
        after = any(not known.isdisjoint(p.ids) for p in self._pages[gap + 1 :])
        page = _Page(offset=offset, ids=tuple(known), size=len(ids))
        if before and after:
            self._pages.insert(gap + 1, page)
            return None
        if before:
            if not known.isdisjoint(self._pages[gap].ids):  # it carries the page before on
                self._pages.insert(gap + 1, page)
            return offset + step_back
        if after:
            if not known.isdisjoint(self._pages[gap + 1].ids):
                self._pages.insert(gap + 1, page)
            return max(offset - step_back, 0)
        self._pages.insert(gap + 1, page)  # wholly inside the gap: two gaps now, the first one read next
        return max(offset - step_back, 0)
