"""Drive a JupyterLab page the way a student would, and report what went wrong.

Everything the student *does* (open a notebook, run cells, move a slider) goes through the
browser. To know *when* something finished, the page is asked directly: the server starts
JupyterLab with ``expose_app_in_browser`` so ``window.jupyterapp`` is the running application,
and the notebook model says which cells ran and what they printed. What the student *sees*
(tracebacks, a widget that failed to render, a readout, a figure) is read from the DOM.

Check functions return a list of problems (plain sentences) instead of asserting, so a test
can demand an empty list on the real course and a non-empty one on a deliberately broken copy.
"""

from __future__ import annotations

import itertools
import re
import time
from pathlib import Path

from playwright.sync_api import Error as PlaywrightError
from playwright.sync_api import Page

#: A line a student would read as "this cell crashed".
ERROR_TEXT = re.compile(r"Traceback|^\s*\w*(Error|Exception)\b.*:", re.MULTILINE)
WIDGET_FAILED = ("Error displaying widget", "Failed to load model class", "Loading widget...")

_workspace_numbers = itertools.count(1)

# --- opening and running ---------------------------------------------------------------------

_WAIT_NOTEBOOK_JS = """
async ([path, timeoutMs]) => {
  const t0 = Date.now();
  const sleep = ms => new Promise(r => setTimeout(r, ms));
  while (Date.now() - t0 < timeoutMs) {
    const app = window.jupyterapp;
    const panel = app && app.shell && app.shell.currentWidget;
    if (panel && panel.context && panel.context.path === path && panel.content
        && panel.sessionContext) {
      await panel.context.ready;
      await panel.sessionContext.ready;
      const kernel = panel.sessionContext.session && panel.sessionContext.session.kernel;
      if (kernel && kernel.connectionStatus === 'connected' && kernel.status === 'idle') {
        return true;
      }
    }
    await sleep(200);
  }
  return false;
}
"""


def open_notebook(page: Page, base_url: str, token: str, path: str,
                  timeout_s: float = 90) -> None:
    """Open ``path`` in a fresh JupyterLab workspace; return when its kernel is idle.

    A fresh workspace per notebook keeps layouts from earlier tests from being restored.
    """
    workspace = f"e2e{next(_workspace_numbers)}"
    page.goto(f"{base_url}/lab/workspaces/{workspace}/tree/{path}?token={token}",
              wait_until="domcontentloaded", timeout=timeout_s * 1000)
    ready = page.evaluate(_WAIT_NOTEBOOK_JS, [path, timeout_s * 1000])
    if not ready:
        raise TimeoutError(f"{path}: notebook or its kernel not ready after {timeout_s} s")


_RUN_JS = """
async ([command, indices, timeoutMs]) => {
  // Returns the kernel status at the end: 'idle' unless the time ran out.
  const app = window.jupyterapp;
  const panel = app.shell.currentWidget;
  const notebook = panel.content;
  const withTimeout = p => Promise.race([p, new Promise((_, reject) =>
      setTimeout(() => reject(new Error('timed out after ' + timeoutMs + ' ms')), timeoutMs))]);
  if (indices === null) {
    await withTimeout(app.commands.execute(command));
  } else {
    for (const i of indices) {
      notebook.activeCellIndex = i;
      notebook.deselectAll();
      await withTimeout(app.commands.execute('notebook:run-cell'));
    }
  }
  // The commands resolve when the replies arrive; outputs may still be flushing.
  const t0 = Date.now();
  const kernel = panel.sessionContext.session.kernel;
  while (kernel.status !== 'idle' && Date.now() - t0 < timeoutMs) {
    await new Promise(r => setTimeout(r, 100));
  }
  return kernel.status;
}
"""


def _run(page: Page, command: str, indices: list[int] | None, timeout_s: float) -> None:
    try:
        status = page.evaluate(_RUN_JS, [command, indices, timeout_s * 1000])
    except PlaywrightError as error:
        raise TimeoutError(f"{command} did not finish within {timeout_s:.0f} s: {error}") from None
    if status != "idle":
        raise TimeoutError(f"{command}: kernel still {status!r} after {timeout_s:.0f} s")


