"""`stardock status` and `cancel` when Slurm's daemons fail (error paths, with a scheduler double;
tests/asroot/test_daemon_faults.py stops, freezes and restarts the real daemons).

Status combines the accounting, slurmctld and the job's own record, and says which it used; it
never reports as running a job its record says ended long ago; it settles the record of a run
whose wrapper was killed once Slurm says the job ended, and forgets the job's in-use mark; one job
whose backend cannot load does not hide the others. Cancel refuses a job that has ended.
"""
from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Dict, List, Sequence

import pytest

from stardock_hpc.cache import Cache
from stardock_hpc.errors import ExternalError, StardockError
from stardock_hpc.jobs import report
from stardock_hpc.schedulers.base import JobState, Scheduler, Submission, Submitted
from stardock_hpc.site import load_site

KEY = "ab" * 32


class Double(Scheduler):
    """Answers as configured: a dict of states, or an exception, for each source."""
    name = "double"

    def __init__(self, accounting, controller) -> None:
        self.accounting, self.controller = accounting, controller
        self.cancelled: List[str] = []

    @staticmethod
    def _answer(what, job_ids: Sequence[str]) -> Dict[str, JobState]:
        if isinstance(what, Exception):
            raise what
        return {k: JobState(k, *v) for k, v in what.items()}

    def submit(self, submission: Submission) -> Submitted:
        raise NotImplementedError

    def status(self, job_ids):
        return self._answer(self.accounting, job_ids)

    def live_status(self, job_ids):
        return self._answer(self.controller, job_ids)

    def cancel(self, job_id: str) -> None:
        self.cancelled.append(job_id)

    def stdout_path(self, job_id: str):
        return None


@pytest.fixture
def site(tmp_path, monkeypatch):
    cache_root = tmp_path / "cache"
    cache_root.mkdir()
    Cache(cache_root).ensure_layout()
    path = tmp_path / "site.yaml"
    path.write_text(f"cache: {cache_root}\noutputs: {tmp_path}/out\nrecords: {tmp_path}/records\n")
    (tmp_path / "records").mkdir(mode=0o700)
    site = load_site(str(path))
    store = report.user_records(site)
    store.write_submit("7", {"job": "7", "backend": "sbatch", "key": KEY, "name": "env", "script": "job.sh"})
    return site


def use(site, double: Double, monkeypatch) -> None:
    monkeypatch.setattr(report, "get_scheduler", lambda *_a, **_k: (double, "test"))


def test_the_accounting_first_and_the_row_says_so(site, monkeypatch):
    use(site, Double({"7": ("RUNNING", "0:0", "00:01:00")}, ExternalError("unused")), monkeypatch)
    [row] = report.job_report("7", site)
    assert (row["state"], row["source"]) == ("RUNNING", "accounting")


def test_slurmctld_alone_when_the_accounting_does_not_answer(site, monkeypatch):
    warned: List[str] = []
    use(site, Double(ExternalError("sacct failed: slurmdbd down"), {"7": ("RUNNING",)}), monkeypatch)
    [row] = report.job_report("7", site, warned.append)
    assert (row["state"], row["source"]) == ("RUNNING", "controller")
    assert "slurmdbd down" in warned[0] and "from slurmctld" in warned[0]


def test_the_record_alone_when_neither_answers_and_the_error_when_there_is_no_record(site, monkeypatch):
    store = report.user_records(site)
    store.write_run("7", None, {"state": "completed", "exit_code": 0, "end": time.time(), "node": "n1"})
    use(site, Double(ExternalError("sacct failed"), ExternalError("squeue failed")), monkeypatch)
    warned: List[str] = []
    [row] = report.job_report("7", site, warned.append)
    assert (row["state"], row["source"], row["node"]) == ("COMPLETED", "record", "n1")
    assert "slurmctld did not answer either" in warned[0]
    with pytest.raises(ExternalError, match="sacct failed"):  # a job stardock knows nothing of
        report.job_report("8", site)
    store.write_submit("9", {"job": "9", "backend": "sbatch", "key": KEY})  # submitted, never started
    [row] = report.job_report("9", site, warned.append)
    assert (row["job"], row["state"], row["source"]) == ("9", "UNKNOWN", "record")


