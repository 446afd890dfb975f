"""A build-time audit of the chapters' figures: titled, labelled axes, legends where needed.

``audit_figures()`` (called in a chapter's setup cell) inspects every figure a cell draws, just
before the notebook displays it, and records each problem; ``assert_figures_audited()`` (in the
chapter's last cell) fails the build if there was any. Rules, per axes that shows data:

* a title on the axes, or a title over the whole figure;
* a label on the x axis and on the y axis (units go in the label), except on pictures drawn with
  ``imshow`` (masks, feature maps) and on an axis shared with a labelled neighbour;
* a legend when two or more artists carry a label;
* colours a colour-blind reader can tell apart: lines, markers, bars and areas in the Okabe-Ito
  palette or a grey, pictures in a perceptually ordered or colour-blind-safe colour map.
"""

from __future__ import annotations

from typing import Any

PROBLEMS: list[str] = []
# Okabe & Ito (2008), "Color Universal Design": distinguishable with the common colour blindnesses.
OKABE_ITO = ["#0072B2", "#E69F00", "#009E73", "#D55E00", "#CC79A7", "#56B4E9", "#F0E442",
             "#000000"]
SAFE_COLORMAPS = {"gray", "Greys", "binary", "viridis", "magma", "cividis", "inferno", "plasma",
                  "PuOr", "BrBG", "RdBu", "RdBu_r", "gray_r", "Greys_r", "viridis_r", "magma_r"}


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


def _axis_labelled(ax: Any, which: str) -> bool:
    label = ax.get_xlabel() if which == "x" else ax.get_ylabel()
    if label.strip():
        return True
    shared = ax.get_shared_x_axes() if which == "x" else ax.get_shared_y_axes()
    siblings = [s for s in shared.get_siblings(ax) if s is not ax]
    return any((s.get_xlabel() if which == "x" else s.get_ylabel()).strip() for s in siblings)


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
                if not _axis_labelled(ax, which):
                    problems.append(f"{where}: no {which} label")
        if len(_labelled(ax)) >= 2 and ax.get_legend() is None and not fig.legends:
            problems.append(f"{where}: {len(_labelled(ax))} labelled series but no legend")
        problems += [f"{where}: not colour-blind safe: {what}" for what in colour_problems(ax)]
    return problems


def _audit_open_figures() -> None:
    import matplotlib.pyplot as plt

    for number in plt.get_fignums():
        PROBLEMS.extend(figure_problems(plt.figure(number)))


def audit_figures() -> None:
    """Check every figure when a cell ends, before the inline backend shows and closes it."""
    from IPython import get_ipython

    shell = get_ipython()
    if shell is None:
        return
    callbacks = shell.events.callbacks["post_execute"]
    if _audit_open_figures not in callbacks:
        callbacks.insert(0, _audit_open_figures)


def assert_figures_audited() -> None:
    """Fail (and so fail the book build) if any figure of this chapter broke a rule."""
    if PROBLEMS:
        raise AssertionError("figures a reader cannot read:\n" + "\n".join(PROBLEMS))
