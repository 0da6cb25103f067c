"""Sweeps on a two-node Ray cluster kept on 127.0.0.1 (issue 15, item 3).

The cluster is a head and a second node, each a set of separate processes (gcs_server, raylets,
workers) started with Ray's test cluster utility bound to 127.0.0.1: on a machine with any other
interface, `ray start --address` rewrites 127.0.0.1 to that interface's address (README, "Sweeps
on a Ray cluster"). The cluster and the `sramsim sweep` driver run in a network namespace of
their own holding loopback and a stand-in for the machine's other interface (a veth pair inside
the namespace, 198.51.100.7 from TEST-NET-2, default route through it): no packet can leave the
namespace, and every TCP/UDP socket in it is checked to be on 127.0.0.1. One more test runs the
README recipe with plain `ray start` for the head and a joining node, in a namespace holding only
loopback: the one place where a joining `ray start` node keeps 127.0.0.1.
"""
import json
import os
import selectors
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import write_idx
from sramsim.analysis import sweep as S
from sramsim.analysis.executors import Execution
from sramsim.errors import InputError, RunError

PORT = 6390
ADDRESS = f"127.0.0.1:{PORT}"
OTHER_INTERFACE = "198.51.100.7"
ROWS, COLS = 128, 256            # 4 KB chips, as in test_sweep
VOLTAGES = [0.9, 0.8]          # faults at both: every point is evaluated
N_SAMPLES = 256
KILL_GRID = dict(offsets=4, batch_size=1)   # 16 points of ~0.5 s: time to kill a worker mid-sweep

LAB = (
    "ip link set lo up"
    " && ip link add veth0 type veth peer name veth1"
    f" && ip addr add {OTHER_INTERFACE}/24 dev veth0 && ip link set veth0 up && ip link set veth1 up"
    " && ip route add default via 198.51.100.1"
    " && echo ready && exec sleep 1200")
LOOPBACK_ONLY = "ip link set lo up && echo ready && exec sleep 1200"

# The cluster: a head and one more node of 1 CPU each on 127.0.0.1; prints its address and the two
# raylets' PIDs, then holds the cluster until its stdin closes.
LAUNCHER = """
import json, sys
from ray.cluster_utils import Cluster
temp_dir, port = sys.argv[1], int(sys.argv[2])
cluster = Cluster(initialize_head=True, head_node_args=dict(
    node_ip_address="127.0.0.1", gcs_server_port=port, num_cpus=1, include_dashboard=False,
    temp_dir=temp_dir))
node = cluster.add_node(node_ip_address="127.0.0.1", num_cpus=1)
cluster.wait_for_nodes(60)
raylet = lambda n: n.all_processes["raylet"][0].process.pid
print(json.dumps({"address": cluster.address, "head_raylet": raylet(cluster.head_node),
                  "node_raylet": raylet(node)}), flush=True)
sys.stdin.read()
cluster.shutdown()
"""

pytestmark = pytest.mark.skipif(not shutil.which("unshare") or not shutil.which("nsenter")
                                or not shutil.which("ip"),
                                reason="needs unshare, nsenter and ip for a loopback-only namespace")


# ----------------------------------------------------------------------------- loopback checks

def _address(hex_addr: str) -> str:
    """An address of /proc/net/{tcp,udp}[6] ('0100007F', or 32 hex digits of 4 host-order words)."""
    raw = bytes.fromhex(hex_addr)
    if len(raw) == 4:
        return ".".join(str(b) for b in raw[::-1])
    words = b"".join(raw[i:i + 4][::-1] for i in range(0, 16, 4))
    if words[:12] == bytes(10) + b"\xff\xff":
        return "::ffff:" + ".".join(str(b) for b in words[12:])
    return ":".join(words[i:i + 2].hex() for i in range(0, 16, 2))


def namespace_sockets(pid: int) -> list[tuple[str, str, str, str]]:
    """(protocol, local address, remote address, state) of every TCP/UDP socket in `pid`'s network
    namespace (its /proc/PID/net tables list the whole namespace)."""
    out = []
    for proto in ("tcp", "tcp6", "udp", "udp6"):
        lines = Path(f"/proc/{pid}/net/{proto}").read_text().splitlines()[1:]
        for line in lines:
            local, remote, state = line.split()[1:4]
            out.append((proto, _address(local.split(":")[0]), _address(remote.split(":")[0]), state))
    return out


