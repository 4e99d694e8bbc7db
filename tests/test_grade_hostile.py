"""The autograder against broken and hostile submissions (tiny fixture exercise, real kernels).

One folder-mode CLI run grades every submission below in parallel (``-j 3``, about two
minutes), honest ones interleaved with the attacks; each test then checks one submission's row.
The fixture exercise ``ex90_tiny`` has three tasks: ``test-double`` (2 points), ``test-l1`` (3,
uses ``torch.allclose``, records its asserted properties), ``test-answer`` (1).

Every attack must gain 0 points it did not earn, the honest submissions graded in the same
batch must keep full marks, and the batch must write its gradebook and every feedback page.
Besides attacks on the sandbox and on the checks, the batch holds what the grader reads as
root before any kernel runs: a notebook whose cells are strings, one nested 50,000 levels deep,
links to the solution and to ``/etc/shadow``, a FIFO, a device, a file name that is not UTF-8;
kernel messages with lone surrogates and with the hidden tests' text; and correct answers in
unusual forms (``np.int64``, a copied cell, a cell cut short by the time limit).

A second, small run with ``--sandbox none`` replays two attacks without the sandbox and shows
they *do* work there: the tests can fail.
"""

from __future__ import annotations

import copy
import csv
import hashlib
import json
import os
import shutil
import socket
import stat
import subprocess
import sys
import threading
import uuid
from pathlib import Path

import nbformat
import psutil
import pytest

sys.path.insert(0, str(Path(__file__).parent / "grader_fixtures"))
import tiny  # noqa: E402

from prunekit.grade import sandbox  # noqa: E402
from prunekit.grade.generate import generate  # noqa: E402
from prunekit.grade.limits import Limits  # noqa: E402
from prunekit.grade.runner import run_notebook  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
CELL_TIMEOUT = 15  # generous: the test machine may be busy; loops cost this much each
MEMORY_MB = 1500
HAVE_BWRAP = shutil.which("bwrap") is not None
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
pytestmark = pytest.mark.skipif(not HAVE_BWRAP and not IN_CI,
                                reason="bubblewrap is not installed (make sandbox-deps); in CI this fails")

S = tiny.SOLUTIONS
WRONG = {"tiny-double": "def double(x):\n    return x + 1",
         "tiny-l1": "def l1_rows(w):\n    if w.dim() != 2:\n        raise ValueError('2-D')\n"
                    "    return w.detach().sum(dim=1)",  # sums, not L1 norms
         "tiny-answer": "answer = 44"}
MARK = "prunekit-survivor-" + uuid.uuid4().hex[:12]  # the surviving process's name, for the final scan


# ---------------------------------------------------------------- the attacks
def _read_solutions(ctx) -> str:
    """Read the solution by path, by a search of the file system and through git; run what it finds."""
    return f'''import glob, json, os, subprocess, time
MARKER = "sum(range(" + "10))"  # built at run time: this notebook must not match itself
texts = []

def _grab(path):
    if not os.path.isfile(path):  # a FIFO or a device named *.ipynb (this suite plants some) would block
        return
    try:
        with open(path, errors="replace") as f:
            text = f.read(2_000_000)
    except OSError:
        return
    if MARKER in text:
        texts.append(text)

for path in [{str(ctx["sol_file"])!r}, {str(REPO / "solutions" / "ex02_l1_norm.ipynb")!r}]:
    _grab(path)
try:
    import prunekit
    _grab(os.path.join(os.path.dirname(os.path.dirname(prunekit.__file__)), "solutions", "ex90_tiny.ipynb"))
except ImportError:
    pass
deadline = time.time() + 4
for top, dirs, files in os.walk("/"):
    if time.time() > deadline:
        break
    dirs[:] = [d for d in dirs if os.path.join(top, d) not in ("/proc", "/sys", "/dev")]
    for name in files:
        if name.endswith(".ipynb"):
            _grab(os.path.join(top, name))
for repo in ({str(ctx["root"])!r}, {str(REPO)!r}):
    try:
        shown = subprocess.run(["git", "-C", repo, "show", "HEAD:solutions/ex90_tiny.ipynb"],
                               capture_output=True, text=True, timeout=10).stdout
        if MARKER in shown:
            texts.append(shown)
    except (OSError, subprocess.SubprocessError):
        pass
for text in texts[:1]:
    for cell in json.loads(text)["cells"]:
        if cell["metadata"].get("nbgrader", {{}}).get("solution"):
            exec("".join(cell["source"]))
print("solutions found:", len(texts))
'''


