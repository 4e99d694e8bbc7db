"""One student cannot take the machine from the others: CPU, memory, disk and /dev/shm per kernel.

The attacks of the hostile review, each measured the way the review did -- an honest neighbour
graded in the same batch, its score compared with and without the protection:

* **CPU**: a kernel starts sixteen ``setsid`` busy loops and keeps them running. Each kernel has
  a control group with a one-core quota (or, where there are none, a watchdog that pauses a tree
  over its share), so the loops share one core and the neighbour -- whose two tests need a few
  CPU seconds each within a 20 s cell limit -- keeps its full marks. With ``--sandbox none`` (no
  box, no quota: the old behaviour) the same batch costs the neighbour its tasks.
* **disk**: a kernel fills its ipc folder and outbox. Each run's folder is a tmpfs of its own,
  capped in size and files, so only that kernel's folder fills; the neighbours start and pass.
  Without it (``--sandbox none``, the folders on the grader's ``$TMPDIR``, here a 48 MiB tmpfs)
  the next neighbour cannot even start its kernel.
* **/dev/shm**: ``multiprocessing.Pool`` and ``DataLoader(num_workers=2)`` need a writable
  ``/dev/shm``; the box has a private one (a root-owned ``/dev`` once made them fail only here).
* **memory**: a page shared by forked workers is counted once (cgroup accounting, or the
  watchdog's sum of PSS), so a kernel with idle workers is not killed for memory it does not use.

The five neighbour batches take about six minutes together; the rest a few seconds each.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import nbformat
import pytest

sys.path.insert(0, str(Path(__file__).parent / "grader_fixtures"))
import busy  # noqa: E402
import tiny  # noqa: E402

from prunekit.grade import sandbox  # noqa: E402
from prunekit.grade.limits import Limits  # noqa: E402
from prunekit.grade.runner import run_notebook  # noqa: E402
from prunekit.grade.sandbox import cgroups  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
CELL_TIMEOUT = 20  # the neighbour's test needs ~3.6 CPU-s: passes with a fair share of a busy machine
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
IS_ROOT = os.geteuid() == 0
pytestmark = [pytest.mark.slow, pytest.mark.skipif(shutil.which("bwrap") is None and not IN_CI,
                                                   reason="bubblewrap is not installed (make sandbox-deps); in CI "
                                                          "this fails")]


def _cli(folder: Path, solutions: Path, cache: Path, *extra: str, env: dict | None = None) -> dict:
    """Grade ``folder`` with the command line (-j 2); the parsed JSON, the exit status, stderr."""
    out = folder.parent / f"out-{folder.name}"
    out.mkdir()
    cmd = [sys.executable, "-m", "prunekit.grade", str(folder), "--solutions", str(solutions),
           "--json", str(out / "all.json"), "--gradebook", str(out / "grades.csv"), "--feedback", str(out / "fb"),
           "--cell-timeout", str(CELL_TIMEOUT), "--cache-dir", str(cache), "-j", "2", *extra]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=600,
                          env={**os.environ, "PYTHONPATH": str(REPO), **(env or {})})
    results = json.loads((out / "all.json").read_text()) if (out / "all.json").exists() else {}
    return {"code": done.returncode, "stderr": done.stderr, "results": results,
            "gradebook": (out / "grades.csv").exists(), "scores": {n: r["score"] for n, r in results.items()}}


def _batch(root: Path, name: str, attacker: str | None, honest: tuple[str, ...], attacker_name: str = "") -> Path:
    """A submissions folder: the honest solutions, and the attacker's solution cell in its own copy.
    The names set the order: the first goes to the pool's warm worker, the second starts in a worker
    spawned next, a third when the first is done."""
    folder = root / name
    folder.mkdir()
    solution = busy.busy_solution()
    for stem in honest:
        nbformat.write(solution, folder / f"{stem}.ipynb")
    if attacker is not None:
        nbformat.write(tiny.with_solutions(solution, {"busy-work": attacker}), folder / f"{attacker_name}.ipynb")
    return folder


@pytest.fixture(scope="module")
def busy_course(tmp_path_factory):
    root = tmp_path_factory.mktemp("busy")
    return {"root": root, "solutions": busy.write_busy(root / "solutions"), "cache": root / "cache"}


# ---------------------------------------------------------------- the mechanism, shown to work here
def _loops_share(limits: Limits, loops: int = 4, seconds: float = 4.0) -> float:
    """Start ``loops`` setsid busy loops in a kernel; the cores they got, on average, over ``seconds``
    (read from /proc inside the box: its PID namespace holds exactly the kernel's processes)."""
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(f'''import os, subprocess, sys, time
procs = [subprocess.Popen([sys.executable, "-c", "while True: pass"], start_new_session=True) for _ in range({loops})]
time.sleep(0.5)
def cpu(pid):
    fields = open(f"/proc/{{pid}}/stat").read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
start, used = time.time(), sum(cpu(p.pid) for p in procs)
time.sleep({seconds})
print((sum(cpu(p.pid) for p in procs) - used) / (time.time() - start))''')]
    (run,) = run_notebook(nb, limits)
    assert run.status == "ok", run.evalue
    return float(nb.cells[0].outputs[0]["text"])