LOOPBACK = {"127.0.0.1", "::ffff:127.0.0.1"}
UNSET = {"0.0.0.0", "0000:0000:0000:0000:0000:0000:0000:0000"}


def off_loopback(sockets) -> list:
    """Sockets bound or connected to anything but 127.0.0.1 (a wildcard bind counts as off)."""
    return [s for s in sockets if s[1] not in LOOPBACK or (s[2] not in LOOPBACK and s[2] not in UNSET)]


def test_loopback_check_reads_proc_addresses():
    assert _address("0100007F") == "127.0.0.1"
    assert _address("0000000000000000FFFF00000100007F") == "::ffff:127.0.0.1"
    assert _address("00000000000000000000000001000000") == "0000:0000:0000:0000:0000:0000:0000:0001"
    ok = ("tcp6", "::ffff:127.0.0.1", "0000:0000:0000:0000:0000:0000:0000:0000", "0A")
    wildcard = ("tcp6", "0000:0000:0000:0000:0000:0000:0000:0000", "0000:0000:0000:0000:0000:0000:0000:0000", "0A")
    outside = ("udp", OTHER_INTERFACE, "8.8.8.8", "01")
    assert off_loopback([ok, ("tcp", "127.0.0.1", "127.0.0.1", "01")]) == []
    assert off_loopback([ok, wildcard, outside]) == [wildcard, outside]


class Watch:
    """Samples the namespace's sockets every `interval` s in a thread; `.seen` and `.off` after stop()."""

    def __init__(self, pid: int, interval: float = 0.1):
        self.pid, self.interval, self.seen, self.off = pid, interval, 0, []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self):
        while not self._stop.is_set():
            sockets = namespace_sockets(self.pid)
            self.seen = max(self.seen, len(sockets))
            self.off.extend(s for s in off_loopback(sockets) if s not in self.off)
            self._stop.wait(self.interval)

    def stop(self):
        self._stop.set()
        self._thread.join(timeout=10)
        return self


# ----------------------------------------------------------------------------- fixtures

def _netns(pid) -> str:
    return os.readlink(f"/proc/{pid}/ns/net")


def _namespace_pids(netns: str) -> list[int]:
    """PIDs of the processes in the network namespace `netns`."""
    pids = []
    for entry in Path("/proc").iterdir():
        try:
            if entry.name.isdigit() and os.readlink(entry / "ns" / "net") == netns:
                pids.append(int(entry.name))
        except (FileNotFoundError, ProcessLookupError, PermissionError):
            pass
    return pids


def _kill_namespace(netns: str, keep: int | None = None) -> None:
    """SIGKILL every process in the network namespace `netns` (all of them are this test's)."""
    for pid in _namespace_pids(netns):
        if pid != keep:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


