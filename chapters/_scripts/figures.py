"""A build-time audit of the chapters' figures: titled, labelled axes, legends where needed.

``audit_figures()`` (called in a chapter's setup cell) inspects every figure a cell draws, just
before the notebook displays it, and records each problem; ``assert_figures_audited()`` (in the
chapter's last cell) fails the build if there was any. Rules, per axes that shows data:

* a title on the axes, or a title over the whole figure;
* a label on the x axis and on the y axis (units go in the label), except on pictures drawn with
  ``imshow`` (masks, feature maps) and on an axis shared with a labelled neighbour;
* a legend when two or more artists carry a label;
* colours a colour-blind reader can tell apart: lines, markers, bars and areas in the Okabe-Ito
  palette or a grey, pictures in a perceptually ordered or colour-blind-safe colour map;
* bars that start at zero: a bar's length is its value, so every bar stands on 0 and the value
  axis shows 0 (a truncated axis turns a 1-point difference into a tall one; use a dot plot);
* error bars and bands inside the quantity's range: on an axis labelled as an accuracy,
  fraction, probability or rate they stay in [0, 1] (or [0, 100] when the label says %);
* text a reader can read at the page width: a figure wider than the content column is shown
  scaled down, so legend entries and axis labels must be at least 9 pt and tick labels 8 pt
  *after* that scaling.
"""

from __future__ import annotations

import re
from typing import Any

PROBLEMS: list[str] = []
# Okabe & Ito (2008), "Color Universal Design": distinguishable with the common colour blindnesses.
OKABE_ITO = ["#0072B2", "#E69F00", "#009E73", "#D55E00", "#CC79A7", "#56B4E9", "#F0E442",
             "#000000"]
SAFE_COLORMAPS = {"gray", "Greys", "binary", "viridis", "magma", "cividis", "inferno", "plasma",
                  "PuOr", "BrBG", "RdBu", "RdBu_r", "gray_r", "Greys_r", "viridis_r", "magma_r"}


# The book's content column is about 7.3 in of a figure at its own dpi on a laptop-sized window;
# a wider figure is scaled down to fit, and its text with it.
PAGE_WIDTH_IN = 7.3
MIN_LEGEND_PT = 9.0
MIN_LABEL_PT = 9.0
MIN_TICK_PT = 8.0
# An axis labelled with one of these words shows a quantity that lives in [0, 1] (or [0, 100] %).
_BOUNDED = re.compile(r"\b(accuracy|accuracies|fraction|probabilit\w*|rate|proportion|"
                      r"error rate|agreement|confidence)\b", re.IGNORECASE)


def _safe_colour(rgba: Any) -> bool:
    from matplotlib.colors import to_hex, to_rgba

    r, g, b, alpha = to_rgba(rgba)
    if alpha == 0 or max(r, g, b) - min(r, g, b) < 0.02:  # invisible, or a grey
        return True
    return to_hex((r, g, b)).upper() in OKABE_ITO


def colour_problems(ax: Any) -> list[str]:
    """Colours in ``ax`` outside the colour-blind-safe choices."""
    bad = set()
    for line in ax.lines:
        for colour in (line.get_color(), line.get_markerfacecolor()):
            if isinstance(colour, str) and colour == "none":
                continue
            if not _safe_colour(colour):
                bad.add(f"line {line.get_label()!r}")
    for patch in ax.patches:
        if not _safe_colour(patch.get_facecolor()):
            bad.add(f"patch {patch.get_label()!r}")
    for collection in ax.collections:
        if collection.get_array() is not None:  # colour-mapped values
            if collection.get_cmap().name not in SAFE_COLORMAPS:
                bad.add(f"colour map {collection.get_cmap().name}")
            continue
        for colour in [*collection.get_facecolors(), *collection.get_edgecolors()]:
            if not _safe_colour(colour):
                bad.add(f"collection {collection.get_label()!r}")
    for image in ax.images:
        if image.get_cmap().name not in SAFE_COLORMAPS and image.get_array().ndim == 2:
            bad.add(f"colour map {image.get_cmap().name}")
    return sorted(bad)


