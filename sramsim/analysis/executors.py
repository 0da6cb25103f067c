"""Where sweep points run: in this process, in a local process pool, or on Ray actors.

Every executor runs the same `SweepWorker` with the same torch thread count (`threads`, 1 by
default): CPU kernels may split reductions differently for different thread counts, so fixing it
makes every point bit-identical whichever executor and however many workers run it. Each worker
loads the model and data once, quantizes once, builds chips from their `ChipSpec` (a profile path
or a random chip's seed, never the fault arrays) and keeps the last few chips, so that a chip's
masks build incrementally as its voltages come in descending order. Results come back to the caller task by task (`on_result`), so the
caller can write each point as soon as it is finished.
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
from collections.abc import Callable, Sequence
from contextlib import contextmanager, redirect_stdout
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from sramsim.errors import InputError, RunError, check_threads
from sramsim.memory.chip import Chip

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
    ecc: str | None = None              # SECDED code of the weight memory (sramsim.inject.ecc)
    ecc_policy: str = "keep"
    torch_quantized: bool = False       # model_path is a PT2E program (.pt2): PyTorch's own int8
    bit_placement: str = "linear"       # sramsim.inject.bit_placement policy, planned per point
    model: nn.Module | None = field(default=None, repr=False)
    dataset: object | None = field(default=None, repr=False)

    def __getstate__(self):
        state = dict(self.__dict__)
        if self.model_path is not None:
            state["model"] = None
        if self.dataset_spec is not None:
            state["dataset"] = None
        return state

    def load_model(self) -> nn.Module:
        """The model in eval mode (loaded from `model_path` on first use in this process)."""
        if self.model is None and self.torch_quantized:
            from sramsim.inject.torch_quantized import load_exported
            self.model = load_exported(self.model_path)
        elif self.model is None:
            from sramsim.nn.models import load_checkpoint
            self.model, _ = load_checkpoint(self.model_path)
        return self.model.eval()

    def load_dataset(self):
        """The test set (loaded from `dataset_spec` on first use in this process)."""
        if self.dataset is None:
            from sramsim.nn.data import load_dataset
            self.dataset = load_dataset(self.dataset_spec, "test", self.limit)
        return self.dataset


def word_offset(chip: Chip, offset_index: int, offsets: int) -> int:
    """Placement k of K on a chip: evenly spaced word offsets k * capacity_words // K."""
    return (int(offset_index) * chip.geometry.capacity_words) // int(offsets)


class SweepWorker:
    """Evaluates sweep points; state (model, quantized image, data, recent chips) lives here."""

    def __init__(self, workload: Workload, threads: int | None = None):
        if threads:
            set_threads(int(threads))
        from sramsim.inject.quantized_model import QuantizedModel
        self.workload = workload
        self.model = workload.load_model()
        self.dataset = workload.load_dataset()
        if workload.torch_quantized:   # its int8 weights as they are, run on its own kernels
            from sramsim.inject.torch_quantized import TorchQuantizedModel
            self.qm = TorchQuantizedModel(self.model)
        else:
            self.qm = QuantizedModel(self.model, workload.bits, workload.scheme, workload.clip,
                                     include_bias=workload.include_bias)
        self._chips: OrderedDict[int, Chip] = OrderedDict()
        self._image = np.empty_like(self.qm.image)
        self._clean: dict | None = None
        self._faulty = None

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
            from sramsim.nn.evaluation import evaluate
            t0 = time.perf_counter()
            weights = None if self.workload.torch_quantized else self.qm.clean_weights()
            r = evaluate(self.model, self.dataset, weights, self.workload.batch_size)
            self._clean = {**r, "t_eval": time.perf_counter() - t0}
        return self._clean

    def faulty(self):
        """The model that faulty points run on: a copy of the model whose weights get each
        point's faults in place (`FaultyModel`), made on the first faulty point."""
        if self._faulty is None:
            from sramsim.nn.evaluation import FaultyModel
            # a TorchQuantizedModel loads each map's int8 weights into the model itself
            self._faulty = self.qm if self.workload.torch_quantized else \
                FaultyModel(self.qm, self.model)
        return self._faulty

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
        faulty = self.faulty()
        out = []
        for k in task.offset_indices:
            offset = word_offset(chip, k, w.offsets)
            t0 = time.perf_counter()
            ecc_stats = bits_stats = None
            if w.bit_placement != "linear":     # planned at this point's voltage; read as an image
                plan = self.qm.plan_bits(chip, v, w.bit_placement, offset)
                bits_stats = {k: x for k, x in plan.overhead().items()
                              if k not in ("policy", "planning_voltage")}
                fault_map = (self.qm.faulty_image(chip, v, offset, out=self._image,
                                                  bit_placement=plan),)
            elif w.ecc is None:
                fault_map = (chip, v, offset)
            else:
                image, ecc_stats = self.qm.ecc_memory(w.ecc).read(chip, v, offset, w.ecc_policy,
                                                                  out=self._image)
                fault_map = (image,)
            with faulty.faults(*fault_map) as (weights, changed):
                unchanged = not changed
                t1 = time.perf_counter()
                # No fault touched the model's words: the point is the fault-free evaluation.
                r = self.clean() if unchanged else evaluate(faulty.model, self.dataset, weights,
                                                            w.batch_size)
                t2 = time.perf_counter()
            out.append({"voltage": v, "chip_index": task.chip_index, "chip": chip.name,
                        "offset_index": int(k), "offset": offset, "ber": chip.ber(v),
                        "faults": chip.count(v), "accuracy": r["accuracy"],
                        "rerr": 1.0 - r["accuracy"], "loss": r["loss"], "unchanged": unchanged,
                        "n_samples": len(self.dataset), "t_faults": t1 - t0,
                        "t_eval": None if unchanged else t2 - t1})
            if ecc_stats is not None:
                out[-1]["ecc"] = ecc_stats.as_dict()
            if bits_stats is not None:
                out[-1]["bit_placement"] = bits_stats
        return out