def _namespace(script: str):
    """A network namespace set up by `script`, held by a sleeping process: yields (nsenter prefix,
    holder pid); every process left in it is killed after."""
    holder = subprocess.Popen(["unshare", "-rn", "sh", "-c", script], stdin=subprocess.DEVNULL,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    if holder.stdout.readline().strip() != "ready":     # sh has exited: EOF, no hang
        holder.wait(timeout=10)
        pytest.skip(f"no network namespace ({script!r}) here: {holder.stderr.read().strip()}")
    enter = ["nsenter", "-t", str(holder.pid), "-U", "-n", "--preserve-credentials"]
    netns = _netns(holder.pid)
    try:
        if subprocess.run(enter + ["true"], capture_output=True, timeout=30).returncode != 0:
            pytest.skip("nsenter cannot join the namespace made by unshare -rn")
        yield enter, holder.pid
    finally:
        _kill_namespace(netns, keep=holder.pid)
        holder.kill()
        holder.wait(timeout=10)


@pytest.fixture(scope="module")
def lab():
    """Loopback and a stand-in for the machine's other interface, with the default route."""
    yield from _namespace(LAB)


@pytest.fixture
def loopback_only():
    """Loopback and nothing else: Ray finds no route and takes the hostname's 127.0.0.1."""
    yield from _namespace(LOOPBACK_ONLY)


def _ray_env(root: Path) -> dict:
    """Environment of every process of the test cluster: its own token, no usage stats."""
    token = root / "token"
    if not token.exists():
        token.write_text(os.urandom(32).hex())
    return dict(os.environ, RAY_USAGE_STATS_ENABLED="0", RAY_AUTH_MODE="token",
                RAY_AUTH_TOKEN_PATH=str(token))


def _head_env(root: Path) -> dict:
    """What the nodes need besides node_ip_address="127.0.0.1" (each seen leaving in this test).

    The head's dashboard process, even with RAY_USAGE_STATS_ENABLED=0, posts a "usage stats
    disabled" note to https://usage-stats.ray.io/ (sent to a closed loopback port instead), and
    asks the cloud metadata services (169.254.169.254, metadata.google.internal) which cloud it
    runs on unless $HOME/ray_bootstrap_config.yaml names the provider (HOME of its own).
    """
    home = root / "home"
    home.mkdir(exist_ok=True)
    (home / "ray_bootstrap_config.yaml").write_text("provider:\n  type: local\n")
    return {"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0", "HOME": str(home),
            "RAY_USAGE_STATS_REPORT_URL": "http://127.0.0.1:9/",
            # The cluster's address file (ray_current_cluster) goes here, not into /tmp/ray,
            # where another user's ray.init() would find it and join this cluster.
            "RAY_TMPDIR": str(root)}


def _read_line(stream, timeout: float) -> str:
    sel = selectors.DefaultSelector()
    sel.register(stream, selectors.EVENT_READ)
    ready = sel.select(timeout)
    sel.close()
    return stream.readline() if ready else ""


@pytest.fixture(scope="module")
def cluster(lab):
    """The two-node cluster on 127.0.0.1 inside the lab; stopped (and its leftovers killed) after."""
    pytest.importorskip("ray")
    enter, holder = lab
    root = Path(tempfile.mkdtemp(prefix="sramsim-ray-", dir="/tmp"))   # short: Ray's socket paths
    env = dict(_ray_env(root), **_head_env(root))
    log = open(root / "launcher.log", "w")
    watch = Watch(holder)            # from before the first Ray process starts
    launcher = subprocess.Popen(enter + [sys.executable, "-c", LAUNCHER, str(root / "ray"), str(PORT)],
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log, text=True,
                                env=env)
    try:
        line = _read_line(launcher.stdout, timeout=180)
        assert line, f"the cluster did not start: {(root / 'launcher.log').read_text()[-3000:]}"
        info = json.loads(line)
        assert info["address"] == ADDRESS
        yield {**info, "root": root, "enter": enter, "holder": holder, "watch": watch}
    finally:
        launcher.stdin.close()
        try:
            launcher.wait(timeout=60)
        except subprocess.TimeoutExpired:
            launcher.kill()
            launcher.wait(timeout=10)
        log.close()
        watch.stop()
        _kill_namespace(_netns(holder), keep=holder)
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """A small IDX test set and an untrained CNN checkpoint (the points only have to agree)."""
    from sramsim.nn.models import build, save_checkpoint
    root = tmp_path_factory.mktemp("ray_cluster")
    rng = np.random.default_rng(0)
    data = root / "data"
    data.mkdir()
    write_idx(data / "t10k-images-idx3-ubyte.gz", rng.integers(0, 256, (N_SAMPLES, 28, 28)))
    write_idx(data / "t10k-labels-idx1-ubyte.gz", rng.integers(0, 10, N_SAMPLES))
    torch.manual_seed(0)
    ckpt = root / "cnn.pt"
    save_checkpoint(ckpt, build("cnn").eval(), {"arch": "cnn", "in_channels": 1, "num_classes": 10,
                                                "norm": "batch", "bits": 8, "scheme": "symmetric",
                                                "clip": None, "dataset": str(data)})
    return {"root": root, "data": str(data), "ckpt": str(ckpt)}


def _argv(setup, out, offsets, batch_size, address=ADDRESS):
    return [sys.executable, "-m", "sramsim.commands.main", "sweep", "--model", setup["ckpt"],
            "--data", setup["data"], "--chips", "2", "--rows", str(ROWS), "--cols", str(COLS),
            "--voltages", ",".join(map(str, VOLTAGES)), "--offsets", str(offsets),
            "--batch-size", str(batch_size), "--out", str(out), "--executor", "ray",
            "--ray-address", address, "--workers", "2", "--threads", "1", "--no-progress", "--json"]


def _lines(out) -> list[str]:
    path = Path(out) / "points.jsonl"
    return path.read_text().splitlines() if path.exists() else []


def _key(p):
    return (p.get("voltage", 0), p.get("chip_index", -1), p.get("offset_index", -1))


def _local(setup, out, offsets, batch_size) -> dict:
    """The same grid in this process: key -> (accuracy, loss)."""
    S.run_sweep(setup["ckpt"], setup["data"], S.random_chips(2, "finfet14", ROWS, COLS), VOLTAGES, out, settings=S.SweepSettings(offsets=offsets, batch_size=batch_size), execution=Execution(threads=1, progress=False))
    return {_key(p): (p["accuracy"], p["loss"]) for p in map(json.loads, _lines(out))}


@pytest.fixture(scope="module")
def local_kill_grid(setup, tmp_path_factory) -> dict:
    """The kill tests' grid computed in this process."""
    return _local(setup, tmp_path_factory.mktemp("local_kill_grid"), **KILL_GRID)


def _points(out) -> dict:
    points = [json.loads(line) for line in _lines(out)]
    keyed = {_key(p): (p["accuracy"], p["loss"]) for p in points}
    assert len(keyed) == len(points), "a point was written twice"
    return keyed


def _sweep_workers(cluster) -> dict[int, int]:
    """PID -> parent raylet PID of the cluster's WorkerHost actor processes."""
    found = {}
    for pid in _namespace_pids(_netns(cluster["holder"])):
        try:
            if Path(f"/proc/{pid}/cmdline").read_bytes().startswith(b"ray::WorkerHost"):
                found[pid] = int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
        except (FileNotFoundError, ProcessLookupError):
            pass
    return found


def _wait(predicate, timeout: float, what: str, proc=None):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        if proc is not None and proc.poll() is not None:
            break
        time.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}"
                         + (f" (sweep exited {proc.returncode})" if proc and proc.poll() is not None else ""))


