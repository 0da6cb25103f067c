"""Where many independent evaluations run: in this process, in a local process pool, or on Ray.

One executor for every command that evaluates many fault maps (`sweep`, `vuln`, `dram tolerance`,
`sparkxd`, `fusion eval`). A *worker* is any object with `run(task) -> list[dict]`; the caller
gives a picklable `factory` that makes one (a class and its arguments, e.g.
`functools.partial(SweepWorker, workload)`), and each process or Ray actor makes its own once and
keeps it (model, data, quantized image and recent chips loaded once). Every worker runs with the
same torch and numba thread count (`threads`, 1 by default): CPU kernels may split reductions
differently for different thread counts, so fixing it makes every result bit-identical whichever
executor and however many workers run it. Results come back to the caller task by task
(`on_result`), so the caller writes each one as soon as it is finished; a worker that is lost
loses only the task it was running.
"""
from __future__ import annotations

import ipaddress
import os
import signal
import socket
import sys
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, redirect_stdout
from dataclasses import dataclass, field
from types import ModuleType
from typing import TYPE_CHECKING, Any, Protocol, TypeAlias

import numpy as np
import torch
from torch import nn

from sramsim.errors import MAX_THREADS, InputError, RunError, check_threads
from sramsim.inject.layout import MemoryLayout
from sramsim.memory.chip import Chip

if TYPE_CHECKING:
    from concurrent.futures import ProcessPoolExecutor

    from sramsim.analysis.store import MemoryStore, ResultStore
    from sramsim.inject.quantized_model import QuantizedModel
    from sramsim.inject.torch_quantized import TorchQuantizedModel
    from sramsim.nn.data import Dataset

CHIP_CACHE = 2


@dataclass(frozen=True)
class Task:
    """One chip at one voltage, for some of its offsets (chip_index -1: the fault-free model)."""

    chip_index: int
    voltage: float = 0.0
    offset_indices: tuple = ()

    @property
    def size(self) -> int:
        """Points this task yields (the clean task counts as one)."""
        return max(1, len(self.offset_indices))


@dataclass
class Workload:
    """What every worker needs, in a form that travels cheaply to other processes and machines.

    `model_path`/`dataset_spec` are loaded by each worker; an in-memory `model`/`dataset` is used
    (and pickled) only when no path/spec names it.
    """

    chips: list                         # list[ChipSpec]
    offsets: int
    bits: int
    scheme: str
    clip: float | None
    model_path: str | None = None
    dataset_spec: str | None = None
    limit: int | None = None
    batch_size: int = 1000
    include_bias: bool = False
    layout: MemoryLayout = field(default_factory=MemoryLayout)   # how the weights are stored
    torch_quantized: bool = False       # model_path is a PT2E program (.pt2): PyTorch's own int8
    model: nn.Module | None = field(default=None, repr=False)
    dataset: Dataset | None = field(default=None, repr=False)

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        if self.model_path is not None:
            state["model"] = None
        if self.dataset_spec is not None:
            state["dataset"] = None
        return state

    def load_model(self) -> nn.Module:
        """The model in eval mode (loaded from `model_path` on first use in this process)."""
        if self.model is None:
            assert self.model_path is not None      # a workload holds its model or names it
            if self.torch_quantized:
                from sramsim.inject.torch_quantized import load_exported
                self.model = load_exported(self.model_path)
            else:
                from sramsim.nn.models import load_checkpoint
                self.model, _ = load_checkpoint(self.model_path)
        return self.model.eval()

    def load_dataset(self) -> Dataset:
        """The test set (loaded from `dataset_spec` on first use in this process)."""
        if self.dataset is None:
            from sramsim.nn.data import load_dataset
            assert self.dataset_spec is not None    # a workload holds its data or names it
            self.dataset = load_dataset(self.dataset_spec, "test", self.limit)
        return self.dataset


def word_offset(chip: Chip, offset_index: int, offsets: int) -> int:
    """DramMapping k of K on a chip: evenly spaced word offsets k * capacity_words // K."""
    return (int(offset_index) * chip.geometry.capacity_words) // int(offsets)