def _box(isolation: str) -> sandbox.Sandbox:
    try:
        return sandbox.resolve("bwrap", isolation=isolation)
    except sandbox.SandboxUnavailable as err:
        if IN_CI:
            raise
        pytest.skip(str(err))


def test_a_cgroup_quota_holds_a_tree_of_busy_loops_to_its_share():
    """Four setsid loops, a quota of half a core: together they get no more than that."""
    box = _box("cgroup")
    share = _loops_share(Limits(cell_timeout=60, cpus=0.5, sandbox=box))
    assert share <= 0.5 * 1.15 + 0.05, f"the loops got {share:.2f} cores under a 0.5-core quota"


def test_the_watchdog_holds_a_tree_of_busy_loops_to_its_share_where_there_are_no_cgroups():
    """The fallback: the same tree, paused whenever it is over its share (plus a one-second burst)."""
    box = _box("watchdog")
    assert box.cgroups is None and box.watchdog
    share = _loops_share(Limits(cell_timeout=60, cpus=0.5, sandbox=box), seconds=6.0)
    assert share <= 0.5 + 1.0 / 6.0 + 0.1, f"the loops got {share:.2f} cores with a 0.5-core share"


@pytest.mark.parametrize("isolation", ["cgroup", "watchdog"])
def test_the_box_has_a_private_writable_dev_shm_for_worker_processes(isolation):
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(source) for source in (
        "import multiprocessing, os\nwith multiprocessing.Pool(2) as pool:\n    squares = pool.map(abs, range(-4, 4))\n"
        "print(squares, sorted(os.listdir('/dev/shm')))\nopen('/dev/shm/mine', 'w').write('x')",
        "import torch\nfrom torch.utils.data import DataLoader, TensorDataset\n"
        "data = TensorDataset(torch.arange(64.0).reshape(32, 2))\n"
        "print(sum(float(b[0].sum()) for b in DataLoader(data, batch_size=8, num_workers=2)))")]
    runs = run_notebook(nb, Limits(cell_timeout=120, sandbox=_box(isolation)))
    assert [r.status for r in runs] == ["ok", "ok"], [(r.ename, r.evalue) for r in runs]
    assert nb.cells[0].outputs[0]["text"].startswith("[4, 3, 2, 1, 0, 1, 2, 3] [")
    assert float(nb.cells[1].outputs[0]["text"]) == sum(range(64))
    second = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("import os\nprint(os.listdir('/dev/shm'))")])
    (run,) = run_notebook(second, Limits(cell_timeout=60, sandbox=_box(isolation)))
    assert run.status == "ok" and second.cells[0].outputs[0]["text"] == "[]\n"  # not the first kernel's