# ----------------------------------------------------------------------------- tests

@pytest.fixture(scope="module")
def local_grid(setup, tmp_path_factory) -> dict:
    """The two-offset grid of the equality tests computed in this process."""
    return _local(setup, tmp_path_factory.mktemp("local_grid"), offsets=2, batch_size=N_SAMPLES)


def test_cluster_sweep_equals_local_run_and_stays_on_loopback(cluster, setup, tmp_path, local_grid):
    """`sramsim sweep --executor ray --ray-address 127.0.0.1:PORT`, one actor on each node: the
    same points as in-process; every socket of the cluster and the driver is on 127.0.0.1 while
    the machine (namespace) also has another interface and a default route through it."""
    env = _ray_env(cluster["root"])      # sramsim itself keeps the loopback address (no switch here)
    res = subprocess.run(cluster["enter"] + _argv(setup, tmp_path / "ray", 2, N_SAMPLES),
                         capture_output=True, text=True, timeout=300, env=env)
    assert res.returncode == 0, res.stderr[-3000:]
    summary = json.loads(res.stdout)
    assert summary["computed_points"] == 2 * len(VOLTAGES) * 2 and summary["workers"] == 2
    assert _points(tmp_path / "ray") == local_grid
    watch = cluster["watch"]            # every socket since the cluster started
    assert watch.seen >= 5 and watch.off == []     # GCS, 2 raylets x 2 ports, ... all loopback
    nodes = json.loads(subprocess.run(
        cluster["enter"] + [sys.executable, "-c", f"import json, ray; ray.init(address='{ADDRESS}'); "
                            "print(json.dumps([n['NodeManagerAddress'] for n in ray.nodes()]))"],
        capture_output=True, text=True, timeout=120,
        env=dict(env, RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER="0")).stdout.splitlines()[-1])
    assert nodes == ["127.0.0.1", "127.0.0.1"]