def _network(ctx) -> str:
    """Ask a listener on the grading machine for the answer (loopback, then the host's address)."""
    targets = [("127.0.0.1", ctx["port"])] + [(ip, ctx["port"]) for ip in ctx["host_ips"]]
    return f'''import socket
answer = 0
for host, port in {targets!r}:
    try:
        with socket.create_connection((host, port), timeout=3) as conn:
            answer = int(conn.recv(16).decode())
    except (OSError, ValueError) as err:
        print("blocked:", host, err)
try:
    socket.create_connection(("1.1.1.1", 53), timeout=2).close()
    print("outbound: connected")
except OSError as err:
    print("outbound blocked:", err)
'''


def _survivor(ctx) -> str:
    """A double-forked, setsid daemon without the run's environment that, for 90 s, writes IPython
    startup files into every other run's folder, overwrites the reference cache and the gradebook."""
    sabotage = "import prunekit.grade as g\ng.record = lambda key, value, **kw: value\n"
    daemon = f'''import glob, os, time
end = time.time() + 90
while time.time() < end:
    for run in glob.glob("/tmp/prunekit-grade-*") + glob.glob("/tmp/*/prunekit-grade-*"):
        for sub in ("work/.ipython/profile_default/startup", "ipc", "outbox", ""):
            try:
                os.makedirs(os.path.join(run, sub), exist_ok=True)
                with open(os.path.join(run, sub, "00-sabotage.py"), "w") as f:
                    f.write({sabotage!r})
            except OSError:
                pass
    for target in glob.glob({str(ctx["cache"])!r} + "/*.json") + [{str(ctx["out"] / "grades.csv")!r}]:
        try:
            with open(target, "w") as f:
                f.write("poisoned")
        except OSError:
            pass
    time.sleep(0.3)
'''
    return f'''import os, sys, time
if os.fork() == 0:
    os.setsid()
    if os.fork() == 0:
        os.execve(sys.executable, [sys.executable, "-c", {daemon!r}, {MARK!r}], {{}})
    os._exit(0)
os.wait()
time.sleep(3)  # keep this kernel alive while the others start
''' + S["tiny-double"]


def _steal() -> str:
    """Find other kernels' connection files and, through them, break their answers."""
    return '''import glob, os, time
from ipykernel.connect import get_connection_file
from jupyter_client import BlockingKernelClient
own = os.path.realpath(get_connection_file())
broken = []
end = time.time() + 5
while time.time() < end:
    paths = set(glob.glob("/tmp/prunekit-grade-*/ipc/connection.json"))
    paths |= set(glob.glob("/tmp/**/kernel*.json", recursive=True))
    paths |= set(glob.glob(os.path.expanduser("~/.local/share/jupyter/runtime/*.json")))
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            argv = open(f"/proc/{pid}/cmdline").read().split("\\0")
        except OSError:
            continue
        if "-f" in argv[:-1]:
            paths.add(argv[argv.index("-f") + 1])
    for path in paths - {own} - set(broken):
        try:
            client = BlockingKernelClient()
            client.load_connection_file(path)
            client.start_channels()
            client.execute("import prunekit.grade as g\\ng.record = lambda key, value, **kw: value\\n"
                           "def double(x):\\n    return 0")
            broken.append(path)
        except Exception:
            pass
    time.sleep(0.5)
print("kernels reached:", broken)
'''


AST_STRIP = '''import ast


class _NoChecks(ast.NodeTransformer):
    def visit_Assert(self, node):
        return ast.Pass()

    def visit_Raise(self, node):
        return ast.Pass()


get_ipython().ast_transformers.append(_NoChecks())
''' + S["tiny-double"]

LIFT = '''import inspect, linecache, re


def double(x):
    """Read the calling test's source (history, stack, line cache) and answer from its literals."""
    sources = list(globals().get("In", []))[-3:] + list(globals().get("_ih", []))[-3:]
    for frame in inspect.stack():
        sources.append("".join(linecache.getlines(frame.filename)))
    table = {}
    for text in sources:
        for arg, value in re.findall(r"double\\((-?\\d+)\\)\\s*==\\s*(-?\\d+)", text):
            table[int(arg)] = int(value)
    return table.get(x, 0)
'''

LEAK = '''import linecache, sys


def double(x):
    """Read the running test's source (hidden part included) and send it out in an error message."""
    if {condition}:
        return 2 * x
    text = "".join(linecache.getlines(sys._getframe(1).f_code.co_filename))
    raise RuntimeError(text[text.find("HIDDEN"):][:290])
'''
# ipykernel cannot send a lone surrogate (its UTF-8 encoding fails in the kernel), but the kernel's own
# packer can: JSON with ASCII escapes carries "\\ud800" as six characters, and the grader's JSON decoder
# turns them back into a lone surrogate in the error's name, message and traceback.
SURROGATE_SENT = '''import json
from jupyter_client.session import json_default
get_ipython().kernel.session.pack = lambda obj: json.dumps(obj, default=json_default).encode()
raise RuntimeError("\\ud800 lone surrogate, sent as an escape")
'''
DEEP = '{"nbformat": 4, "nbformat_minor": 5, "metadata": {"x": ' + "[" * 50_000 + "]" * 50_000 + '}, "cells": []}'


