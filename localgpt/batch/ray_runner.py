"""Running batch items on Ray actors, each holding its own pipeline."""

from __future__ import annotations

import os
import socket
import sys
import threading
from collections import deque
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from localgpt.config import Settings
from localgpt.errors import ConfigError

if TYPE_CHECKING:
    pass
from localgpt.batch.inputs import Item
from localgpt.batch.records import PipelineFactory, Records, failure_record, run_item

RAY_START_TIMEOUT = 300.0  # seconds the Ray workers get to build their pipelines
class BatchWorker:
    """The state of one Ray actor: a pipeline built on the actor from the driver's settings."""

    def __init__(self, settings: dict[str, Any], factory: PipelineFactory | None, respond: bool,
                 cwd: str | None) -> None:
        if cwd and os.path.isdir(cwd):  # relative paths in items mean the same as on the driver
            os.chdir(cwd)
        if factory is None:
            from localgpt.pipeline import Pipeline

            factory = Pipeline.from_settings
        self.pipeline = factory(Settings(**settings))
        self.respond = respond
        import ray

        self.name = f"ray:{ray.util.get_node_ip_address()}:{socket.gethostname()}:{os.getpid()}"

    def ready(self) -> str:
        """The worker's name, once its pipeline is built."""
        return self.name

    def run(self, item: Item) -> dict[str, Any]:
        """The record of one item."""
        return run_item(self.pipeline, item, self.respond, self.name)


def _start_ray(address: str | None, workers: int, cpus: float) -> bool:
    """Connect to the cluster at ``address``, or start a private local instance; True when started here."""
    local = address in (None, "", "local")
    if local and "ray" not in sys.modules:  # Ray then takes the loopback address for its node and its ports
        os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    try:
        import ray
    except ImportError as exc:
        raise ConfigError("Ray is not installed", "pip install 'localgpt[batch]'") from exc
    if ray.is_initialized():
        return False
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")  # no usage report leaves the machine
    common: dict[str, Any] = {"log_to_driver": False, "configure_logging": False}
    try:
        if local:  # "local" even when RAY_ADDRESS names a cluster
            ray.init(address="local", num_cpus=max(1, int(workers * cpus + 0.999)), include_dashboard=False,
                     _node_ip_address="127.0.0.1", **common)
        else:
            ray.init(address=address, **common)
    except (ConnectionError, RuntimeError, ValueError) as exc:
        raise ConfigError(f"cannot start or reach Ray at {address or 'a local instance'}: {exc}",
                          "start the cluster first (ray start --head), or run without --ray") from exc
    return True


def _ray_records(items: Sequence[Item], settings: Settings, workers: int, respond: bool, address: str | None,
                 factory: PipelineFactory | None, cpus: float, stop: threading.Event) -> Records:
    """Run ``items`` on ``workers`` Ray actors; yield records as they finish.

    An actor that dies (killed, out of memory) is replaced and its items are tried once more. Once
    ``stop`` is set no item is handed out; the records of those handed out still come.
    """
    started = _start_ray(address, workers, cpus)  # before Ray is imported here: it may set Ray's environment
    import ray

    actors: list[Any] = []
    try:
        actor_cls = ray.remote(BatchWorker).options(num_cpus=cpus)
        data = settings.model_dump()
        data["store"] = Path(settings.store).resolve()
        data["runs_dir"] = Path(settings.runs_dir).resolve()
        cwd = os.getcwd()

        def await_ready(actor: Any) -> Any:
            try:
                ray.get(actor.ready.remote(), timeout=RAY_START_TIMEOUT)
            except ray.exceptions.GetTimeoutError as exc:
                raise ConfigError(f"a Ray worker did not start within {RAY_START_TIMEOUT:.0f} s",
                                  "the cluster may lack free CPUs: lower --workers or --ray-cpus") from exc
            except ray.exceptions.RayError as exc:
                raise ConfigError(f"a Ray worker could not build its pipeline: {exc}",
                                  "check the settings and that the model store is on every node") from exc
            return actor

        def new_actor() -> Any:
            return actor_cls.remote(data, factory, respond, cwd)

        pending = deque(items)
        starting = [new_actor() for _ in range(min(workers, len(items)))]
        actors.extend(starting)  # killed in the end even when one fails to start
        for actor in starting:  # started together, checked one by one
            await_ready(actor)
        inflight: dict[Any, tuple[int, Any, Item]] = {}
        retried: set[str] = set()

        def submit(slot: int) -> None:
            if pending and not stop.is_set():
                item = pending.popleft()
                inflight[actors[slot].run.remote(item)] = (slot, actors[slot], item)

        for _ in range(2):  # one running and one queued, so an actor never waits for the driver
            for slot in range(len(actors)):
                submit(slot)
        while inflight:
            ready, _ = ray.wait(list(inflight), num_returns=1)
            slot, actor, item = inflight.pop(ready[0])
            try:
                record = ray.get(ready[0])
            except ray.exceptions.RayActorError as exc:
                if actors[slot] is actor:  # replace a dead actor once, for all its items
                    ray.kill(actor)
                    actors[slot] = await_ready(new_actor())
                if item.id not in retried:
                    retried.add(item.id)
                    pending.appendleft(item)
                    submit(slot)
                    continue
                record = failure_record(item, exc, 0.0, "ray")
            except ray.exceptions.RayError as exc:
                record = failure_record(item, exc, 0.0, "ray")
            submit(slot)
            yield record
    finally:
        for actor in actors:
            ray.kill(actor)
        if started:
            ray.shutdown()