@pytest.mark.parametrize("isolation", ["cgroup", "watchdog"])
def test_memory_shared_by_forked_workers_is_counted_once(isolation):
    """300 MB touched, then four idle forks: by resident set size the tree holds 1.5 GB, by the
    pages it really uses a little over 300 MB. Under an 800 MiB limit the kernel must survive."""
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(
        "import os, time\nblock = bytearray(300 << 20)\nfor i in range(0, len(block), 4096):\n    block[i] = 1\n"
        "children = []\nfor _ in range(4):\n    pid = os.fork()\n    if pid == 0:\n        time.sleep(4)\n"
        "        os._exit(0)\n    children.append(pid)\nfor pid in children:\n    os.waitpid(pid, 0)\nprint('done')")]
    (run,) = run_notebook(nb, Limits(cell_timeout=60, memory_mb=800, rlimit=False, sandbox=_box(isolation)))
    assert run.status == "ok", (run.status, run.detail)


def test_a_memory_bomb_is_still_stopped_and_named():
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(s) for s in
                ("x = []\nwhile True:\n    x.append(bytearray(20 << 20))", "print('after')")]
    runs = run_notebook(nb, Limits(cell_timeout=60, memory_mb=400, rlimit=False, sandbox=_box("cgroup")))
    assert [r.status for r in runs] == ["memory", "not_run"] and "memory limit exceeded" in runs[0].detail


def test_cgroup_detection_reads_v1_and_v2_layouts(tmp_path):
    """The two layouts this code cannot both meet on one machine, as files: v2 (one tree, our own
    folder under its root) and v1 (a tree per controller, groups beside the grader's own)."""
    v2 = tmp_path / "unified"
    v2.mkdir()
    (v2 / "cgroup.controllers").write_text("cpuset cpu io memory pids\n")
    (v2 / "cgroup.subtree_control").write_text("cpu memory pids\n")
    (v2 / cgroups.BASE_NAME).mkdir()
    for name in ("cgroup.controllers", "cgroup.subtree_control"):
        (v2 / cgroups.BASE_NAME / name).write_text("cpu memory pids\n")
    mounts = tmp_path / "mounts"
    mounts.write_text(f"cgroup2 {v2} cgroup2 rw,nosuid 0 0\n")
    own = tmp_path / "own"
    own.write_text("0::/user.slice/grader.scope\n")
    hierarchy, why = cgroups.detect(str(mounts), str(own))
    assert why == "" and hierarchy == cgroups.Hierarchy(2, {"": str(v2 / cgroups.BASE_NAME)})
    group = cgroups.Group.create(hierarchy, "prunekit-grade-run-x", cpus=1.5, memory_bytes=1 << 30)
    folder = Path(group.folders[""])
    assert (folder / "cpu.max").read_text() == "150000 100000" and (folder / "memory.max").read_text() == str(1 << 30)
    assert group.procs_files() == [str(folder / "cgroup.procs")]
    mounts.write_text("cgroup /cg/cpu,cpuacct cgroup rw,cpu,cpuacct 0 0\ncgroup /cg/memory cgroup rw,memory 0 0\n")
    own.write_text("4:memory:/jobs/7\n3:cpu,cpuacct:/\n0::/\n")
    assert cgroups._v1(cgroups._mounts(str(mounts)), cgroups._own_paths(str(own))) == \
        cgroups.Hierarchy(1, {"cpu": "/cg/cpu,cpuacct", "memory": "/cg/memory/jobs/7"})
    mounts.write_text("cgroup /cg/memory cgroup rw,memory 0 0\n")
    assert cgroups._v1(cgroups._mounts(str(mounts)), {}) == "no cgroup v1 cpu hierarchy is mounted"