def _copied_cell(solution: nbformat.NotebookNode) -> nbformat.NotebookNode:
    """Jupyter's copy-cell: the released stub of tiny-l1 stays, the answer is in a copy below it."""
    nb = tiny.with_solutions(solution, {})
    index = next(i for i, c in enumerate(nb.cells) if c.metadata.get("nbgrader", {}).get("grade_id") == "tiny-l1")
    stub = nbformat.v4.new_code_cell("def l1_rows(w):\n    # YOUR CODE HERE\n    raise NotImplementedError()",
                                     metadata=copy.deepcopy(nb.cells[index].metadata))
    nb.cells.insert(index, stub)
    return nb


RNG_HUNGRY = {
    "tiny-double": "import random\nimport torch\n\n\ndef double(x):\n    torch.rand(3)\n    random.random()\n"
                   "    return x + x",
    "tiny-l1": "def l1_rows(w):\n    torch.randn(17)  # draws from the global generator, as many solutions do\n"
               "    if w.ndim != 2:\n        raise ValueError('rows of a matrix, please')\n"
               "    return torch.linalg.vector_norm(w.detach(), ord=1, dim=1)",
    "tiny-answer": "torch.rand(100)\nanswer = 45",
}


def _submissions(ctx, solution, exercise, other_exercise) -> dict[str, object]:
    """name -> notebook (or raw text); sorted names interleave honest copies with the attacks."""
    tampered = tiny.with_solutions(solution, {"tiny-l1": WRONG["tiny-l1"], "test-l1": "pass"})
    tampered.cells = [c for c in tampered.cells
                      if c.metadata.get("nbgrader", {}).get("grade_id") not in ("test-double", "test-answer")]
    escape = (f"for target in [{str(ctx['sol_file'])!r}, '../escaped.txt', {str(ctx['out'] / 'grades.csv')!r}]:\n"
              "    try:\n        open(target, 'w').write('pwned')\n    except OSError:\n        pass\n"
              + S["tiny-double"])
    escape_missing = tiny.with_solutions(solution, {"tiny-double": escape})
    escape_missing.cells = [c for c in escape_missing.cells
                            if c.metadata.get("nbgrader", {}).get("grade_id") != "tiny-l1"]
    with_ = lambda nb, sources: tiny.with_solutions(nb, sources)  # noqa: E731
    return {
        "a1_survivor": with_(solution, {"tiny-double": _survivor(ctx)}),
        "a2_steal": with_(solution, {"tiny-l1": _steal() + WRONG["tiny-l1"]}),
        "a3_full": solution,
        "a4_read_solutions": with_(exercise, {"tiny-double": _read_solutions(ctx), "tiny-l1": "pass",
                                              "tiny-answer": "pass"}),
        "a5_network": with_(solution, {"tiny-answer": _network(ctx)}),
        "a6_full": solution,
        "a7_ast_strip": with_(solution, {"tiny-double": AST_STRIP, "tiny-l1": "def l1_rows(w):\n"
                                         "    return w.abs().sum(dim=-1)"}),
        "a8_lift": with_(solution, {"tiny-double": LIFT}),
        "a9_rng_hungry": with_(solution, RNG_HUNGRY),
        "b1_full": solution,
        "blank": exercise,
        "partial": tiny.with_solutions(exercise, {"tiny-double": S["tiny-double"]}),
        # double: infinite loop; l1: wrong, with torch.allclose patched to pass; answer: writes to the solutions
        "loop_patch_write": tiny.with_solutions(solution, {
            "tiny-double": "while True:\n    pass",
            "tiny-l1": "import torch\ntorch.allclose = lambda *a, **k: True\n" + WRONG["tiny-l1"],
            "tiny-answer": f"open({str(ctx['sol_file'])!r}, 'w').write('pwned')\nanswer = 45"}),
        "stubborn_loop": tiny.with_solutions(solution, {
            "tiny-l1": "import signal, time\nsignal.signal(signal.SIGINT, signal.SIG_IGN)\n"
                       "while True:\n    time.sleep(0.05)"}),
        "os_exit": tiny.with_solutions(solution, {"tiny-l1": "import os\nos._exit(0)"}),
        # double: sys.exit(); answer: memory bomb
        "exit_and_bomb": tiny.with_solutions(solution, {
            "tiny-double": "import sys\nsys.exit()",
            "tiny-answer": "x = []\nwhile True:\n    x.append(b'1' * (50 * 2**20))"}),
        # test-double and test-answer deleted (right code), test-l1 replaced by `pass` (wrong code)
        "tampered_tests": tampered,
        # double: writes outside its folder, swallowing the errors; the l1 solution cell deleted
        "escape_missing": escape_missing,
        "record_patch": tiny.with_solutions(solution, {
            "tiny-double": "import prunekit.grade\nrecord = prunekit.grade.record = lambda key, value, **kw: value\n"
                           "def double(x):\n    return 7 if x == 3 else 2 * x"}),
        "other_exercise": tiny.with_solutions(other_exercise, {"other-triple": "def triple(x):\n    return 3 * x"}),
        "invalid_json": "{ this is not a notebook",
        # read as root before any kernel runs: the batch must survive every one of these
        "c1_cells_are_strings": '{"nbformat": 4, "nbformat_minor": 5, "metadata": {}, "cells": ["x"]}',
        "c2_nested_50000": DEEP,
        # kernel-supplied text: a lone surrogate, and the hidden tests' own source
        "c3_surrogate": with_(solution, {"tiny-double": 'raise RuntimeError("\\ud800 lone surrogate")'}),
        "c3_surrogate_sent": with_(solution, {"tiny-double": SURROGATE_SENT}),
        "c4_leak_visible": with_(solution, {"tiny-double": LEAK.replace("{condition}", "False")}),
        "c4_leak_hidden": with_(solution, {"tiny-double": LEAK.replace("{condition}", "x != -1")}),
        # correct answers in unusual forms
        "c5_numpy_int": with_(solution, {"tiny-double": "import numpy as np\n\n\ndef double(x):\n"
                                                        "    return np.int64(2 * x)"}),
        "c6_copied_cell": _copied_cell(solution),
        "c7_cut_by_time_limit": with_(solution, {"tiny-answer": "answer = 45\nimport time\nwhile True:\n"
                                                                "    time.sleep(0.1)"}),
    }