def get_threads() -> tuple[int, int]:
    """torch's and numba's current thread counts (the pair `set_threads` takes back)."""
    import numba
    return torch.get_num_threads(), numba.get_num_threads()


def set_threads(threads: int | tuple[int, int]) -> tuple[int, int]:
    """Make torch and numba use `threads` threads (or a (torch, numba) pair); returns the previous pair.

    The one thread-pinning helper (workers, tests, benchmarks): a worker uses `threads` cores, no
    more. (A numba parallel launch on an oversubscribed machine costs milliseconds, more than the
    kernel on a small image.)
    """
    import numba
    before = get_threads()
    t_torch, t_numba = (threads, threads) if isinstance(threads, int) else threads
    check_threads(int(t_torch)), check_threads(int(t_numba))   # torch crashes on 100000
    torch.set_num_threads(int(t_torch))
    numba.set_num_threads(min(int(t_numba), numba.config.NUMBA_NUM_THREADS))
    return before


@contextmanager
def pinned_threads(threads: int):
    """torch and numba run `threads` threads inside the block and their previous counts after it."""
    before = set_threads(threads)
    try:
        yield
    finally:
        set_threads(before)


# ------------------------------------------------------------------------------ executors

OnResult = Callable[[list[dict]], None]


def run_inprocess(workload: Workload, tasks: Sequence[Task], threads: int,
                  on_result: OnResult) -> None:
    """Run here, with torch's and numba's thread counts set to `threads` and restored after."""
    with pinned_threads(threads):
        worker = SweepWorker(workload)
        for task in tasks:
            on_result(worker.run(task))


# The pool's worker processes each hold one SweepWorker, made by the pool's initializer. This is
# per-process state of a child process, never touched by the parent.
_POOL_WORKER: SweepWorker | None = None


def _pool_init(workload: Workload, threads: int, parent: int) -> None:
    global _POOL_WORKER
    signal.signal(signal.SIGINT, signal.SIG_IGN)   # Ctrl-C is the parent's to handle
    exit_with_parent(parent)
    _POOL_WORKER = SweepWorker(workload, threads)


def exit_with_parent(parent: int, interval: float = 0.2) -> threading.Thread:
    """End this process within `interval` seconds once `parent` is no longer its parent.

    A pool worker whose sweep was killed (SIGKILL leaves no time to shut the pool down) would
    otherwise idle on, reparented to init, holding its memory and the resource tracker's pipe.
    A daemon thread polls os.getppid() (portable, and it does not depend on which thread spawned
    the worker, as Linux's PR_SET_PDEATHSIG does).
    """
    def watch():
        while os.getppid() == parent:
            time.sleep(interval)
        os._exit(1)

    thread = threading.Thread(target=watch, name="sramsim-exit-with-parent", daemon=True)
    thread.start()
    return thread


def _pool_run(task: Task) -> list[dict]:
    return _POOL_WORKER.run(task)


