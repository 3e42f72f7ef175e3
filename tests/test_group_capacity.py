"""Queue capacity, as a table: the capacity poll's queues in, samples out, named as the job data names queues
(exporter.queues.QueueBudget.capacity_view). Every expected value is worked out by hand."""

from __future__ import annotations

from exporter.groups.capacity import capacity_families
from exporter.model import Budget, QueueCapacity
from exporter.queues import QueueBudget, add_capacity
from tests.polls import Polls, Samples, job

T = 1_700_000_000.0
FAMILIES = ("sugon_queue_cpus", "sugon_queue_free_cpus", "sugon_queue_nodes", "sugon_queue_free_nodes")


def capacity(queues: dict[str, QueueCapacity]) -> dict[str, dict[str, float]]:
    """Each family's samples by queue."""
    s = Samples(capacity_families("c", queues))
    assert s.names() == list(FAMILIES)
    return {name: s.by(name, "queue", nonzero=False) for name in FAMILIES}


def test_each_figure_of_a_queue_is_a_series_and_a_figure_the_answer_lacks_is_left_out() -> None:
    got = capacity({"a": QueueCapacity(256, 64, 8, 2), "b": QueueCapacity(None, 0, 4, None)})
    assert got == {
        "sugon_queue_cpus": {"a": 256},
        "sugon_queue_free_cpus": {"a": 64, "b": 0},
        "sugon_queue_nodes": {"a": 8, "b": 4},
        "sugon_queue_free_nodes": {"a": 2},
    }


def test_a_queue_listed_under_two_schedulers_adds_up_figure_by_figure() -> None:
    a = QueueCapacity(cpus=10, free_cpus=None, nodes=3, free_nodes=None)
    b = QueueCapacity(cpus=20, free_cpus=5, nodes=None, free_nodes=None)
    assert add_capacity(None, a) is a
    assert add_capacity(a, b) == QueueCapacity(cpus=30, free_cpus=5, nodes=3, free_nodes=None)
    assert add_capacity(b, a) == QueueCapacity(cpus=30, free_cpus=5, nodes=3, free_nodes=None)
    c = QueueCapacity(cpus=1, free_cpus=2, nodes=4, free_nodes=8)
    assert add_capacity(c, c) == QueueCapacity(cpus=2, free_cpus=4, nodes=8, free_nodes=16)


def test_capacity_names_queues_as_the_job_data_does_folded_ones_adding_up_as_other() -> None:
    p = Polls(budget=Budget(max_queues=2))
    p.poll([job("1", queue="a"), job("2", queue="a"), job("3", queue="b"), job("4", queue="c")], T)  # a, b named
    raw = {
        "a": QueueCapacity(10, 5, 2, 1),
        "c": QueueCapacity(4, None, 1, None),  # folded by the job data: other
        "d": QueueCapacity(8, 8, None, None),  # unknown to the job data, and no name left: other
        "other": QueueCapacity(1, 1, 1, 1),  # a queue called other adds up with them
    }
    assert p.queues.capacity_view(raw) == {
        "a": QueueCapacity(10, 5, 2, 1),
        "other": QueueCapacity(4 + 8 + 1, 8 + 1, 1 + 1, 1),
    }


def test_idle_queues_with_capacity_are_named_by_name_while_the_budget_has_room() -> None:
    p = Polls(budget=Budget(max_queues=3))
    p.poll([job("1", queue="work")], T)  # every queue fits: work is named, two names left
    raw = {q: QueueCapacity(1, 1, 1, 1) for q in ("gamma", "work", "beta", "alpha")}
    view = p.queues.capacity_view(raw)
    assert view == {
        "work": QueueCapacity(1, 1, 1, 1),
        "alpha": QueueCapacity(1, 1, 1, 1),
        "beta": QueueCapacity(1, 1, 1, 1),
        "other": QueueCapacity(1, 1, 1, 1),  # gamma, though before work by name: work has jobs
    }


def test_before_any_job_poll_the_first_queues_by_name_are_named() -> None:
    budget = QueueBudget(max_queues=2)
    raw = {q: QueueCapacity(2, 1, None, None) for q in ("c", "a", "b")}
    assert budget.capacity_view(raw) == {
        "a": QueueCapacity(2, 1, None, None),
        "b": QueueCapacity(2, 1, None, None),
        "other": QueueCapacity(2, 1, None, None),
    }
    assert QueueBudget(max_queues=5).capacity_view(raw) == raw


def test_queues_with_capacity_compete_for_a_name_in_the_next_job_poll() -> None:
    p = Polls(budget=Budget(max_queues=1))
    budget = p.queues
    named, folded = budget.name({"busy": 3}, T, with_series={"idle"})  # idle: capacity only, 0 jobs
    assert (named, folded) == ({"busy"}, 1)
    named, folded = budget.name({}, T + 60, with_series={"idle"})  # busy is zero-filled with 0: by name
    assert (named, folded) == ({"busy"}, 1)
    named, folded = budget.name({"idle": 1}, T + 120, with_series=set())
    assert (named, folded) == ({"idle"}, 1)


def test_the_queues_the_job_data_names_take_no_room_from_idle_ones() -> None:
    p = Polls(budget=Budget(max_queues=2))
    p.poll([job("1", queue="a")], T)  # a is named, one name left
    raw = {q: QueueCapacity(1, None, None, None) for q in ("a", "b", "c")}
    assert p.queues.capacity_view(raw) == {"a": raw["a"], "b": raw["b"], "other": raw["c"]}