def _plant_files(ctx) -> list[str]:
    """Entries of the submissions folder that are not regular files (and a name that is not UTF-8);
    returns the stems the gradebook must list."""
    subs = ctx["subs"]
    os.symlink(ctx["sol_file"], subs / "d1_link_to_solution.ipynb")
    os.symlink("/etc/shadow", subs / "d2_link_to_shadow.ipynb")
    os.mkfifo(subs / "d3_fifo.ipynb")  # opening it for reading would block the grader forever
    stems = ["d1_link_to_solution", "d2_link_to_shadow", "d3_fifo"]
    if os.geteuid() == 0:  # /dev/zero: reading it to the end never ends
        os.mknod(subs / "d4_device.ipynb", stat.S_IFCHR | 0o600, os.makedev(1, 5))
        stems.append("d4_device")
    (subs / os.fsdecode(b"d5_name_\xff.ipynb")).write_text(nbformat.writes(_read(ctx["sol_file"])))
    return stems + [os.fsdecode(b"d5_name_\xff")]


class _Listener:
    """A TCP server on all of this machine's addresses that hands out the right answer (45)."""

    def __init__(self):
        self.server = socket.create_server(("0.0.0.0", 0))
        self.port = self.server.getsockname()[1]
        self.connections: list = []
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self):
        while True:
            try:
                conn, peer = self.server.accept()
            except OSError:
                return
            self.connections.append(peer)
            conn.sendall(b"45")
            conn.close()

    def close(self):
        self.server.close()


def _host_ips() -> list[str]:
    return sorted({a.address for addrs in psutil.net_if_addrs().values() for a in addrs
                   if a.family == socket.AF_INET and not a.address.startswith("127.")})


@pytest.fixture(scope="module")
def reference_cache(tmp_path_factory) -> Path:
    """One cache of expected values for both runs (the key does not depend on the sandbox)."""
    return tmp_path_factory.mktemp("cache")


def _read(path: Path) -> nbformat.NotebookNode:
    return nbformat.read(path, as_version=4)