def run_pool(workload: Workload, tasks: Sequence[Task], workers: int, threads: int,
             on_result: OnResult) -> None:
    """A local pool of `workers` spawned processes (spawn: no forked torch/numba thread state).

    Workers exit on their own when this process dies (`exit_with_parent`), even by SIGKILL.
    """
    import multiprocessing as mp
    from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait

    ctx = mp.get_context("spawn")
    pool = ProcessPoolExecutor(workers, mp_context=ctx, initializer=_pool_init,
                               initargs=(workload, threads, os.getpid()))
    pending = {pool.submit(_pool_run, t) for t in tasks}
    try:
        while pending:
            done, pending = wait(pending, return_when=FIRST_COMPLETED)
            for fut in done:
                on_result(fut.result())
    except KeyboardInterrupt:
        # Keep what is already computing: cancel the queue, wait for the points in flight.
        for fut in pending:
            fut.cancel()
        pool.shutdown(wait=True, cancel_futures=True)
        for fut in pending:
            if fut.done() and not fut.cancelled() and fut.exception() is None:
                on_result(fut.result())
        raise
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def run_ray(workload: Workload, tasks: Sequence[Task], workers: int | None, threads: int,
            address: str | None, on_result: OnResult) -> None:
    """Ray actors, one SweepWorker each: `address` (HOST:PORT) joins a cluster, None starts one here.

    Each actor asks Ray for `threads` CPUs (the torch/numba threads it runs), so a local Ray is
    started with workers x threads CPUs, and a cluster without room for every actor is refused up
    front (an actor that can never be placed would leave its points waiting forever). A cluster
    that does not answer at `address` is refused within RAY_CONNECT_TIMEOUT_S. A local Ray, and
    a driver joining a loopback address, bind and register 127.0.0.1 (`import_ray`; README,
    "Sweeps on a Ray cluster", says what else Ray's head contacts). On a cluster, the
    checkpoint, the data and profile files must be at the same paths on every node (a shared
    filesystem); random chips travel as seeds. An actor that dies (its process killed, its node
    lost) hands its task to the others; when none is left, `RayWorkersLost` says so, and the
    points already passed to `on_result` are all that was finished.
    """
    ray = import_ray(address)
    # Ray prints the raylets' notices (a worker died, ...) on stdout, the CLI's table/JSON stream.
    with redirect_stdout(sys.stderr):
        started = not ray.is_initialized()
        if started:
            if address:
                join_ray_cluster(ray, address)
            else:
                # "local": a new instance, never the cluster a `ray start` on this machine
                # last recorded in /tmp/ray/ray_current_cluster (which address=None joins).
                ray.init(address="local", num_cpus=(workers or 1) * threads,
                         include_dashboard=False, log_to_driver=False,
                         _node_ip_address="127.0.0.1")
        try:
            n = workers or max(1, int(ray.cluster_resources().get("CPU", 1)) // threads)
            _check_ray_room(ray, n, threads)
            actor_cls = ray.remote(num_cpus=threads)(SweepWorker)
            actors = [actor_cls.remote(workload, threads) for _ in range(n)]
            run_on_actors(ray, actors, tasks, on_result)
        finally:
            if started:
                ray.shutdown()


# Ray's own switch (ray._private.ray_constants, read when ray is imported): on Linux it is on, and
# then every "127.0.0.1"/"localhost" given to ray.init, ray start --address or --node-ip-address is
# replaced by the address this machine would use to reach 8.8.8.8 -- another interface -- and the
# GCS and raylet listen on all interfaces. Off, Ray keeps loopback as written and binds 127.0.0.1
# only; it then refuses `ray start --address` (joining a node), which a driver never does.
RAY_CLUSTER_SWITCH = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"
RAY_CONNECT_TIMEOUT_S = 5.0


class RayWorkersLost(RunError):
    """Every Ray actor of a sweep died; the points finished before are kept (re-run to resume).

    A runtime failure, not bad input: the CLI says it in one line with exit status 1.
    """


def ray_address(address: str) -> tuple[str, int]:
    """(host, port) of a Ray cluster address HOST:PORT (IPv6 as [HOST]:PORT), else InputError."""
    host, sep, port = str(address).rpartition(":")
    host = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise InputError(f"--ray-address must be HOST:PORT (the head's GCS address, e.g. "
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


def import_ray(address: str | None = None):
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
        raise InputError("--executor ray needs the 'ray' package (pip install ray)") from None
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
        raise InputError(f"--ray-address {address}: no Ray cluster answers there "
                         f"({reason.lower()})") from None


def join_ray_cluster(ray, address: str) -> None:
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
        raise InputError(f"--ray-address {address}: could not join the Ray cluster ({why})") \
            from None


def run_on_actors(ray, actors: list, tasks: Sequence[Task], on_result: OnResult) -> None:
    """Run `tasks` on `actors`, one task per actor at a time, results in completion order.

    A task whose actor died goes back to the queue for the living actors; with none left,
    RayWorkersLost. A task that fails for another reason raises its error here.
    """
    queue, idle, running, deaths = deque(tasks), list(actors), {}, []
    while queue or running:
        while queue and idle:
            actor, task = idle.pop(), queue.popleft()
            running[actor.run.remote(task)] = (actor, task)
        if not running:
            raise RayWorkersLost(f"--executor ray: all {len(actors)} Ray worker(s) died "
                                 f"({_first_line(deaths[0])}); finished points are kept: re-run "
                                 "with the same --out to resume")
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


def _check_ray_room(ray, actors: int, threads: int) -> None:
    """Refuse a Ray cluster on which `actors` actors of `threads` CPUs each cannot all be placed."""
    per_node = [int(node["Resources"].get("CPU", 0)) for node in ray.nodes() if node.get("Alive")]
    room = sum(c // threads for c in per_node)
    if room < actors:
        raise InputError(f"--workers {actors} x --threads {threads}: the Ray cluster has room for "
                         f"{room} such worker(s) (CPUs per node: {per_node or 'none'}); lower "
                         "--workers or --threads")
