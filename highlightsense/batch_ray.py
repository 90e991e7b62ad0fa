"""The batch on a Ray cluster: the only module that imports Ray, and only when asked for.

Shape: one actor per GPU (or per :data:`CPUS_PER_ACTOR` CPUs when the cluster has none) holds an
:class:`~highlightsense.engine.Engine` whose models it loads once, and analyses one VOD at a time
(a link is downloaded by the actor that analyses it); cutting the clips and writing the tables is
a CPU task, which stages the VOD's folder (so keeping the stems is a local-only option). Inputs
and the output folder must be on a path every node sees (a shared file system). Ray's own
retries cover a worker that dies: a killed actor is restarted and its VOD analysed again
(``max_restarts`` / ``max_task_retries``), a killed cutting task is re-run (``max_retries``),
and the folder it left half-written is swept by the next attempt.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from . import batch, outfolder
from .engine import Engine
from .errors import UserError
from .settings import Selection

CPUS_PER_ACTOR = 4  # CPUs an analysing actor takes on a cluster without GPUs
CUT_CPUS = 1  # CPUs kept free for the cutting tasks
ENV_PREFIX = "HIGHLIGHTSENSE_"  # the variables a worker needs as the driver has them
RETRIES = 3  # restarts of a dead actor, and re-runs of a task whose worker died
INSTALL = (
    'Ray is not installed; run `pip install "highlightsense[ray]"` (or -r requirements-ray.txt).'
)


def _ray() -> Any:
    try:
        import ray
    except ImportError as err:
        raise UserError(INSTALL) from err
    return ray


class Analyser:
    """An actor: the engine's models loaded once, then one VOD analysed per call."""

    def __init__(self, engine: Engine):
        self.engine = engine.load()

    def pid(self) -> int:
        return os.getpid()

    def analyse(self, job: batch.Job, target: Path) -> tuple[float, bool, Any]:
        """(start time, True, Analysis), or (start time, False, failed row)."""
        began = time.time()
        try:
            outfolder.check(target)  # a user's folder is refused before the work
            analysis = self.engine.analyze(batch.prepare(job))
        except Exception as err:  # the VOD's failure is its row; the actor lives on
            return began, False, batch.failed_row(job, target.name, err, began)
        return began, True, analysis


def finish(job, analysis, chosen: Selection, target: Path, began: float):
    """A CPU task: cut the clips, write the tables and put the VOD's folder in place.

    The task stages the folder itself: a staging folder is swept once the process named in it
    is gone, so one made by an actor that was then killed must not be the one written into.
    """
    try:
        return batch.finish(job, analysis, chosen, outfolder.stage(target), target, began)
    except Exception as err:
        return batch.failed_row(job, target.name, err, began)


def actor_plan(resources: dict[str, float]) -> tuple[int, dict[str, float]]:
    """How many analysing actors the cluster's ``resources`` fit, and what each asks for."""
    gpus = int(resources.get("GPU", 0))
    if gpus:
        return gpus, {"num_gpus": 1, "num_cpus": 1}
    cpus = max(1, int(resources.get("CPU", 1)) - CUT_CPUS)
    each = min(CPUS_PER_ACTOR, cpus)
    return max(1, cpus // each), {"num_cpus": each}


def _get(ray: Any, ref: Any, job: batch.Job, folder: str, with_time: bool = False) -> Any:
    """A task's value; a worker that died more often than Ray retries it fails its VOD only."""
    try:
        return ray.get(ref)
    except ray.exceptions.RayError as err:
        began = time.time()
        reason = str(err).strip().splitlines()[0][:120] if str(err).strip() else type(err).__name__
        died = UserError(f"The Ray worker running it died ({reason}); run the batch again.")
        row = batch.failed_row(job, folder, died, began)
        return (began, False, row) if with_time else row


def run(
    engine: Engine,
    todo: list[tuple[batch.Job, Path]],
    chosen: Selection,
    finished: Callable[[batch.VodRow], None],
    *,
    address: str | None = None,
) -> None:
    """Run ``todo`` on the Ray runtime already initialised, else on the one at ``address``
    (None: a new local one, stopped at the end). ``finished`` is called here per VOD."""
    ray = _ray()
    started = not ray.is_initialized()
    if started:
        ray.init(address=address, include_dashboard=False, log_to_driver=False)
    try:
        count, options = actor_plan(ray.cluster_resources())
        # Workers on other nodes do not inherit this process's environment: on a cluster the
        # settings that come from it (weights, separator, cache, limits) travel with them (a
        # local runtime's workers inherit it, and start seconds sooner without a runtime_env).
        env = {k: v for k, v in os.environ.items() if k.startswith(ENV_PREFIX)}
        travel = {"runtime_env": {"env_vars": env}} if address is not None else {}
        actor_class = ray.remote(
            max_restarts=RETRIES, max_task_retries=RETRIES, **options, **travel
        )(Analyser)
        cut = ray.remote(num_cpus=CUT_CPUS, max_retries=RETRIES, **travel)(finish)
        actors = [actor_class.remote(engine) for _ in range(min(count, len(todo)))]
        waiting = list(reversed(todo))
        busy: dict[Any, tuple[Any, batch.Job, Path]] = {}  # analysis ref → (actor, job, target)
        cutting: dict[Any, tuple[batch.Job, Path]] = {}
        for actor in actors:
            if waiting:
                job, target = waiting.pop()
                busy[actor.analyse.remote(job, target)] = (actor, job, target)
        while busy or cutting:
            ready, _ = ray.wait([*busy, *cutting], num_returns=1)
            ref = ready[0]
            if ref in cutting:
                job, target = cutting.pop(ref)
                finished(_get(ray, ref, job, target.name))
                continue
            actor, job, target = busy.pop(ref)
            if waiting:
                next_job, next_target = waiting.pop()
                busy[actor.analyse.remote(next_job, next_target)] = (actor, next_job, next_target)
            began, analysed, outcome = _get(ray, ref, job, target.name, with_time=True)
            if not analysed:
                finished(outcome)
            else:
                cutting[cut.remote(job, outcome, chosen, target, began)] = job, target
    finally:
        if started:
            ray.shutdown()