def _setup(root: Path, cache: Path) -> dict:
    """A grading folder (solutions in a git repository, exercises, out/, submissions/) and a
    listener for the network attack, open until :func:`_grade` is done."""
    solutions = tiny.write_solutions(root / "solutions")
    generate(solutions, root / "exercises")
    subprocess.run(["git", "init", "-q", str(root)], check=True)  # "through git" needs a repository
    subprocess.run(["git", "-C", str(root), "add", "solutions"], check=True)
    subprocess.run(["git", "-C", str(root), "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "s"],
                   check=True)
    out, subs = root / "out", root / "submissions"
    out.mkdir()
    subs.mkdir()
    listener = _Listener()
    return {"root": root, "solutions": solutions, "sol_file": solutions / "ex90_tiny.ipynb", "out": out,
            "subs": subs, "cache": cache, "host_ips": _host_ips(), "listener": listener, "port": listener.port}


def _write_submissions(ctx, submissions: dict[str, object]) -> None:
    for name, nb in submissions.items():
        (ctx["subs"] / f"{name}.ipynb").write_text(nb if isinstance(nb, str) else nbformat.writes(nb))


def _grade(ctx, *extra: str) -> subprocess.CompletedProcess:
    """Grade the submissions folder with the CLI; the listener closes when the run ends, so
    every connection it counted came from this run."""
    out = ctx["out"]
    cmd = [sys.executable, "-m", "prunekit.grade", str(ctx["subs"]), "--solutions", str(ctx["solutions"]),
           "--gradebook", str(out / "grades.csv"), "--feedback", str(out / "feedback"), "--json", str(out / "all.json"),
           "--cell-timeout", str(CELL_TIMEOUT), "--memory-mb", str(MEMORY_MB), "--cache-dir", str(ctx["cache"]), *extra]
    try:
        return subprocess.run(cmd, cwd=ctx["root"], capture_output=True, text=True, timeout=600,
                              env={**os.environ, "PYTHONPATH": str(REPO)})
    finally:
        ctx["listener"].close()


def _digests(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.glob("*.json"))}


@pytest.fixture(scope="module")
def graded(tmp_path_factory, reference_cache):
    ctx = _setup(tmp_path_factory.mktemp("grading"), reference_cache)
    exercises = ctx["root"] / "exercises"
    _write_submissions(ctx, _submissions(ctx, _read(ctx["sol_file"]), _read(exercises / "ex90_tiny.ipynb"),
                                         _read(exercises / "ex91_other.ipynb")))
    planted = _plant_files(ctx)
    before = hashlib.sha256(ctx["sol_file"].read_bytes()).hexdigest()
    refs = subprocess.run([sys.executable, "-m", "prunekit.grade.reference", "--solutions", str(ctx["solutions"]),
                           "--cache-dir", str(ctx["cache"]), "--sandbox", "bwrap"], capture_output=True, text=True,
                          timeout=300, env={**os.environ, "PYTHONPATH": str(REPO)})
    assert refs.returncode == 0, refs.stderr
    cached = _digests(ctx["cache"])
    done = _grade(ctx, "-j", "3", "--sandbox", "bwrap")
    assert done.returncode == 0, done.stderr
    results = json.loads((ctx["out"] / "all.json").read_text())
    rows = {r["submission"]: r for r in csv.DictReader(open(ctx["out"] / "grades.csv"))}
    survivors = [p.pid for p in psutil.process_iter(["cmdline"]) if MARK in (p.info["cmdline"] or [])]
    for pid in survivors:  # never leave one behind, even when the test fails
        psutil.Process(pid).kill()
    return dict(ctx, results=results, rows=rows, before=before, stdout=done.stdout, planted=planted,
                connections=ctx["listener"].connections, cached=cached, cached_after=_digests(ctx["cache"]),
                survivors=survivors)


def _tasks(graded, name) -> dict[str, dict]:
    return {t["grade_id"]: t for t in graded["results"][name]["tasks"]}


def _scores(graded, name) -> dict[str, float]:
    return {gid: t["score"] for gid, t in _tasks(graded, name).items()}


FULL = {"test-double": 2.0, "test-l1": 3.0, "test-answer": 1.0}


# ---------------------------------------------------------------- honest work
@pytest.mark.parametrize("name", ["a3_full", "a6_full", "b1_full"])
def test_honest_submissions_keep_full_marks_beside_the_attacks(graded, name):
    result = graded["results"][name]
    assert result == {"exercise": "ex90_tiny", "score": 6.0, "max_score": 6.0, "tasks": [
        {"grade_id": "test-double", "score": 2.0, "max_score": 2.0, "passed": True, "message": "passed"},
        {"grade_id": "test-l1", "score": 3.0, "max_score": 3.0, "passed": True, "message": "passed"},
        {"grade_id": "test-answer", "score": 1.0, "max_score": 1.0, "passed": True, "message": "passed"}]}


def test_answers_that_draw_random_numbers_keep_full_marks(graded):
    """The hidden l1 test draws from the global generator after the student's calls; the grader's
    reseeds make that independent of how many random numbers the student's code used."""
    assert _scores(graded, "a9_rng_hungry") == FULL