def test_ray_start_head_and_node_in_a_loopback_only_namespace(loopback_only, setup, tmp_path,
                                                              local_grid):
    """The README recipe as a user runs it: `ray start --head`, `ray start --address` for a
    second node, then `sramsim sweep`, in a namespace whose only network is loopback (the one
    place where a joining `ray start` node keeps 127.0.0.1). Stopped by killing the namespace's
    processes, never `ray stop` (it stops every Ray process of this user on the machine)."""
    enter, holder = loopback_only
    root = Path(tempfile.mkdtemp(prefix="sramsim-ray-", dir="/tmp"))
    try:
        watch = Watch(holder)
        env = _ray_env(root)
        node_env = dict(env, **{k: v for k, v in _head_env(root).items()
                                if k != "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"})
        ray = str(Path(sys.executable).parent / "ray")
        common = ["--node-ip-address", "127.0.0.1", "--num-cpus", "1", "--temp-dir", str(root / "ray")]
        for argv, how in ((["start", "--head", "--port", str(PORT), "--include-dashboard=false"],
                           dict(env, **_head_env(root))),
                          (["start", "--address", ADDRESS], node_env)):
            res = subprocess.run(enter + [ray, *argv, *common], capture_output=True, text=True,
                                 timeout=180, env=how)
            assert res.returncode == 0, res.stderr[-3000:]
            assert "Local node IP: 127.0.0.1" in res.stderr + res.stdout
        res = subprocess.run(enter + _argv(setup, tmp_path / "ray", 2, N_SAMPLES),
                             capture_output=True, text=True, timeout=300, env=env)
        assert res.returncode == 0, res.stderr[-3000:]
        assert json.loads(res.stdout)["workers"] == 2      # one actor on each 1-CPU node
        assert _points(tmp_path / "ray") == local_grid
        watch.stop()
        assert watch.seen >= 5 and watch.off == []     # (here a packet elsewhere cannot even start)
    finally:
        _kill_namespace(_netns(holder), keep=holder)
        shutil.rmtree(root, ignore_errors=True)