def _labelled(ax: Any) -> list[str]:
    artists = [*ax.lines, *ax.collections, *ax.patches, *ax.containers]
    labels = {a.get_label() for a in artists}
    return sorted(label for label in labels if label and not label.startswith("_"))


def clipped_err(centres: Any, spreads: Any, low: float = 0.0, high: float = 1.0) -> Any:
    """Asymmetric ``yerr``/``xerr`` for ``centres ± spreads`` cut to the range [low, high].

    An accuracy of 0.99 ± 0.02 is drawn up to 1, not 1.01: a bounded quantity's bar stops at its
    bound.
    """
    import numpy as np

    c = np.asarray(centres, dtype=float)
    s = np.asarray(spreads, dtype=float)
    return np.stack([c - np.clip(c - s, low, high), np.clip(c + s, low, high) - c])


def _axis_label(ax: Any, which: str) -> str:
    """The label of ``ax``'s x or y axis, or of a labelled neighbour sharing it."""
    get = (lambda a: a.get_xlabel()) if which == "x" else (lambda a: a.get_ylabel())
    if get(ax).strip():
        return get(ax)
    shared = ax.get_shared_x_axes() if which == "x" else ax.get_shared_y_axes()
    return next((get(s) for s in shared.get_siblings(ax) if get(s).strip()), "")


def bar_problems(ax: Any) -> list[str]:
    """Bars that do not stand on 0, or a value axis that hides 0."""
    from matplotlib.container import BarContainer

    problems = []
    for container in ax.containers:
        if not isinstance(container, BarContainer) or not container.patches:
            continue
        vertical = getattr(container, "orientation", "vertical") != "horizontal"
        scale = ax.get_yscale() if vertical else ax.get_xscale()
        if scale != "linear":
            problems.append(f"bars on a {scale} value axis (use a dot plot)")
            continue
        bases = [p.get_y() if vertical else p.get_x() for p in container.patches]
        # A bar drawn downwards (negative value) has its base at its value: take the nearer end.
        ends = [b + (p.get_height() if vertical else p.get_width())
                for b, p in zip(bases, container.patches, strict=True)]
        if any(min(abs(b), abs(e)) > 1e-12 for b, e in zip(bases, ends, strict=True)):
            problems.append("bars that do not start at 0")
        low, high = sorted(ax.get_ylim() if vertical else ax.get_xlim())
        if not low <= 0 <= high:
            problems.append(f"a bar chart whose value axis ({low:g} to {high:g}) leaves out 0")
    return sorted(set(problems))


def _bounded_range(label: str) -> tuple[float, float] | None:
    if not _BOUNDED.search(label):
        return None
    return (0.0, 100.0) if "%" in label else (0.0, 1.0)


def range_problems(ax: Any) -> list[str]:
    """Error bars and shaded bands that leave the range of a bounded quantity."""
    from matplotlib.collections import LineCollection, PolyCollection

    problems = []
    for which, column in (("y", 1), ("x", 0)):
        bounds = _bounded_range(_axis_label(ax, which))
        if bounds is None:
            continue
        low, high = bounds
        for collection in ax.collections:
            if isinstance(collection, LineCollection):
                # Error bars: segments along this axis (both ends share the other coordinate).
                points = [seg for seg in collection.get_segments()
                          if len(seg) == 2 and abs(seg[0][1 - column] - seg[1][1 - column]) < 1e-12]
                values = [v for seg in points for v in (seg[0][column], seg[1][column])]
                kind = "error bars"
            elif isinstance(collection, PolyCollection):
                values = [v[column] for path in collection.get_paths() for v in path.vertices]
                kind = "a shaded band"
            else:
                continue
            if values and (min(values) < low - 1e-9 or max(values) > high + 1e-9):
                problems.append(f"{kind} past [{low:g}, {high:g}] on the {which} axis "
                                f"({min(values):.3g} to {max(values):.3g}): clip them")
    return sorted(set(problems))