def test_unmodified_exercise_gets_zero_everywhere(graded):
    tasks = _tasks(graded, "blank")
    assert [t["score"] for t in tasks.values()] == [0.0, 0.0, 0.0]
    assert {t["message"] for t in tasks.values()} == {"NotImplementedError: task not attempted"}


def test_partial_submission_gets_exactly_its_tasks(graded):
    assert _scores(graded, "partial") == {"test-double": 2.0, "test-l1": 0.0, "test-answer": 0.0}


# ---------------------------------------------------------------- the sandbox: solutions, network, other runs
def test_solutions_cannot_be_read_by_path_search_or_git(graded):
    assert _scores(graded, "a4_read_solutions") == {"test-double": 0.0, "test-l1": 0.0, "test-answer": 0.0}


def test_no_connection_reaches_a_listener_on_loopback_or_the_host(graded):
    assert graded["connections"] == []
    assert _scores(graded, "a5_network") == {"test-double": 2.0, "test-l1": 3.0, "test-answer": 0.0}


def test_a_background_process_dies_with_its_run_and_sabotages_nobody(graded):
    assert graded["survivors"] == []
    assert _scores(graded, "a1_survivor")["test-double"] == 2.0  # its own code is right
    assert graded["cached_after"] == graded["cached"] != {}  # reference cache untouched
    assert "poisoned" not in (graded["out"] / "grades.csv").read_text()


def test_other_kernels_cannot_be_reached_through_their_connection_files(graded):
    assert _scores(graded, "a2_steal") == {"test-double": 2.0, "test-l1": 0.0, "test-answer": 1.0}


def test_writes_outside_the_box_are_blocked(graded):
    assert hashlib.sha256(graded["sol_file"].read_bytes()).hexdigest() == graded["before"]
    assert not (graded["root"] / "escaped.txt").exists()
    assert "pwned" not in (graded["out"] / "grades.csv").read_text()
    assert _tasks(graded, "escape_missing")["test-double"]["passed"]  # the writes failed; its code is right
    answer = _tasks(graded, "loop_patch_write")["test-answer"]
    assert answer["score"] == 0.0 and "FileNotFoundError" in answer["message"]  # no such path in the box


# ---------------------------------------------------------------- forging checks inside the kernel
def test_stripping_asserts_with_an_ast_transformer_wins_nothing(graded):
    tasks = _tasks(graded, "a7_ast_strip")
    assert _scores(graded, "a7_ast_strip") == {"test-double": 2.0, "test-l1": 0.0, "test-answer": 1.0}
    assert tasks["test-l1"]["message"] == "value of 'l1_checks' differs from the expected result"


def test_literals_lifted_from_the_hidden_test_win_nothing(graded):
    task = _tasks(graded, "a8_lift")["test-double"]
    # both literal asserts passed (the lift worked, the hidden one included); the records did not
    assert task == {"grade_id": "test-double", "score": 0.0, "max_score": 2.0, "passed": False,
                    "message": "value of 'double_3' differs from the expected result"}
    assert _scores(graded, "a8_lift")["test-l1"] == 3.0


def test_patching_torch_allclose_cannot_forge_values(graded):
    tasks = _tasks(graded, "loop_patch_write")  # its asserts pass (allclose says yes) ...
    assert tasks["test-l1"] == {"grade_id": "test-l1", "score": 0.0, "max_score": 3.0, "passed": False,
                                "message": "value of 'l1_visible' differs from the expected result"}


def test_patching_record_cannot_forge_values(graded):
    tasks = _tasks(graded, "record_patch")
    assert tasks["test-double"]["score"] == 0.0
    assert "was not recorded" in tasks["test-double"]["message"]


# ---------------------------------------------------------------- limits and broken notebooks
def test_infinite_loop_is_interrupted_and_other_tasks_still_count(graded):
    tasks = _tasks(graded, "loop_patch_write")
    assert f"timed out after {CELL_TIMEOUT} s" in tasks["test-double"]["message"]
    assert tasks["test-double"]["score"] == 0.0


def test_loop_that_ignores_interrupts_gets_the_kernel_killed(graded):
    tasks = _tasks(graded, "stubborn_loop")
    assert _scores(graded, "stubborn_loop") == {"test-double": 2.0, "test-l1": 0.0, "test-answer": 0.0}
    assert "timed out" in tasks["test-l1"]["message"]
    assert tasks["test-answer"]["message"].startswith("not run:")


def test_os_exit_kills_the_kernel_and_the_rest_is_zero_with_a_reason(graded):
    tasks = _tasks(graded, "os_exit")
    assert _scores(graded, "os_exit") == {"test-double": 2.0, "test-l1": 0.0, "test-answer": 0.0}
    assert "kernel died" in tasks["test-l1"]["message"]
    assert "kernel died" in tasks["test-answer"]["message"]