def _start_and_kill(cluster, setup, out, which: str):
    """Start a sweep, kill WorkerHost process(es) once a grid point is written; returns
    (sweep process, lines written before the kill, killed PIDs)."""
    env = _ray_env(cluster["root"])
    old = set(_sweep_workers(cluster))          # an earlier sweep's actors, perhaps still exiting
    fresh = lambda: {pid: raylet for pid, raylet in _sweep_workers(cluster).items() if pid not in old}
    sweep = subprocess.Popen(cluster["enter"] + _argv(setup, out, **KILL_GRID),
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        # Two live actors and one finished grid point (the clean point comes first).
        workers = _wait(lambda: len(fresh()) == 2 and fresh(), 180, "two WorkerHost actors", sweep)
        before = _wait(lambda: len(_lines(out)) >= 2 and _lines(out), 180, "a finished point", sweep)
        victims = [pid for pid, parent in workers.items()
                   if which == "all" or parent == cluster["node_raylet"]]
        assert victims and sweep.poll() is None, "the sweep ended before a worker could be killed"
        for pid in victims:
            os.kill(pid, signal.SIGKILL)
        stdout, stderr = sweep.communicate(timeout=300)
    finally:
        if sweep.poll() is None:
            sweep.kill()
            sweep.wait(timeout=30)
    return sweep.returncode, stdout, stderr, before, victims


def test_killed_worker_loses_no_point_and_the_other_finishes_the_grid(cluster, setup, tmp_path,
                                                                      local_kill_grid):
    """SIGKILL the actor on the second node mid-sweep: its task goes to the head's actor, the run
    completes, every point written before the kill is kept, and the grid equals a local run."""
    out = tmp_path / "ray"
    rc, stdout, stderr, before, victims = _start_and_kill(cluster, setup, out, which="node")
    assert len(victims) == 1
    assert rc == 0, stderr[-3000:]
    assert _lines(out)[:len(before)] == before
    grid = 2 * len(VOLTAGES) * 4
    assert len(_lines(out)) == grid + 1
    assert _points(out) == local_kill_grid
    again = subprocess.run(cluster["enter"] + _argv(setup, out, **KILL_GRID),
                           capture_output=True, text=True, timeout=300, env=_ray_env(cluster["root"]))
    assert again.returncode == 0 and json.loads(again.stdout)["computed_points"] == 0
    assert cluster["watch"].off == []


def test_all_workers_killed_one_line_then_rerun_completes_the_grid(cluster, setup, tmp_path,
                                                                   local_kill_grid):
    """SIGKILL both actors mid-sweep: one line on stderr, exit 1 (a runtime failure, not bad
    input), finished points kept; the re-run
    computes only the missing points and the grid equals a local run."""
    out = tmp_path / "ray"
    rc, stdout, stderr, before, victims = _start_and_kill(cluster, setup, out, which="all")
    assert len(victims) == 2
    assert rc == 1 and stdout == ""
    error = [line for line in stderr.splitlines() if line.startswith("sramsim: error:")]
    assert len(error) == 1 and "Ray worker(s) died" in error[0] and "re-run" in error[0]
    assert "Traceback" not in stderr
    kept = _lines(out)
    assert kept[:len(before)] == before
    grid = 2 * len(VOLTAGES) * 4
    res = subprocess.run(cluster["enter"] + _argv(setup, out, **KILL_GRID),
                         capture_output=True, text=True, timeout=300, env=_ray_env(cluster["root"]))
    assert res.returncode == 0, res.stderr[-3000:]
    summary = json.loads(res.stdout)
    finished = sum(1 for line in kept if "chip_index" in json.loads(line))
    assert (summary["computed_points"], summary["reused_points"]) == (grid - finished, finished)
    assert _points(out) == local_kill_grid
    assert cluster["watch"].off == []


def test_unreachable_cluster_is_one_line_and_exit_2(setup, tmp_path):
    """A closed port on 127.0.0.1: one line naming the address, exit 2, no traceback, no Ray
    retries (a plain connect is refused at once)."""
    import socket
    with socket.socket() as closed:       # bound, never listening: connections are refused
        closed.bind(("127.0.0.1", 0))
        address = f"127.0.0.1:{closed.getsockname()[1]}"
        res = subprocess.run(_argv(setup, tmp_path / "out", offsets=1, batch_size=64, address=address),
                             capture_output=True, text=True, timeout=120,
                             env=dict(os.environ, RAY_USAGE_STATS_ENABLED="0"))
    assert res.returncode == 2 and res.stdout == ""
    assert res.stderr.strip().splitlines() == [
        f"sramsim: error: --ray-address {address}: no Ray cluster answers there (connection refused)"]


@pytest.mark.parametrize("address", ["127.0.0.1", "head", ":6379", "127.0.0.1:0", "h:99999", "h:x"])
def test_ray_address_must_be_host_port(address):
    from sramsim.analysis.executors import ray_address
    with pytest.raises(InputError, match="Ray address must be HOST:PORT"):
        ray_address(address)


def test_ray_address_and_loopback():
    from sramsim.analysis.executors import is_loopback, ray_address
    assert ray_address("127.0.0.1:6379") == ("127.0.0.1", 6379)
    assert ray_address("[::1]:6379") == ("::1", 6379)
    assert ray_address("head.example:10001") == ("head.example", 10001)
    assert [is_loopback(h) for h in ("127.0.0.1", "127.0.0.2", "::1", "localhost")] == [True] * 4
    assert [is_loopback(h) for h in (OTHER_INTERFACE, "::ffff:10.0.0.1", "head")] == [False] * 3


# ----------------------------------------------------------------------------- without a cluster

class FakeRay:
    """What run_on_actors and join_ray_cluster use of the ray module: remote calls resolve at
    once, ray.wait returns the oldest call first."""

    class exceptions:
        class RayError(Exception):
            pass

        class RayActorError(RayError):
            pass

    def __init__(self, init_error: Exception | None = None):
        self.init_error = init_error

    def init(self, **kwargs):
        if self.init_error is not None:
            raise self.init_error

    @staticmethod
    def wait(refs, num_returns):
        return refs[:num_returns], refs[num_returns:]

    @staticmethod
    def get(ref):
        if isinstance(ref.value, Exception):
            raise ref.value
        return ref.value


class FakeActor:
    """Runs a task as [{"task": t, "by": name}]; dead from its `dies_at`-th call on."""

    def __init__(self, name, dies_at=None, error=None):
        self.name, self.dies_at, self.error, self.calls = name, dies_at, error, 0
        self.run = self

    def remote(self, task):
        self.calls += 1
        ref = type("Ref", (), {})()
        if self.dies_at is not None and self.calls >= self.dies_at:
            ref.value = self.error or FakeRay.exceptions.RayActorError(f"{self.name} died\ndetails")
        else:
            ref.value = [{"task": task, "by": self.name}]
        return ref


def test_a_dead_actors_task_goes_to_the_others_once():
    from sramsim.analysis.executors import run_on_actors
    got = []
    a, b = FakeActor("a", dies_at=2), FakeActor("b")
    run_on_actors(FakeRay(), [a, b], list(range(6)), got.extend)
    assert sorted(r["task"] for r in got) == list(range(6))         # each task once
    assert a.calls == 2 and [r["by"] for r in got].count("a") == 1    # a's second task went to b


def test_all_actors_dead_is_one_line_and_keeps_what_finished():
    from sramsim.analysis.executors import RayWorkersLost, run_on_actors
    got = []
    with pytest.raises(RayWorkersLost) as info:
        run_on_actors(FakeRay(), [FakeActor("a", dies_at=3), FakeActor("b", dies_at=2)],
                      list(range(6)), got.extend)
    assert isinstance(info.value, RunError) and not isinstance(info.value, InputError)
    assert "\n" not in str(info.value)
    assert str(info.value).startswith("all 2 Ray worker(s) died (RayActorError: ")
    assert "re-run with the same output folder" in str(info.value)
    # b: 0 then dies on 2; a: 1, 3, then dies on 2 (handed back by b); 4 and 5 never ran
    assert sorted(r["task"] for r in got) == [0, 1, 3]


def test_a_failing_task_is_not_retried():
    from sramsim.analysis.executors import run_on_actors
    with pytest.raises(ZeroDivisionError):
        run_on_actors(FakeRay(), [FakeActor("a", dies_at=1, error=ZeroDivisionError("bug"))],
                      [0, 1], lambda records: None)


def test_join_failures_are_one_line_naming_the_address():
    import socket
    from sramsim.analysis.executors import join_ray_cluster
    with socket.socket() as head:           # something that accepts, where the probe looks
        head.bind(("127.0.0.1", 0))
        head.listen()
        address = f"127.0.0.1:{head.getsockname()[1]}"
        denied = ConnectionError(f"Failed to connect to Ray cluster at {address}")
        denied.__cause__ = RuntimeError("Failed to connect to GCS.\nUnauthenticated: InvalidAuthToken")
        with pytest.raises(InputError, match=f"^Ray address {address}: could not join the Ray "
                                             "cluster \\(it asks for the cluster's token: set "
                                             "RAY_AUTH_MODE=token"):
            join_ray_cluster(FakeRay(denied), address)
        with pytest.raises(InputError, match=f"^Ray address {address}: could not join the Ray "
                                             "cluster \\(RuntimeError: boom\\)$"):
            join_ray_cluster(FakeRay(RuntimeError("boom\nmore")), address)


def test_ray_imported_with_its_cluster_switch_on_is_refused_for_loopback():
    """A driver process that imported ray before sramsim could keep 127.0.0.1 as written."""
    code = ("import ray; from sramsim.analysis.executors import import_ray\n"
            "try:\n    import_ray('127.0.0.1:6379')\nexcept Exception as e:\n    print(e)\n"
            "print(import_ray('192.0.2.1:6379').__name__)")
    env = {k: v for k, v in os.environ.items() if k != "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"}
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                         env=env)
    assert res.stdout.splitlines() == [
        "--ray-address 127.0.0.1:6379: Ray would use this machine's network address instead of "
        "127.0.0.1; set RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0 before Ray is imported", "ray"]