def run_all(page: Page, timeout_s: float = 150) -> None:
    """Run > Run All Cells, and wait until the kernel is idle again."""
    _run(page, "notebook:run-all-cells", None, timeout_s)


def run_cells(page: Page, indices: list[int], timeout_s: float = 120) -> None:
    """Select and run each cell in ``indices`` in turn (Shift+Enter without moving on)."""
    _run(page, "notebook:run-cell", indices, timeout_s)


def shutdown_kernel(page: Page) -> None:
    """Shut the current notebook's kernel down (frees a CPU for the next test)."""
    try:
        page.evaluate("() => window.jupyterapp.shell.currentWidget.sessionContext.shutdown()")
    except PlaywrightError:
        pass  # the page is gone; the server's shutdown will take the kernel with it


# --- reading the notebook --------------------------------------------------------------------

_CELLS_JS = """
() => {
  const notebook = window.jupyterapp.shell.currentWidget.content;
  const cells = [];
  for (let i = 0; i < notebook.model.cells.length; i++) {
    const model = notebook.model.cells.get(i);
    const cell = {index: i, type: model.type, source: model.sharedModel.getSource(),
                  metadata: model.sharedModel.getMetadata(), executionCount: null,
                  outputs: []};
    if (model.type === 'code') {
      cell.executionCount = model.executionCount;
      for (let j = 0; j < model.outputs.length; j++) cell.outputs.push(model.outputs.get(j).toJSON());
    }
    cells.push(cell);
  }
  return cells;
}
"""


def notebook_cells(page: Page) -> list[dict]:
    """The open notebook's cells as the front end holds them (source, count, outputs)."""
    return page.evaluate(_CELLS_JS)


def cell_locator(page: Page, index: int):
    return page.locator(".jp-NotebookPanel:visible .jp-Notebook .jp-Cell").nth(index)


def scroll_to_output(page: Page, index: int) -> None:
    """Scroll so the output of cell ``index`` (or the cell, if it printed nothing) is on screen."""
    cell = cell_locator(page, index)
    output = cell.locator(".jp-OutputArea-output").last
    target = output if output.count() else cell
    target.evaluate("el => el.scrollIntoView({block: 'center'})")
    page.wait_for_timeout(200)


def visible_errors(page: Page, index: int) -> list[str]:
    """Tracebacks and failed widgets a student would see under cell ``index``."""
    cell = cell_locator(page, index)
    found = []
    for text in cell.locator(
            '.jp-OutputArea-output[data-mime-type="application/vnd.jupyter.stderr"]').all_inner_texts():
        if ERROR_TEXT.search(text):
            found.append(text.strip()[-600:])
    for text in cell.locator(".jp-OutputArea-output").all_inner_texts():
        found += [f"widget did not render: {marker!r}" for marker in WIDGET_FAILED if marker in text]
    return found


def notebook_problems(page: Page, path: str) -> list[str]:
    """Every error a student would meet after Run All: unrun cells, error outputs, tracebacks."""
    problems = []
    for cell in notebook_cells(page):
        if cell["type"] != "code" or not cell["source"].strip():
            continue
        where = f"{path} cell {cell['index']} ({cell['source'].strip().splitlines()[0][:60]!r})"
        if cell["executionCount"] is None:
            problems.append(f"{where}: did not run")
        for output in cell["outputs"]:
            if output.get("output_type") == "error":
                problems.append(f"{where}: {output.get('ename')}: {output.get('evalue')}")
        problems += [f"{where}: visible error: {text}" for text in visible_errors(page, cell["index"])]
    return problems


# --- the sparsity widget ---------------------------------------------------------------------

SLIDER = ".pk-sparsity-slider"
READOUT = ".pk-readout"
FIGURE = ".pk-figure"


def _figure_sources(page: Page) -> list[str]:
    return page.locator(f"{FIGURE} img").evaluate_all("imgs => imgs.map(i => i.src)")