def test_an_accounting_that_lags_never_shows_an_ended_job_as_running(site, monkeypatch):
    store = report.user_records(site)
    store.write_run("7", None, {"state": "failed", "exit_code": 3, "end": time.time() - 3600})
    use(site, Double({"7": ("RUNNING", "0:0")}, {}), monkeypatch)
    [row] = report.job_report("7", site)
    assert (row["state"], row["exit_code"], row["source"]) == ("FAILED", "3:0", "record")
    store.write_run("7", None, {"state": "failed", "exit_code": 3, "end": time.time()})  # just now: Slurm's turn
    [row] = report.job_report("7", site)
    assert (row["state"], row["source"]) == ("RUNNING", "accounting")


def test_the_record_of_a_killed_wrapper_is_settled_and_the_in_use_mark_forgotten(site, monkeypatch):
    cache = Cache(site.cache)
    inuse = Path(site.cache) / "inuse"
    mark = inuse / f"{KEY}-u{os.getuid()}.j7.u{os.getuid()}"
    other = inuse / f"{KEY}-u{os.getuid()}.j8.u{os.getuid()}"
    mark.write_text("")
    other.write_text("")
    store = report.user_records(site)
    store.write_run("7", None, {"state": "running", "start": time.time() - 60, "end": None, "exit_code": None})
    use(site, Double({"7": ("NODE_FAIL", "0:0")}, {}), monkeypatch)
    [row] = report.job_report("7", site)
    assert row["state"] == "NODE_FAIL"
    run = store.runs("7")[""]
    assert run["state"] == "ended" and run["slurm_state"] == "NODE_FAIL" and run["end"]
    assert not mark.exists() and other.exists()
    assert cache.forget_use(KEY, "7") == 0  # nothing left to forget


def test_one_job_whose_backend_cannot_load_does_not_hide_the_others(site, monkeypatch, tmp_path):
    from click.testing import CliRunner

    from stardock_hpc.commands.jobs import status
    store = report.user_records(site)
    store.write_submit("9", {"job": "9", "backend": "pyslurm", "key": KEY})

    def scheduler(_option, _site, recorded=None):
        if recorded == "pyslurm":
            raise ExternalError("the pyslurm backend needs pyslurm")
        return Double({"7": ("COMPLETED", "0:0")}, {}), "test"
    monkeypatch.setattr(report, "get_scheduler", scheduler)
    result = CliRunner().invoke(status, ["--json", "--site", str(site.source.split(" ")[0])])
    assert result.exit_code == 0, result.output
    assert '"state": "COMPLETED"' in result.output and '"state": "UNKNOWN"' in result.output
    assert "job 9: the pyslurm backend needs pyslurm" in result.output


def test_cancel_refuses_a_job_that_has_ended_and_cancels_one_that_has_not(site, monkeypatch):
    double = Double({"7": ("COMPLETED", "0:0")}, {})
    monkeypatch.setattr(report, "scheduler_for", lambda *_a: double)
    with pytest.raises(StardockError, match=r"job 7 has already ended \(COMPLETED\): nothing to cancel"):
        report.cancel_job("7", site)
    assert double.cancelled == []
    double.accounting = {"7": ("RUNNING", "0:0")}
    report.cancel_job("7", site)
    double.accounting = ExternalError("slurmdbd down")  # unknown: the cancel itself answers
    report.cancel_job("7", site)
    assert double.cancelled == ["7", "7"]


def test_scancel_saying_error_is_a_failure_even_when_it_exits_0(tmp_path, monkeypatch):
    from stardock_hpc.schedulers.sbatch import SbatchScheduler
    fake = tmp_path / "scancel"
    fake.write_text("#!/bin/sh\necho 'scancel: error: Kill job error on job id 7: Job/step already completing or "
                    "completed' >&2\nexit 0\n")
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path}:{os.environ['PATH']}")
    with pytest.raises(ExternalError, match="already completing or completed"):
        SbatchScheduler().cancel("7")


def test_pyslurm_says_what_libslurm_means_by_success():
    from stardock_hpc.schedulers.pyslurm_backend import _rpc_message
    assert "could not reach slurmctld" in _rpc_message(Exception("Success"))
    assert _rpc_message(Exception("Invalid job id specified")) == "Invalid job id specified"


def cache_with_one_entry(tmp_path, created: float):
    """A cache whose only entry (as prune sees it) is the user's image KEY."""
    root = tmp_path / "cache"
    root.mkdir()
    cache = Cache(root)
    cache.ensure_layout()
    uid = os.getuid()

    class FakeEntry:
        name = f"{KEY}-u{uid}"
        owner = uid
        key = KEY
        meta: Dict = {"created": created, "size": 1}
    cache.entries = lambda: [FakeEntry()]  # type: ignore[method-assign]
    return cache, root, uid