class SweepWorker:
    """Evaluates sweep points; state (model, quantized image, data, recent chips) lives here."""

    def __init__(self, workload: Workload):
        from sramsim.inject.quantized_model import QuantizedModel
        from sramsim.nn.evaluation import Evaluator
        self.workload = workload
        self.model = workload.load_model()
        self.dataset = workload.load_dataset()
        self.qm: QuantizedModel | TorchQuantizedModel
        if workload.torch_quantized:   # its int8 weights as they are, run on its own kernels
            from sramsim.inject.torch_quantized import TorchQuantizedModel
            self.qm = TorchQuantizedModel(self.model)
        else:
            self.qm = QuantizedModel(self.model, workload.bits, workload.scheme, workload.clip,
                                     include_bias=workload.include_bias)
        self.evaluator = Evaluator(self.qm, workload.layout)
        self._chips: OrderedDict[int, Chip] = OrderedDict()
        self._clean: dict | None = None

    def chip(self, index: int) -> Chip:
        """Chip `index` of the workload, built once and kept among the last CHIP_CACHE used."""
        if index in self._chips:
            self._chips.move_to_end(index)
            return self._chips[index]
        chip = self.workload.chips[index].build()
        self._chips[index] = chip
        while len(self._chips) > CHIP_CACHE:
            self._chips.popitem(last=False)
        return chip

    def clean(self) -> dict:
        """Evaluation of the fault-free quantized weights (computed once per worker)."""
        if self._clean is None:
            t0 = time.perf_counter()
            r = self.evaluator.clean(self.dataset, self.workload.batch_size)
            self._clean = {**r, "t_eval": time.perf_counter() - t0}
        return self._clean

    def run(self, task: Task) -> list[dict]:
        """Evaluate one task: its point records (one per offset; the clean task: one record)."""
        from sramsim.nn.evaluation import evaluate
        w = self.workload
        if task.chip_index < 0:
            clean = self.clean()
            # a PT2E program holds no float model to compare with
            unquantized = {"accuracy": None, "loss": None} if w.torch_quantized else \
                evaluate(self.model, self.dataset, None, w.batch_size)
            return [{"clean": True, "accuracy": clean["accuracy"], "loss": clean["loss"],
                     "float_accuracy": unquantized["accuracy"], "float_loss": unquantized["loss"],
                     "n_samples": len(self.dataset), "t_eval": clean["t_eval"]}]
        chip = self.chip(task.chip_index)
        v = float(task.voltage)
        out = []
        for k in task.offset_indices:
            offset = word_offset(chip, k, w.offsets)
            t0 = time.perf_counter()
            with self.evaluator.faults(chip, v, offset) as run:
                t1 = time.perf_counter()
                # No fault touched the model's words: the point is the fault-free evaluation.
                r = run.evaluate(self.dataset, w.batch_size) if run.changed else self.clean()
                t2 = time.perf_counter()
                record = run.record
            out.append({"voltage": v, "chip_index": task.chip_index, "chip": chip.name,
                        "offset_index": int(k), "offset": offset, "ber": chip.ber(v),
                        "faults": chip.count(v), "accuracy": r["accuracy"],
                        "rerr": 1.0 - r["accuracy"], "loss": r["loss"],
                        "unchanged": not run.changed, "n_samples": len(self.dataset),
                        "t_faults": t1 - t0, "t_eval": t2 - t1 if run.changed else None,
                        **record})
        return out


def get_threads() -> tuple[int, int]:
    """torch's and numba's current thread counts (the pair `set_threads` takes back)."""
    import numba
    return torch.get_num_threads(), numba.get_num_threads()


def set_threads(threads: int | tuple[int, int]) -> tuple[int, int]:
    """Make torch and numba use `threads` threads (or a (torch, numba) pair); returns the old pair.

    The one thread-pinning helper (workers, tests, benchmarks): a worker uses `threads` cores, no
    more. (A numba parallel launch on an oversubscribed machine costs milliseconds, more than the
    kernel on a small image.)
    """
    import numba
    before = get_threads()
    t_torch, t_numba = (threads, threads) if isinstance(threads, int) else threads
    check_threads(int(t_torch)), check_threads(int(t_numba))   # torch crashes on 100000
    torch.set_num_threads(int(t_torch))
    # numba.config sets its attributes from the environment at import: no stub declares them
    numba.set_num_threads(min(int(t_numba),
                              numba.config.NUMBA_NUM_THREADS))  # type: ignore[attr-defined]
    return before