def _wait_for(predicate, timeout_s: float, poll_s: float = 0.25) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(poll_s)
    return predicate()


def kernel_status(page: Page) -> str:
    return page.evaluate(
        "() => window.jupyterapp.shell.currentWidget.sessionContext.session.kernel.status")


def _wait_for_change(page: Page, changed, timeout_s: float, settle_s: float = 2.0) -> bool:
    """Wait until ``changed()``; give up early once the kernel has been idle for ``settle_s``.

    A working callback updates the readout before its kernel goes idle, so an idle kernel and
    an unchanged readout mean the callback finished without updating it (it failed).
    """
    start = time.monotonic()
    idle_since = None
    while time.monotonic() - start < timeout_s:
        if changed():
            return True
        now = time.monotonic()
        if kernel_status(page) == "idle":
            idle_since = idle_since or now
            if now - idle_since >= settle_s and now - start >= settle_s:
                return changed()
        else:
            idle_since = None
        time.sleep(0.2)
    return changed()


def sparsity_widget_problems(page: Page, shot, timeout_s: float = 45) -> list[str]:
    """Move the sparsity slider with the keyboard; the readout and the figure must follow.

    ``shot(name)`` saves a screenshot. The readout must name the accuracy and the MACs both
    before and after, and both the text and the picture must change.
    """
    if page.locator(SLIDER).count() == 0:
        return [f"no {SLIDER} widget on the page (did the widget cell run and render?)"]
    slider = page.locator(SLIDER).first
    handle = slider.locator(".noUi-handle")
    readout = page.locator(READOUT).first
    if handle.count() != 1 or readout.count() != 1:
        return [f"slider handle ({handle.count()}) or {READOUT} ({readout.count()}) missing"]
    slider.scroll_into_view_if_needed()
    before_text, before_figure = readout.inner_text(), _figure_sources(page)
    shot("slider-before")
    problems = [f"readout does not mention {word!r}: {before_text!r}"
                for word in ("accuracy", "MACs") if word not in before_text]
    if not before_figure:
        problems.append(f"no figure (img) inside {FIGURE} before moving the slider")
    before_value = slider.locator(".widget-readout").inner_text()
    handle.focus()
    for key in ("PageUp", "PageDown"):  # noUiSlider: one big step, one 'change' event;
        page.keyboard.press(key)        # down instead if the slider starts at its maximum
        after_value = slider.locator(".widget-readout").inner_text()
        if after_value != before_value:
            break
    else:
        return problems + [f"the slider did not move from {before_value!r} (keyboard ignored)"]
    moved_at = time.monotonic()
    changed = _wait_for_change(page, lambda: readout.inner_text() != before_text, timeout_s)
    print(f"slider {before_value} -> {after_value}: readout "
          + (f"changed after {time.monotonic() - moved_at:.1f} s" if changed else "did not change"))
    if not changed:
        problems.append(f"readout did not change after moving the slider "
                        f"{before_value} -> {after_value}: {before_text!r}")
    else:
        after_text = readout.inner_text()
        problems += [f"readout after the move does not mention {word!r}: {after_text!r}"
                     for word in ("accuracy", "MACs") if word not in after_text]
        if not _wait_for(lambda: _figure_sources(page) not in ([], before_figure), timeout_s / 3):
            problems.append("the figure did not change after moving the slider")
    page.wait_for_timeout(300)  # let the new image paint before the screenshot
    shot("slider-after")
    problems += [f"after moving the slider: {text}" for text in _widget_errors(page)]
    return problems


def _widget_errors(page: Page) -> list[str]:
    """Tracebacks that a callback printed into the figure's Output area."""
    texts = page.locator(f"{FIGURE} .jp-OutputArea-output").all_inner_texts()
    return [text.strip()[-600:] for text in texts if ERROR_TEXT.search(text)]


def lecture_problems(page: Page, path: str, shot) -> list[str]:
    """The check for a lecture notebook that has been run: no visible error, working slider,
    and the live widget in place of the stand-in."""
    stale = page.locator(f"{STANDIN}:visible").count()
    problems = [f"{stale} stand-in(s) still shown after the cells ran"] if stale else []
    return notebook_problems(page, path) + problems + sparsity_widget_problems(page, shot)