def test_prune_forgets_the_marks_of_jobs_that_have_ended(tmp_path):
    from stardock_hpc.prune import plan_prune
    cache, root, uid = cache_with_one_entry(tmp_path, created=time.time())
    for job in ("1", "2"):
        (root / "inuse" / f"{KEY}-u{uid}.j{job}.u{uid}").write_text("")
    plan_prune(cache, jobs=lambda ids: {"2"})
    assert sorted(p.name for p in (root / "inuse").iterdir()) == [f"{KEY}-u{uid}.j2.u{uid}"]
    plan_prune(cache, jobs=lambda ids: None)  # Slurm does not answer: nothing is forgotten
    assert len(list((root / "inuse").iterdir())) == 1


def test_sbatch_without_an_answer_is_an_unknown_outcome_and_a_failed_connect_a_refusal(tmp_path, monkeypatch):
    from stardock_hpc.errors import OutcomeUnknown
    from stardock_hpc.schedulers.sbatch import SbatchScheduler
    monkeypatch.setenv("PATH", f"{tmp_path}:{os.environ['PATH']}")
    submission = Submission("#!/bin/sh\ntrue\n", [], [], tmp_path, dict(os.environ), "job.sh")
    fake = tmp_path / "sbatch"
    for said, error in (("Batch job submission failed: Socket timed out on send/recv operation", OutcomeUnknown),
                        ("Batch job submission failed: Unable to contact slurm controller (connect failure)",
                         ExternalError)):
        fake.write_text(f"#!/bin/sh\necho 'sbatch: error: {said}' >&2\nexit 1\n")
        fake.chmod(0o755)
        with pytest.raises(error) as err:
            SbatchScheduler().submit(submission)
        assert isinstance(err.value, OutcomeUnknown) == (error is OutcomeUnknown)


class Finder(Double):
    def __init__(self, found) -> None:
        super().__init__({}, {})
        self.found = found

    def find_jobs(self, name, since, until):
        return self.found


def lost(site, stamp: str, until: float) -> Path:
    store = report.user_records(site)
    artifact = Path(site.cache) / "entries" / f"{KEY}-u{os.getuid()}" / "image.oci.tar"
    store.write_pending(stamp, {"job": None, "backend": "sbatch", "key": KEY, "artifact": str(artifact),
                                "pending": stamp, "job_name": "job.sh", "window": [until - 10, until]})
    mark = Path(site.cache) / "inuse" / f"{KEY}-u{os.getuid()}.p{stamp}.u{os.getuid()}"
    mark.write_text("")
    return mark


def test_a_lost_submission_is_adopted_when_its_job_turns_up(site, monkeypatch):
    mark = lost(site, "111", time.time())
    finder = Finder(None)
    use(site, finder, monkeypatch)
    warned: List[str] = []
    report.adopt_lost_submissions(site, warned.append)  # Slurm cannot tell: kept
    assert mark.exists() and report.user_records(site).pending()
    finder.found = ["7", "42"]  # 7 is recorded already: 42 is the one
    report.adopt_lost_submissions(site, warned.append)
    store = report.user_records(site)
    assert store.submit("42")["key"] == KEY and store.submit("42")["adopted"] is True
    assert not store.pending() and not mark.exists()
    assert (Path(site.cache) / "inuse" / f"{KEY}-u{os.getuid()}.j42.u{os.getuid()}").exists()
    assert "job 42 (job.sh)" in warned[-1]


def test_a_lost_submission_no_job_turned_up_for_is_given_up_after_a_day(site, monkeypatch):
    mark = lost(site, "222", time.time() - 2 * 86400)
    use(site, Finder([]), monkeypatch)
    warned: List[str] = []
    report.adopt_lost_submissions(site, warned.append)
    assert not mark.exists() and not report.user_records(site).pending()
    assert "never became a job" in warned[0]


def test_prune_keeps_the_image_of_a_lost_submission(tmp_path):
    from stardock_hpc.prune import PENDING_DAYS, plan_prune
    cache, root, uid = cache_with_one_entry(tmp_path, created=0.0)
    mark = root / "inuse" / f"{KEY}-u{uid}.p123.u{uid}"
    mark.write_text("")
    assert plan_prune(cache, older_than=1.0, jobs=lambda ids: set()) == []
    os.utime(mark, (0, time.time() - (PENDING_DAYS + 1) * 86400))
    assert [d.entry.name for d in plan_prune(cache, older_than=1.0, jobs=lambda ids: set())] == [f"{KEY}-u{uid}"]
    assert not mark.exists()
