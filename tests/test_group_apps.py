"""The applications group, as a table: jobs in, samples out (jobs and CPUs by appType and status, within
max_apps). Every expected value is worked out by hand."""

from __future__ import annotations

from exporter.model import Budget, Job, Row
from exporter.rows import read_job
from tests.polls import Polls, Samples, job

T = 1_700_000_000.0


def apps(s: Samples) -> dict[tuple[str, str], tuple[float, float]]:
    """(jobs, CPUs) by (app, status)."""
    jobs = s.by("sugon_app_jobs", "app", "status", nonzero=False)
    cpus = s.by("sugon_app_job_cpus", "app", "status", nonzero=False)
    assert set(jobs) == set(cpus)
    return {key: (jobs[key], cpus[key]) for key in jobs}


def test_jobs_and_cpus_by_application_and_status_with_none_for_no_application() -> None:
    def read(job_id: int, status: str, app: object, cpus: int) -> Job:
        return read_job(Row(jobId=job_id, jobStatus=status, procNumUsed=cpus, appType=app), str(job_id))[0]

    s = Polls().poll(
        [
            read(1, "statR", "fluent", 4),
            read(2, "statR", " fluent", 2),  # the same application once trimmed
            read(3, "statR", "vasp", 2),
            read(4, "statQ", "", 8),  # none
            read(5, "statQ", None, 1),  # none
            read(6, "statC", "fluent", 1),
            read(7, "statR", 12, 16),  # a number is a name
            read(8, "statQ", ["fluent"], 1),  # anything else is none
            read(9, "statQ", {"app": "vasp"}, 1),
            read(10, "statQ", True, 1),
        ],
        T,
    )
    assert apps(s) == {
        ("fluent", "running"): (2, 6),
        ("vasp", "running"): (1, 2),
        ("none", "queued"): (5, 12),
        ("fluent", "completed"): (1, 1),
        ("12", "running"): (1, 16),
    }


def test_applications_beyond_max_apps_fold_into_other_with_ties_broken_by_name() -> None:
    jobs: list[Job] = []
    for app, status, count, cpus in (
        ("vasp", "running", 3, 8),
        ("fluent", "running", 1, 4),
        ("fluent", "queued", 1, 2),  # fluent: 2 jobs in all
        ("abaqus", "running", 2, 1),  # abaqus: 2 jobs, before fluent by name
        ("lammps", "queued", 1, 16),
        ("other", "running", 5, 1),  # an application really called "other" adds up with the folded ones
    ):
        jobs += [job(f"{app}-{status}-{n}", status=status, cpus=cpus, app=app) for n in range(count)]
    s = Polls(budget=Budget(max_apps=2)).poll(jobs, T)
    assert apps(s) == {
        ("vasp", "running"): (3, 24),
        ("abaqus", "running"): (2, 2),
        ("other", "running"): (5 + 1, 5 + 4),  # the real "other" and fluent
        ("other", "queued"): (2, 2 + 16),  # fluent and lammps
    }


def test_within_max_apps_every_application_keeps_its_name_and_none_is_one_of_them() -> None:
    jobs = [job("1", status="running", cpus=4, app="fluent"), job("2", status="running", cpus=2)]
    assert apps(Polls(budget=Budget(max_apps=2)).poll(jobs, T)) == {
        ("fluent", "running"): (1, 4),
        ("none", "running"): (1, 2),
    }
    jobs.append(job("3", status="running", cpus=1, app="other"))  # other takes no name: still within 2
    assert apps(Polls(budget=Budget(max_apps=2)).poll(jobs, T)) == {
        ("fluent", "running"): (1, 4),
        ("none", "running"): (1, 2),
        ("other", "running"): (1, 1),
    }


def test_each_poll_counts_its_own_jobs_and_a_failed_one_none() -> None:
    p = Polls()
    p.poll([job("1", status="running", cpus=4, app="fluent")], T)
    p.failed([job(str(i), status="running", cpus=1, app="vasp") for i in range(2, 5)], T + 60)
    s = p.poll([job("1", status="completed", cpus=4, app="fluent")], T + 120)
    assert apps(s) == {("fluent", "completed"): (1, 4)}


def test_an_application_is_ranked_by_its_jobs_in_every_status() -> None:
    jobs = [job("1", status="running", app="zeta"), job("2", app="zeta"), job("3", status="running", app="alpha")]
    s = Polls(budget=Budget(max_apps=1)).poll(jobs, T)  # zeta has 2 jobs, alpha 1
    assert apps(s) == {("zeta", "running"): (1, 0), ("zeta", "queued"): (1, 0), ("other", "running"): (1, 0)}