# --- before running: the stand-in -----------------------------------------------------------

STANDIN = ".pk-standin"
#: The start of a widget's Python repr (ipywidgets' text/plain), which a reader must never see.
WIDGET_REPR = re.compile(r"\b(VBox|HBox)\(")

_WIDGET_OUTPUTS_JS = """
() => {
  const notebook = window.jupyterapp.shell.currentWidget.content;
  const found = [];
  for (let i = 0; i < notebook.model.cells.length; i++) {
    const model = notebook.model.cells.get(i);
    if (model.type !== 'code') continue;
    for (let j = 0; j < model.outputs.length; j++) {
      const output = model.outputs.get(j);
      if ('application/vnd.jupyter.widget-view+json' in output.data) {
        found.push({cell: i, output: j, trusted: output.trusted, mimeTypes: Object.keys(output.data)});
      }
    }
  }
  return found;
}
"""


def _standin_problems(page: Page, found: dict, message: str) -> list[str]:
    """One saved widget output, as JupyterLab rendered it without a kernel."""
    where = f"cell {found['cell']} (saved widget output, bundle {found['mimeTypes']})"
    if found["trusted"]:
        return [f"{where} is trusted: this check needs the notebook as a fresh clone has it"]
    output = cell_locator(page, found["cell"]).locator(".jp-OutputArea-output").nth(found["output"])
    chosen = output.get_attribute("data-mime-type")
    text = output.inner_text()
    problems = [] if chosen == "text/html" else [f"{where} rendered as {chosen!r}, not the text/html stand-in"]
    if message not in text:
        problems.append(f"{where} does not say {message!r}: {text[:200]!r}")
    standin = output.locator(STANDIN)
    if standin.count() != 1 or not standin.is_visible():
        problems.append(f"{where}: no visible {STANDIN}")
        return problems
    standin.scroll_into_view_if_needed()
    picture = standin.locator("img")
    loaded = picture.count() == 1 and picture.evaluate("img => img.complete && img.naturalWidth > 100")
    if not loaded:
        problems.append(f"{where}: the stand-in's picture is missing or did not load (sanitised away?)")
    return problems


def unrun_widget_problems(page: Page, shot, message: str, timeout_s: float = 20) -> list[str]:
    """Open, not run: every saved widget output shows its stand-in (text/html, the message, a
    picture) and no output anywhere shows a widget's repr (``VBox(`` / ``HBox(``).

    An untrusted output may only use renderers JupyterLab calls safe; the widget renderer is not
    one, so a bundle's text/html (sanitised) is shown, else its text/plain. Everything a clone
    gets is untrusted until run, which the check verifies first."""
    outputs = page.evaluate(_WIDGET_OUTPUTS_JS)
    if not outputs:
        return ["no saved widget output in the notebook: nothing shows what a reader sees"]
    _wait_for(lambda: page.locator(STANDIN).count() >= len(outputs), timeout_s)
    problems = [p for found in outputs for p in _standin_problems(page, found, message)]
    for index, text in enumerate(page.locator(".jp-OutputArea-output").all_inner_texts()):
        if WIDGET_REPR.search(text):
            problems.append(f"output {index} shows a widget repr: {text.strip()[:120]!r}")
    shot("standin")
    return problems


def insert_code_cell(page: Page, index: int, source: str) -> None:
    """Insert a code cell at ``index`` of the open notebook (what Insert Cell Above does)."""
    page.evaluate("""([index, source]) => {
        const notebook = window.jupyterapp.shell.currentWidget.content;
        notebook.model.sharedModel.insertCell(index, {cell_type: 'code', source: source});
    }""", [index, source])


def save_screenshot(page: Page, folder: Path, prefix: str):
    """A ``shot(name)`` function writing ``folder/<prefix>-NN-<name>.png``."""
    counter = itertools.count(1)

    def shot(name: str) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(folder / f"{prefix}-{next(counter):02d}-{name}.png"))

    return shot
