"""How conftest.py spreads test files over the parallel test processes (pytest-xdist's
``--dist loadfile``): the files it names exist, files that share app servers go to one process,
and the slowest files are handed out first, so that no long file runs alone at the end."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest
from conftest import SHARED_PROCESS, SLOWEST_FIRST, pytest_xdist_make_scheduler

TESTS = Path(__file__).resolve().parent


def test_every_file_named_is_a_test_file() -> None:
    named = {*SLOWEST_FIRST, *SHARED_PROCESS, *SHARED_PROCESS.values()}
    assert {name for name in named if not (TESTS / name).is_file()} == set()
    assert len(set(SLOWEST_FIRST)) == len(SLOWEST_FIRST)


class Worker:
    """What the scheduler sees of a test process: it is sent the indexes of tests to run."""

    shutting_down = False

    def __init__(self, handed: list[tuple[Worker, int]], number: int) -> None:
        self.handed = handed  # every worker's, in the order they were sent
        self.gateway = SimpleNamespace(id=f"gw{number}")

    def send_runtest_some(self, indexes: list[int]) -> None:
        self.handed += [(self, i) for i in indexes]

    def shutdown(self) -> None:
        self.shutting_down = True


def test_the_slowest_files_are_handed_out_first_and_shared_files_together() -> None:
    values = {"dist": "loadfile", "tx": ["2*popen"]}
    config = SimpleNamespace(
        getvalue=values.__getitem__, option=SimpleNamespace(loadscopereorder=True)
    )
    scheduler = pytest_xdist_make_scheduler(config, None)
    # alphabetical, as collected; xdist alone hands out the file of most tests first
    counts = {"test_a.py": 5, "test_app.py": 2, "test_app_browser.py": 1, "test_z.py": 3}
    counts |= {SLOWEST_FIRST[1]: 1, SLOWEST_FIRST[2]: 1}
    collection = [f"tests/{name}::test_{i}" for name, n in sorted(counts.items()) for i in range(n)]
    handed: list[tuple[Worker, int]] = []
    workers = [Worker(handed, 0), Worker(handed, 1)]
    for worker in workers:
        scheduler.add_node(worker)
        scheduler.add_node_collection(worker, collection)
    scheduler.schedule()

    def name(nodeid: str) -> str:
        return nodeid.split("::")[0].rpartition("/")[2]

    order = [name(collection[i]) for _, i in handed] + [name(s) for s in scheduler.workqueue]
    assert list(dict.fromkeys(order)) == [
        "test_app.py", "test_app_browser.py", *SLOWEST_FIRST[1:3], "test_a.py", "test_z.py"
    ]  # fmt: skip
    # test_app_browser.py goes with test_app.py: one process, one set of app servers
    assert {worker for worker, i in handed if name(collection[i]).startswith("test_app")} == {
        workers[0]
    }


@pytest.mark.parametrize("dist", ["no", "load"])
def test_other_distributions_are_xdists_own(dist: str) -> None:
    config = SimpleNamespace(getvalue={"dist": dist}.__getitem__)
    assert pytest_xdist_make_scheduler(config, None) is None
