"""Run notebooks under other CPU kernels and a busy core; print how far each claim moved.

The lectures check their prose with bands (``prunekit.claims``). A band must be wider than the
spread between machines, and that spread is measured here, on one machine, by making PyTorch take
other code paths:

* ``native``      -- this CPU's best kernels (``torch.backends.cpu.get_cpu_capability()``);
* ``avx2``        -- ``ATEN_CPU_CAPABILITY=avx2``: ATen's AVX2 kernels (an AMD EPYC, an older Intel);
* ``default``     -- ``ATEN_CPU_CAPABILITY=default``: ATen's scalar kernels (a CPU without AVX);
* ``dnnl-avx2``   -- oneDNN's convolutions capped at AVX2 (``DNNL_MAX_CPU_ISA=AVX2``);
* ``portable``    -- ``default`` and ``dnnl-avx2`` together (what ``make test`` runs as its
  portability check);
* ``busy``        -- native kernels with a second process spinning on the other core (timings).

(MKL's ``MKL_ENABLE_INSTRUCTIONS`` was tried too: on this course's runs it changed no result.)

Every claim a notebook checks is logged (``PRUNEKIT_CLAIMS_LOG``); the report lists each claim's
stated band and the values seen per variant, and the nbval-compared cells whose output changed::

    python benchmarks/portability.py notebooks/02_l1_norm_channel_pruning.ipynb --variants native,default
    python benchmarks/portability.py --variants busy --runs 10 notebooks/01b_nm_sparsity.ipynb

Executed copies and logs go to ``--out`` (default: a temporary folder).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from collections import defaultdict
from pathlib import Path

import nbformat

sys.path.insert(0, str(Path(__file__).resolve().parent))
from run_lectures import ROOT, run_notebook  # noqa: E402

VARIANTS = {
    "native": {},
    "avx2": {"ATEN_CPU_CAPABILITY": "avx2"},
    "default": {"ATEN_CPU_CAPABILITY": "default"},
    "dnnl-avx2": {"DNNL_MAX_CPU_ISA": "AVX2"},
    "portable": {"ATEN_CPU_CAPABILITY": "default", "DNNL_MAX_CPU_ISA": "AVX2"},
    "busy": {},
}
SPIN = "while True: pass"


def run_variant(path: Path, variant: str, run: int, out: Path, timeout: int) -> dict:
    """Execute ``path`` once under ``variant``; returns its time, error and claim log."""
    folder = out / f"{variant}-{run}"
    folder.mkdir(parents=True, exist_ok=True)
    log = folder / f"{path.stem}.claims.jsonl"
    log.unlink(missing_ok=True)
    saved = dict(os.environ)
    os.environ.update(VARIANTS[variant], PRUNEKIT_CLAIMS="report", PRUNEKIT_CLAIMS_LOG=str(log),
                      PRUNEKIT_DEVICE="cpu", PRUNEKIT_PROGRESS="0")
    spinner = subprocess.Popen([sys.executable, "-c", SPIN]) if variant == "busy" else None
    try:
        seconds, error = run_notebook(path, timeout, folder)
    finally:
        if spinner:
            spinner.kill()
        os.environ.clear()
        os.environ.update(saved)
    claims = [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []
    return {"notebook": path.name, "variant": variant, "run": run, "seconds": seconds,
            "error": error, "claims": claims, "executed": str(folder / path.name)}


def checked_outputs(path: Path) -> dict[int, str]:
    """The text of every ``# NBVAL_CHECK_OUTPUT`` cell's outputs, as nbval compares it."""
    cells = nbformat.read(path, as_version=4).cells
    texts = {}
    for i, cell in enumerate(cells):
        if cell.cell_type == "code" and "NBVAL_CHECK_OUTPUT" in cell.source:
            texts[i] = "".join(o.get("text", "") if o.output_type == "stream"
                               else o.get("data", {}).get("text/plain", "") for o in cell.outputs)
    return texts


def report(results: list[dict]) -> int:
    """Print run times, the claim table and changed nbval outputs; returns the number of problems."""
    problems = 0
    print(f"\n{'notebook':<42}{'variant':<11}{'run':>4}{'seconds':>9}  error")
    for r in results:
        problems += bool(r["error"])
        print(f"{r['notebook']:<42}{r['variant']:<11}{r['run']:>4}{r['seconds']:>9.1f}  {r['error']}")
    seen: dict[tuple[str, str], list] = defaultdict(list)
    for r in results:
        for c in r["claims"]:
            seen[(r["notebook"], c["name"])].append((r["variant"], c))
    print(f"\n{'notebook':<28}{'claim':<48}{'stated':<26}values per variant (! = outside)")
    for (nb, name), rows in seen.items():
        stated = rows[0][1]["stated"]
        values = ", ".join(f"{v}:{c['measured']}{'' if c['holds'] or not c['applies'] else '!'}"
                           for v, c in rows)
        problems += sum(c["applies"] and not c["holds"] for _, c in rows)
        print(f"{nb[:27]:<28}{name[:47]:<48}{stated[:25]:<26}{values}")
    for r in results:
        committed, executed = checked_outputs(ROOT / _source(r)), checked_outputs(Path(r["executed"]))
        for i, text in committed.items():
            if executed.get(i) != text:
                problems += 1
                print(f"\nnbval-checked output changed: {r['notebook']} cell {i} ({r['variant']})\n"
                      f"  committed: {text[:300]!r}\n  this run:  {executed.get(i, '')[:300]!r}")
    return problems


def _source(result: dict) -> str:
    folder = "solutions" if result["notebook"].startswith("ex") else "notebooks"
    return f"{folder}/{result['notebook']}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("notebooks", nargs="*", type=Path)
    parser.add_argument("--variants", default="native,avx2,default,dnnl-avx2")
    parser.add_argument("--runs", type=int, default=1, help="runs per variant (timing claims: 10)")
    parser.add_argument("--timeout", type=int, default=600, help="seconds per cell")
    parser.add_argument("--out", type=Path, default=None, help="folder for executed copies and logs")
    parser.add_argument("--json", type=Path, default=None, help="write all results to this file")
    args = parser.parse_args(argv)
    notebooks = args.notebooks or sorted((ROOT / "notebooks").glob("*.ipynb"))
    out = args.out or Path(tempfile.mkdtemp(prefix="portability-"))
    results = []
    for variant in args.variants.split(","):
        for run in range(args.runs):
            for path in notebooks:
                results.append(run_variant(path.resolve(), variant, run, out, args.timeout))
                print(f"{path.name} {variant} #{run}: {results[-1]['seconds']:.0f} s "
                      f"{results[-1]['error'] or 'ok'}", flush=True)
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))
    problems = report(results)
    print(f"\n{problems} problem(s); executed copies in {out}")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
