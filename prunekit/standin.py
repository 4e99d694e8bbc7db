"""What an interactive explorer shows where no kernel runs it.

A widget is a view of an object that lives in a running Python kernel. A notebook saved with
its outputs keeps, for a widget, only a reference to that object (MIME type
``application/vnd.jupyter.widget-view+json``), and the reference means nothing where no kernel
holds the object: on GitHub, in most notebook viewers, and in JupyterLab itself whenever the
notebook is not *trusted* -- which is every notebook you did not run yourself, such as the
committed lectures of a fresh clone.

Every output is a *bundle*: the same content in several MIME types, from which the front end
picks one. JupyterLab ranks its renderers (the widget renderer first) but, for an output it
does not trust, considers only the renderers it calls *safe*; the widget renderer is not one
of them, so it falls back to sanitised ``text/html`` and then ``text/plain``. ipywidgets fills
``text/plain`` with the widget's ``repr`` -- ``VBox(children=(HBox(children=(Dropdown(...`` --
which is all a reader used to see. :class:`ExplorerBox` fills both with a stand-in instead: a
sentence that says what the cell does and how to use it, the explorer's first readout, and a
picture of its first figure. Where the notebook is trusted and a kernel runs the cell, the
widget itself is shown as before.
"""

from __future__ import annotations

import base64
import html
import io

import ipywidgets as w

__all__ = ["MESSAGE", "ExplorerBox"]

#: The first words of every stand-in (plain text and HTML alike).
MESSAGE = "Interactive explorer -- run the cell to use it"


class ExplorerBox(w.VBox):
    """An ``ipywidgets.VBox`` whose saved output reads well without a kernel.

    ``what`` says in a few words what the explorer does; :meth:`snapshot` records the readout
    and the figure that the stand-in shows (the explorers call it once, for their first state).
    Displaying the box gives a bundle with the widget view, plus ``text/plain`` and
    ``text/html`` stand-ins for every front end that cannot show the widget."""

    def __init__(self, children, what: str, **kwargs) -> None:
        super().__init__(children, **kwargs)
        self.what = what
        self.snapshot_html = ""   # the first state, as HTML (readout and picture)

    def snapshot(self, readout_html: str, figure) -> None:
        """Keep ``readout_html`` and a PNG of the matplotlib ``figure`` for the stand-in."""
        buffer = io.BytesIO()
        figure.savefig(buffer, format="png", bbox_inches="tight")
        picture = base64.b64encode(buffer.getvalue()).decode("ascii")
        self.snapshot_html = (
            f"{readout_html}"
            f"<img class='pk-standin-figure' alt='the explorer&apos;s first figure' "
            f"src='data:image/png;base64,{picture}'>")

    def plain_text(self) -> str:
        return f"{MESSAGE} ({self.what})."

    def standin_html(self) -> str:
        first = "<br>Its first state, as a picture:" if self.snapshot_html else ""
        return (f"<div class='pk-standin'><p><b>{html.escape(MESSAGE)}</b> "
                f"({html.escape(self.what)}).{first}</p>{self.snapshot_html}</div>")

    def _repr_mimebundle_(self, **kwargs) -> dict:
        bundle = super()._repr_mimebundle_(**kwargs) or {}
        bundle["text/plain"] = self.plain_text()
        bundle["text/html"] = self.standin_html()
        return bundle

    def __repr__(self) -> str:
        return f"<ExplorerBox: {self.plain_text()}>"