def text_size_problems(fig: Any, ax: Any) -> list[str]:
    """Legend, axis-label and tick text smaller than readable once the figure fits the page."""
    shrink = min(1.0, PAGE_WIDTH_IN / fig.get_figwidth())
    problems = []
    checks = [("legend text", MIN_LEGEND_PT,
               [t for legend in [ax.get_legend(), *fig.legends] if legend
                for t in legend.get_texts()]),
              ("axis label", MIN_LABEL_PT, [ax.xaxis.label, ax.yaxis.label]),
              ("tick labels", MIN_TICK_PT, [*ax.get_xticklabels(), *ax.get_yticklabels()])]
    for what, minimum, texts in checks:
        sizes = [t.get_fontsize() * shrink for t in texts if t.get_text().strip()]
        if sizes and min(sizes) < minimum - 1e-9:
            problems.append(f"{what} {min(sizes):.1f} pt at the page width ({minimum:g} pt at "
                            f"least; the {fig.get_figwidth():.1f} in figure is shown at "
                            f"{shrink:.0%}): make it narrower or the text larger")
    return problems


def figure_problems(fig: Any) -> list[str]:
    """What a reader would miss in ``fig``, one line per problem."""
    problems = []
    suptitle = fig.get_suptitle().strip()
    for number, ax in enumerate(fig.axes, start=1):
        if not ax.get_visible() or not ax.has_data():
            continue
        where = f"axes {number} of a figure titled {suptitle or ax.get_title() or '(untitled)'!r}"
        if not (ax.get_title().strip() or suptitle):
            problems.append(f"{where}: no title")
        if not ax.images:
            for which in ("x", "y"):
                if not _axis_label(ax, which).strip():
                    problems.append(f"{where}: no {which} label")
        if len(_labelled(ax)) >= 2 and ax.get_legend() is None and not fig.legends:
            problems.append(f"{where}: {len(_labelled(ax))} labelled series but no legend")
        problems += [f"{where}: not colour-blind safe: {what}" for what in colour_problems(ax)]
        problems += [f"{where}: {what}" for what in
                     [*bar_problems(ax), *range_problems(ax), *text_size_problems(fig, ax)]]
    return problems


def _audit_open_figures() -> None:
    import matplotlib.pyplot as plt

    for number in plt.get_fignums():
        fig = plt.figure(number)
        if not getattr(fig, "_course_audited", False):
            fig._course_audited = True
            PROBLEMS.extend(figure_problems(fig))


def audit_figures() -> None:
    """Check every figure before the notebook shows it: at ``plt.show()`` and when a cell ends.

    The inline backend's ``show`` displays *and closes* the open figures, so a check run only when
    the cell ends would see none of them: ``plt.show`` is wrapped here (in this kernel only) so
    that the figures are audited first.
    """
    import matplotlib.pyplot as plt
    from IPython import get_ipython

    shell = get_ipython()
    if shell is None:
        return
    callbacks = shell.events.callbacks["post_execute"]
    if _audit_open_figures not in callbacks:
        callbacks.insert(0, _audit_open_figures)
    if not getattr(plt.show, "_course_audit", False):
        shown = plt.show

        def show(*args: Any, **kwargs: Any) -> Any:
            _audit_open_figures()
            return shown(*args, **kwargs)

        show._course_audit = True  # type: ignore[attr-defined]
        plt.show = show


def assert_figures_audited() -> None:
    """Fail (and so fail the book build) if any figure of this chapter broke a rule."""
    if PROBLEMS:
        raise AssertionError("figures a reader cannot read:\n" + "\n".join(PROBLEMS))