@contextmanager
def pinned_threads(threads: int | tuple[int, int]) -> Iterator[None]:
    """torch and numba run `threads` threads inside the block and their previous counts after it."""
    before = set_threads(threads)
    try:
        yield
    finally:
        set_threads(before)


# ------------------------------------------------------------------------------ executors

OnResult = Callable[[list[dict]], None]


class Worker(Protocol):
    """What a factory makes: evaluates one task (a `Task`, a map index, ...) into its records."""

    def run(self, task: Any) -> list[dict]:
        """The records of `task`."""
        ...
EXECUTORS = ("local", "ray")


@dataclass(frozen=True)
class Execution:
    """How many evaluations run where: the same options for every command that evaluates many
    fault maps (`--executor`, `--workers`, `--threads`, `--ray-address`, `--no-progress`).

    Results never depend on them at a fixed `threads` (see the module docstring). workers None
    with Ray: one worker per `threads` CPUs of the cluster.
    """

    executor: str = "local"
    workers: int | None = 1
    threads: int = 1
    ray_address: str | None = None
    progress: bool = True

    def __post_init__(self) -> None:
        if self.executor not in EXECUTORS:
            raise InputError(f"executor must be one of {', '.join(EXECUTORS)}, got "
                             f"{self.executor!r}")
        if self.workers is None and self.executor != "ray":
            raise InputError("workers may be left open (None) only with the ray executor")
        if self.workers is not None:
            _whole(self.workers, "workers", 1)
        _whole(self.threads, "threads", 1, MAX_THREADS)
        if self.ray_address is not None:
            if self.executor != "ray":
                raise InputError("a Ray address needs the ray executor")
            ray_address(self.ray_address)

    def open(self, factory: Callable[[], Worker]) -> Executor:
        """An executor of `factory`'s workers (`open_executor`)."""
        return open_executor(factory, self.executor, self.workers, self.threads,
                             self.ray_address)

    def describe(self) -> dict:
        """JSON of the execution (reports; never part of a result's identity)."""
        return {"executor": self.executor, "workers": self.workers, "threads": self.threads}