def test_sys_exit_and_memory_bomb_fail_only_their_tasks(graded):
    tasks = _tasks(graded, "exit_and_bomb")
    assert _scores(graded, "exit_and_bomb") == {"test-double": 0.0, "test-l1": 3.0, "test-answer": 0.0}
    assert "SystemExit" in tasks["test-double"]["message"]
    assert "MemoryError" in tasks["test-answer"]["message"] or "memory limit" in tasks["test-answer"]["message"]


def test_deleted_and_edited_test_cells_do_not_matter(graded):
    tasks = _tasks(graded, "tampered_tests")
    assert _scores(graded, "tampered_tests") == {"test-double": 2.0, "test-l1": 0.0, "test-answer": 1.0}
    assert "wrong L1 norms" in tasks["test-l1"]["message"]  # the instructor's assert ran, not `pass`


def test_missing_solution_cell_means_task_not_attempted(graded):
    tasks = _tasks(graded, "escape_missing")
    assert _scores(graded, "escape_missing") == {"test-double": 2.0, "test-l1": 0.0, "test-answer": 1.0}
    assert "missing" in tasks["test-l1"]["message"]


def test_notebook_of_another_exercise_is_graded_against_that_exercise(graded):
    result = graded["results"]["other_exercise"]
    assert (result["exercise"], result["score"], result["max_score"]) == ("ex91_other", 1.0, 1.0)
    assert graded["rows"]["other_exercise"]["test-double"] == ""  # never credited with ex90 tasks


def test_invalid_json_is_a_zero_row_with_its_reason(graded):
    row = graded["rows"]["invalid_json"]
    assert (row["total"], row["max_score"]) == ("0", "0")
    assert "not a readable notebook" in row["error"]


def test_gradebook_and_feedback_cover_every_submission(graded):
    rows = graded["rows"]
    assert len(rows) == len(graded["results"]) == 30 + len(graded["planted"])
    assert rows["partial"]["test-double"] == "2" and rows["partial"]["total"] == "2"
    feedback = (graded["out"] / "feedback" / "exit_and_bomb.md").read_text()
    assert "**Score: 3 / 6**" in feedback and "SystemExit" in feedback
    assert "Traceback" not in feedback
    assert "not run" not in (graded["out"] / "feedback" / "a3_full.md").read_text()  # no false "added cells" note


# ---------------------------------------------------------------- what the grader reads and writes itself
@pytest.mark.parametrize("name, reason", [
    ("c1_cells_are_strings", "not a valid notebook (ValidationError)"),
    ("c2_nested_50000", "nests deeper than 64 levels"),
    ("d1_link_to_solution", "is a symbolic link, not a file"),
    ("d2_link_to_shadow", "is a symbolic link, not a file"),
    ("d3_fifo", "is a FIFO, not a regular file"),
    ("d4_device", "is a device or socket, not a regular file"),
])
def test_what_is_not_a_notebook_is_its_own_zero_row_with_a_reason(graded, name, reason):
    """Each of these once stopped the whole batch (a traceback, a hang, memory exhausted) or scored
    the linked solution 6/6; now it is one row, read or refused before a kernel starts."""
    if name not in graded["rows"]:
        pytest.skip("a device node needs root")
    row = graded["rows"][name]
    assert (row["total"], row["max_score"]) == ("0", "0") and reason in row["error"], row
    assert (graded["out"] / "feedback" / f"{name}.md").exists()


def test_no_line_of_a_linked_file_reaches_the_gradebook(graded):
    gradebook = (graded["out"] / "grades.csv").read_text()
    assert "root:" not in gradebook and "daemon:" not in gradebook


def test_text_that_is_not_utf8_cannot_stop_the_batch(graded):
    """A file name with an undecodable byte and a kernel error with a lone surrogate: both end up
    escaped in the gradebook, the JSON and the feedback instead of ending the run."""
    weird = graded["planted"][-1]
    assert graded["results"][weird]["score"] == 6.0  # the solution, under a name that is not UTF-8
    assert graded["rows"]["d5_name_\\xff"]["total"] == "6"
    assert (graded["out"] / "feedback" / f"{weird}.md").exists()
    message = _tasks(graded, "c3_surrogate")["test-double"]["message"]
    assert message.startswith("UnicodeEncodeError") or "\\ud800" in message
    assert _scores(graded, "c3_surrogate") == {"test-double": 0.0, "test-l1": 3.0, "test-answer": 1.0}
    sent = _tasks(graded, "c3_surrogate_sent")["test-double"]  # a real lone surrogate reached the grader
    assert sent["message"].startswith("RuntimeError: \\ud800 lone surrogate"), sent["message"]
    assert _scores(graded, "c3_surrogate_sent") == {"test-double": 0.0, "test-l1": 3.0, "test-answer": 1.0}