# ---------------------------------------------------------------- attack 3: CPU, with a neighbour
@pytest.fixture(scope="module")
def cpu_batches(busy_course):
    root, solutions, cache = busy_course["root"], busy_course["solutions"], busy_course["cache"]
    def attack(name: str, *extra: str) -> dict:  # the loops start first; the neighbour's kernel next
        return _cli(_batch(root, name, busy.cpu_hog(), ("b_honest",), "a_attacker"), solutions, cache, *extra)

    return {"cgroup": attack("attack-cgroup", "--isolation", "cgroup"),
            "watchdog": attack("attack-watchdog", "--isolation", "watchdog"),
            "unprotected": attack("attack-none", "--sandbox", "none")}


@pytest.mark.parametrize("isolation", ["cgroup", "watchdog"])
def test_sixteen_busy_loops_cost_the_neighbour_nothing(cpu_batches, isolation):
    batch = cpu_batches[isolation]
    if not batch["results"] and "no control group per kernel" in batch["stderr"] and not IN_CI:
        pytest.skip("no cgroups here")
    assert batch["code"] == 0 and batch["gradebook"], batch["stderr"][-2000:]
    assert batch["scores"] == {"a_attacker": 0.0, "b_honest": 2.0}, batch["results"]


def test_without_the_protection_the_same_loops_cost_the_neighbour_its_task(cpu_batches):
    """The control experiment: the attack is real, so the test above can fail."""
    batch = cpu_batches["unprotected"]
    assert batch["gradebook"] and batch["scores"]["b_honest"] < 2.0, batch["results"]


# ---------------------------------------------------------------- attack 4: disk, with neighbours
@pytest.fixture(scope="module")
def small_tmpdir():
    """A 48 MiB tmpfs as the grader's $TMPDIR: the "disk" an attacker can fill in seconds."""
    if not IS_ROOT:
        pytest.skip("mounting a small file system for $TMPDIR needs root")
    folder = Path(tempfile.mkdtemp(prefix="prunekit-small-tmp-"))
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=48m", "prunekit-test", str(folder)], check=True)
    yield folder
    subprocess.run(["umount", "-l", str(folder)], check=False)
    folder.rmdir()


@pytest.fixture(scope="module")
def disk_batches(busy_course, small_tmpdir):
    root, solutions, cache = busy_course["root"], busy_course["solutions"], busy_course["cache"]
    filler, env = busy.disk_filler(), {"TMPDIR": str(small_tmpdir)}
    subprocess.run([sys.executable, "-m", "prunekit.grade.reference", "--solutions", str(solutions), "--cache-dir",
                    str(cache), "--cell-timeout", str(CELL_TIMEOUT)], check=True, capture_output=True, timeout=300,
                   env={**os.environ, "PYTHONPATH": str(REPO)})  # the expected values, before any attack
    return {"protected": _cli(_batch(root, "disk", filler, ("a_honest", "c_honest"), "b_attacker"), solutions, cache,
                              env=env),
            "unprotected": _cli(_batch(root, "disk-none", filler, ("a_honest", "c_honest"), "b_attacker"), solutions,
                                cache, "--sandbox", "none", env=env)}


def test_filling_its_folders_costs_the_neighbours_nothing(disk_batches):
    """c_honest starts while the attacker's folders are full: it only shares the machine, not a disk."""
    batch = disk_batches["protected"]
    assert batch["code"] == 0 and batch["gradebook"], batch["stderr"][-2000:]
    assert batch["scores"] == {"a_honest": 2.0, "b_attacker": 0.0, "c_honest": 2.0}, batch["results"]


def test_without_private_folders_the_filled_disk_costs_the_next_neighbour_its_kernel(disk_batches):
    batch = disk_batches["unprotected"]
    assert batch["gradebook"] and batch["scores"]["c_honest"] == 0.0, batch["results"]
    assert "could not start a kernel" in batch["results"]["c_honest"]["error"]