def _whole(value: object, what: str, low: int, high: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low \
            or (high is not None and value > high):
        span = f"in [{low}, {high}]" if high is not None else f">= {low}"
        raise InputError(f"{what} must be an integer {span}, got {value!r}")
    return int(value)


def open_executor(factory: Callable[[], Worker], executor: str = "local", workers: int | None = 1,
                  threads: int = 1, ray_address: str | None = None) -> Executor:
    """An executor of `factory`'s workers: in this process (local, one worker), a spawned local
    process pool (local, several workers) or Ray actors (`ray`: `ray_address` HOST:PORT joins a
    cluster, None starts one here; `workers` None there means one per `threads` CPUs of the
    cluster). Use it as a context manager; `run(tasks, on_result)` may be called many times and
    reuses the same workers."""
    if executor not in EXECUTORS:
        raise InputError(f"executor must be one of {', '.join(EXECUTORS)}, got {executor!r}")
    if ray_address is not None and executor != "ray":
        raise InputError("a Ray address needs the ray executor")
    if executor == "ray":
        return RayExecutor(factory, workers, threads, ray_address)
    if workers is None:
        raise InputError("workers may be left open (None) only with the ray executor")
    if workers == 1:
        return InProcessExecutor(factory, threads)
    return PoolExecutor(factory, workers, threads)


def run_maps(execution: Execution, factory: Callable[[], Worker], store: ResultStore | MemoryStore,
             n_maps: int,
             on_map: Callable[[int], None] | None = None) -> list[dict]:
    """Fault maps 0 .. n_maps-1 of an analysis: the maps `store` (a `sramsim.analysis.store`
    store keyed by `map_key`) does not hold yet run on `execution`'s workers (task k -> [map k's
    record]), each record written as it finishes; on_map(k) after each (progress). Closes the
    store; returns the n_maps records in map order."""
    def on_result(records: list[dict]) -> None:
        store.append(records)
        if on_map is not None:
            on_map(records[0]["map"])

    try:
        with execution.open(factory) as ex:
            ex.run([k for k in range(n_maps) if not store.done((k,))], on_result)
    finally:
        store.close()
    return [store.records[(k,)] for k in range(n_maps)]


class InProcessExecutor:
    """One worker in this process, with torch's and numba's thread counts set to `threads` while
    it runs (and restored after)."""

    def __init__(self, factory: Callable[[], Worker], threads: int = 1):
        self.factory, self.threads = factory, threads
        self._worker: Worker | None = None

    def run(self, tasks: Sequence, on_result: OnResult) -> None:
        """Run `tasks` one after another; `on_result(records)` after each."""
        with pinned_threads(self.threads):
            if self._worker is None:
                self._worker = self.factory()
            for task in tasks:
                on_result(self._worker.run(task))

    def close(self) -> None:
        """Drop the worker."""
        self._worker = None

    def __enter__(self) -> InProcessExecutor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# The pool's worker processes each hold one worker, made by the pool's initializer. This is
# per-process state of a child process, never touched by the parent.
_POOL_WORKER: Worker | None = None


def _pool_init(factory: Callable[[], Worker], threads: int, parent: int) -> None:
    global _POOL_WORKER
    signal.signal(signal.SIGINT, signal.SIG_IGN)   # Ctrl-C is the parent's to handle
    exit_with_parent(parent)
    set_threads(threads)
    _POOL_WORKER = factory()


def exit_with_parent(parent: int, interval: float = 0.2) -> threading.Thread:
    """End this process within `interval` seconds once `parent` is no longer its parent.

    A pool worker whose parent was killed (SIGKILL leaves no time to shut the pool down) would
    otherwise idle on, reparented to init, holding its memory and the resource tracker's pipe.
    A daemon thread polls os.getppid() (portable, and it does not depend on which thread spawned
    the worker, as Linux's PR_SET_PDEATHSIG does).
    """
    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(interval)
        os._exit(1)

    thread = threading.Thread(target=watch, name="sramsim-exit-with-parent", daemon=True)
    thread.start()
    return thread


def _pool_run(task: Any) -> list[dict]:
    assert _POOL_WORKER is not None                 # made by _pool_init in this process
    return _POOL_WORKER.run(task)


class PoolExecutor:
    """A local pool of `workers` spawned processes (spawn: no forked torch/numba thread state),
    started on the first `run`. Workers exit on their own when this process dies
    (`exit_with_parent`), even by SIGKILL."""

    def __init__(self, factory: Callable[[], Worker], workers: int, threads: int = 1):
        self.factory, self.workers, self.threads = factory, workers, threads
        self._pool: ProcessPoolExecutor | None = None

    def run(self, tasks: Sequence, on_result: OnResult) -> None:
        """Run `tasks` on the pool; `on_result(records)` in completion order. On Ctrl-C the
        queue is cancelled and the tasks in flight finish (and are passed on) first."""
        import multiprocessing as mp
        from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
        if not tasks:
            return
        if self._pool is None:
            self._pool = ProcessPoolExecutor(
                min(self.workers, len(tasks)), mp_context=mp.get_context("spawn"),
                initializer=_pool_init, initargs=(self.factory, self.threads, os.getpid()))
        pending = {self._pool.submit(_pool_run, t) for t in tasks}
        try:
            while pending:
                done, pending = wait(pending, return_when=FIRST_COMPLETED)
                for fut in done:
                    on_result(fut.result())
        except KeyboardInterrupt:
            # Keep what is already computing: cancel the queue, wait for the tasks in flight.
            for fut in pending:
                fut.cancel()
            self._pool.shutdown(wait=True, cancel_futures=True)
            for fut in pending:
                if fut.done() and not fut.cancelled() and fut.exception() is None:
                    on_result(fut.result())
            raise

    def close(self) -> None:
        """Shut the pool down (its processes exit)."""
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None

    def __enter__(self) -> PoolExecutor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class WorkerHost:
    """A Ray actor holding one worker made by `factory`, with `threads` torch/numba threads."""

    def __init__(self, factory: Callable[[], Worker], threads: int):
        set_threads(threads)
        self.worker = factory()

    def run(self, task: Any) -> list[dict]:
        """The worker's records of `task`."""
        return self.worker.run(task)


class RayExecutor:
    """Ray actors, one worker each: `address` (HOST:PORT) joins a cluster, None starts one here.

    Each actor asks Ray for `threads` CPUs (the torch/numba threads it runs), so a local Ray is
    started with workers x threads CPUs, and a cluster without room for every actor is refused up
    front (an actor that can never be placed would leave its tasks waiting forever). A cluster
    that does not answer at `address` is refused within RAY_CONNECT_TIMEOUT_S. A local Ray, and
    a driver joining a loopback address, bind and register 127.0.0.1 (`import_ray`; README,
    "Sweeps on a Ray cluster", says what else Ray's head contacts). On a cluster, checkpoints,
    data and profile files must be at the same paths on every node (a shared filesystem);
    random chips travel as seeds. An actor that dies (its process killed, its node lost) hands
    its task to the others; when none is left, `RayWorkersLost` says so, and the results already
    passed to `on_result` are all that was finished.
    """

    def __init__(self, factory: Callable[[], Worker], workers: int | None, threads: int = 1,
                 address: str | None = None):
        self.factory, self.threads, self.address = factory, threads, address
        self.ray = import_ray(address)
        # Ray prints the raylets' notices (a worker died, ...) on stdout, the CLI's table/JSON
        # stream.
        with redirect_stdout(sys.stderr):
            self.started = not self.ray.is_initialized()
            if self.started:
                if address:
                    join_ray_cluster(self.ray, address)
                else:
                    # "local": a new instance, never the cluster a `ray start` on this machine
                    # last recorded in /tmp/ray/ray_current_cluster (which address=None joins).
                    self.ray.init(address="local", num_cpus=(workers or 1) * threads,
                                  include_dashboard=False, log_to_driver=False,
                                  _node_ip_address="127.0.0.1")
            try:
                n = workers or max(1, int(self.ray.cluster_resources().get("CPU", 1)) // threads)
                _check_ray_room(self.ray, n, threads)
                actor_cls = self.ray.remote(num_cpus=threads)(WorkerHost)
                self.actors = [actor_cls.remote(factory, threads) for _ in range(n)]
            except BaseException:
                self.close()
                raise

    def run(self, tasks: Sequence, on_result: OnResult) -> None:
        """Run `tasks` on the actors (see `run_on_actors`)."""
        with redirect_stdout(sys.stderr):
            run_on_actors(self.ray, self.actors, tasks, on_result)

    def close(self) -> None:
        """Shut down the Ray instance this executor started (a joined cluster stays up)."""
        if self.started and self.ray.is_initialized():
            with redirect_stdout(sys.stderr):
                self.ray.shutdown()

    def __enter__(self) -> RayExecutor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# Where fault maps run (`open_executor`); each has run(tasks, on_result) and close().
Executor: TypeAlias = InProcessExecutor | PoolExecutor | RayExecutor


# Ray's own switch (ray._private.ray_constants, read when ray is imported): on Linux it is on, and
# then every "127.0.0.1"/"localhost" given to ray.init, ray start --address or --node-ip-address is
# replaced by the address this machine would use to reach 8.8.8.8 -- another interface -- and the
# GCS and raylet listen on all interfaces. Off, Ray keeps loopback as written and binds 127.0.0.1
# only; it then refuses `ray start --address` (joining a node), which a driver never does.
RAY_CLUSTER_SWITCH = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"
RAY_CONNECT_TIMEOUT_S = 5.0


class RayWorkersLost(RunError):
    """Every Ray actor died; the results finished before are kept (re-run to resume).

    A runtime failure, not bad input: the CLI says it in one line and exits with status 1.
    """


def ray_address(address: str) -> tuple[str, int]:
    """(host, port) of a Ray cluster address HOST:PORT (IPv6 as [HOST]:PORT), else InputError."""
    host, sep, port = str(address).rpartition(":")
    host = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise InputError(f"Ray address must be HOST:PORT (the head's GCS address, e.g. "
                         f"127.0.0.1:6379), got {address!r}")
    return host, int(port)


def is_loopback(host: str) -> bool:
    """Whether `host` names this machine's loopback interface (127.0.0.0/8, ::1, localhost)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def import_ray(address: str | None = None) -> ModuleType:
    """The ray module, imported so that a local Ray or a loopback `address` stays on loopback.

    Sets RAY_CLUSTER_SWITCH=0 (unless the user set it) before ray is first imported in this
    process, and refuses when ray was imported with the switch on and is not yet initialized,
    since Ray would then reach another interface than the one asked for. A non-loopback
    `address` leaves Ray as it is. For a local Ray, usage stats are off unless the user set
    RAY_USAGE_STATS_ENABLED (Ray posts them to usage-stats.ray.io).
    """
    loopback = address is None or is_loopback(ray_address(address)[0])
    if loopback and "ray" not in sys.modules:
        os.environ.setdefault(RAY_CLUSTER_SWITCH, "0")
    if address is None:      # a local Ray reports usage to usage-stats.ray.io unless told not to
        os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    try:
        import ray
    except ImportError:
        raise InputError("the ray executor needs the 'ray' package (pip install "
                         "'sramsim[ray]')") from None
    from ray._private import ray_constants
    if loopback and ray_constants.ENABLE_RAY_CLUSTER and not ray.is_initialized():
        where = f"--ray-address {address}" if address else "a local Ray"
        raise InputError(f"{where}: Ray would use this machine's network address instead of "
                         f"127.0.0.1; set {RAY_CLUSTER_SWITCH}=0 before Ray is imported")
    return ray


def probe_ray_address(address: str, timeout: float = RAY_CONNECT_TIMEOUT_S) -> None:
    """Refuse, within `timeout` seconds, an address where nothing accepts a TCP connection.

    ray.init kept retrying a closed loopback port for over 90 s here; one plain connect is
    refused at once.
    """
    host, port = ray_address(address)
    try:
        with socket.create_connection((host, port), timeout=timeout):
            pass
    except OSError as exc:
        reason = "timed out" if isinstance(exc, TimeoutError) else (exc.strerror or str(exc))
        raise InputError(f"Ray address {address}: no Ray cluster answers there "
                         f"({reason.lower()})") from None


def join_ray_cluster(ray: ModuleType, address: str) -> None:
    """ray.init on the cluster at `address`, with its failures as one-line InputErrors."""
    probe_ray_address(address)
    try:
        ray.init(address=address, log_to_driver=False)
    except (ConnectionError, RuntimeError, ray.exceptions.RayError) as exc:
        text = " ".join(str(e) for e in (exc, exc.__cause__) if e is not None)
        if "Unauthenticated" in text or "authentication" in text.lower():
            why = ("it asks for the cluster's token: set RAY_AUTH_MODE=token and "
                   "RAY_AUTH_TOKEN_PATH=FILE (or RAY_AUTH_TOKEN) as on its nodes")
        else:
            why = _first_line(exc)
        raise InputError(f"Ray address {address}: could not join the Ray cluster ({why})") \
            from None


def run_on_actors(ray: ModuleType, actors: list, tasks: Sequence[Task],
                  on_result: OnResult) -> None:
    """Run `tasks` on `actors`, one task per actor at a time, results in completion order.

    A task whose actor died goes back to the queue for the living actors; with none left,
    RayWorkersLost. A task that fails for another reason raises its error here.
    """
    running: dict[Any, tuple[Any, Task]] = {}       # Ray object ref -> (actor, task)
    deaths: list[BaseException] = []
    queue, idle = deque(tasks), list(actors)
    while queue or running:
        while queue and idle:
            actor, task = idle.pop(), queue.popleft()
            running[actor.run.remote(task)] = (actor, task)
        if not running:
            raise RayWorkersLost(f"all {len(actors)} Ray worker(s) died "
                                 f"({_first_line(deaths[0])}); finished results are kept: re-run "
                                 "with the same output folder to resume")
        (future,), _ = ray.wait(list(running), num_returns=1)
        actor, task = running.pop(future)
        try:
            records = ray.get(future)
        except ray.exceptions.RayActorError as exc:
            deaths.append(exc)
            queue.appendleft(task)
            continue
        idle.append(actor)
        on_result(records)


def _first_line(exc: BaseException) -> str:
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return f"{type(exc).__name__}: {lines[0] if lines else ''}".rstrip(": ")


def _check_ray_room(ray: ModuleType, actors: int, threads: int) -> None:
    """Refuse a Ray cluster on which `actors` actors of `threads` CPUs each cannot all be placed."""
    per_node = [int(node["Resources"].get("CPU", 0)) for node in ray.nodes() if node.get("Alive")]
    room = sum(c // threads for c in per_node)
    if room < actors:
        raise InputError(f"{actors} workers x {threads} threads: the Ray cluster has room for "
                         f"{room} such worker(s) (CPUs per node: {per_node or 'none'}); use fewer "
                         "workers or threads")