def test_feedback_never_quotes_a_hidden_test(graded):
    """The student's function read the running test's source and raised it as its error message:
    from a hidden line only the exception's type is shown, from a visible one the message is withheld."""
    hidden = _tasks(graded, "c4_leak_hidden")["test-double"]
    visible = _tasks(graded, "c4_leak_visible")["test-double"]
    assert hidden["score"] == visible["score"] == 0.0
    assert hidden["message"] == "RuntimeError (in a hidden test)"
    assert visible["message"].startswith("RuntimeError: (message withheld: it quotes a hidden test)")
    written = (graded["out"] / "all.json").read_text() + (graded["out"] / "grades.csv").read_text() + "".join(
        p.read_text() for p in (graded["out"] / "feedback").glob("*.md"))
    assert "assert double(-1) == -2" not in written


def test_a_numpy_integer_is_the_number_it_holds(graded):
    assert _scores(graded, "c5_numpy_int") == FULL


def test_a_copied_cell_is_graded_by_the_copy_the_student_changed(graded):
    assert _scores(graded, "c6_copied_cell") == FULL
    assert any("2 cells with grade_id 'tiny-l1'" in n for n in graded["results"]["c6_copied_cell"]["notes"])


def test_a_cell_cut_by_the_time_limit_is_reported_even_when_its_task_passes(graded):
    task = _tasks(graded, "c7_cut_by_time_limit")["test-answer"]
    assert task["passed"] and f"'tiny-answer' was stopped at the time limit (timed out after {CELL_TIMEOUT} s)" \
        in task["message"]


# ---------------------------------------------------------------- the control: the same attacks, no sandbox
@pytest.fixture(scope="module")
def unboxed(tmp_path_factory, reference_cache):
    ctx = _setup(tmp_path_factory.mktemp("unboxed"), reference_cache)
    exercise = _read(ctx["root"] / "exercises" / "ex90_tiny.ipynb")
    _write_submissions(ctx, {
        "read_solutions": tiny.with_solutions(exercise, {"tiny-double": _read_solutions(ctx), "tiny-l1": "pass",
                                                         "tiny-answer": "pass"}),
        "network": tiny.with_solutions(_read(ctx["sol_file"]), {"tiny-answer": _network(ctx)})})
    done = _grade(ctx, "-j", "2", "--sandbox", "none")
    assert done.returncode == 0, done.stderr
    return dict(ctx, results=json.loads((ctx["out"] / "all.json").read_text()), connections=ctx["listener"].connections)


def test_without_the_sandbox_the_same_attacks_succeed(unboxed):
    """The control experiment: the attacks above are real, so their tests can fail."""
    assert unboxed["results"]["read_solutions"]["score"] == 6.0
    assert unboxed["results"]["network"]["score"] == 6.0 and unboxed["connections"]


# ---------------------------------------------------------------- the runner alone
def test_memory_watchdog_kills_a_kernel_without_rlimit():
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(s) for s in
                ("x = []\nwhile True:\n    x.append(b'1' * (20 * 2**20))", "print('after')")]
    runs = run_notebook(nb, Limits(cell_timeout=30, memory_mb=400, rlimit=False))
    assert [r.status for r in runs] == ["memory", "not_run"]
    assert "memory limit exceeded" in runs[0].detail


def test_the_box_shows_only_the_interpreter_and_the_installed_copy():
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(
        "import os, sys, prunekit\n"
        "print(sorted(os.listdir('/')), sorted(os.listdir('/opt')), os.listdir('/opt/prunekit'))\n"
        "print(prunekit.__file__, os.getuid(), os.getpid())\n"
        f"print([os.path.exists(p) for p in ({str(REPO)!r}, {str(REPO / 'solutions')!r}, {str(REPO / '.git')!r})])")]
    box = sandbox.resolve("bwrap")
    (run,) = run_notebook(nb, Limits(cell_timeout=60, sandbox=box))
    assert run.status == "ok", run.evalue
    lines = nb.cells[0].outputs[0]["text"].splitlines()
    assert lines[0].startswith("['bin', 'dev', 'etc', 'home',") and "work" not in lines[0]
    assert lines[0].endswith("['prunekit', 'venv'] ['prunekit']")
    path, uid, pid = lines[1].split()
    assert path == "/opt/prunekit/prunekit/__init__.py" and int(pid) < 10  # its own PID namespace
    assert (int(uid) != 0) and (int(uid) >= sandbox.UID_BASE or os.geteuid() != 0)
    assert lines[2] == "[False, False, False]"  # no repository, no solutions/, no .git
