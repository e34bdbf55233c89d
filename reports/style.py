"""The one place that decides how sparsebench figures look.

Steps a plotting function takes from here:

1. open :func:`figure_rc` (a ``matplotlib.rc_context``: 8-9 pt fonts, thin lines, no global state
   left behind) and size the figure with :func:`figsize` (3.4 in per panel, paper column width);
2. colour each curve by its basis/site with :func:`basis_colour` (fixed across every figure),
   or by method with :func:`method_colour` in figures that compare methods on one basis, or
   by rank with :func:`category_colour` (with :data:`MARKERS` and :data:`FILLS`) elsewhere;
3. give each curve its method's line style with :func:`method_linestyle`;
4. draw the reference line (F = 0.8) with :data:`THRESHOLD_STYLE`, bands with :data:`BAND_ALPHA`.

It also fixes the canonical order of bases, sites and methods, so tables and legends list
cells in the same order everywhere.
"""

from __future__ import annotations

import contextlib
import zlib
from collections.abc import Iterator
from typing import Any

import matplotlib
import numpy as np

# -- canonical orders (unknown names sort after these, alphabetically)
BASIS_ORDER: tuple[str, ...] = ("neurons", "sae", "transcoder")
SITE_ORDER: tuple[str, ...] = ("mlp_acts", "mlp_out", "resid", "attn_out")
METHOD_ORDER: tuple[str, ...] = ("relp", "atp", "ig", "exact", "random")
ABLATION_ORDER: tuple[str, ...] = ("patch", "mean", "zero", "marks")

METHOD_NAMES: dict[str, str] = {
    "relp": "RelP",
    "atp": "AtP",
    "ig": "IG",
    "exact": "exact",
    "random": "random",
}

# -- colours: Okabe-Ito (colour-blind safe), fixed per basis@site
BASIS_COLOURS: dict[str, str] = {
    "neurons@mlp_acts": "#0072B2",  # blue: "the neurons"
    "neurons@mlp_out": "#56B4E9",  # sky blue
    "neurons@resid": "#009E73",  # green
    "neurons@attn_out": "#CC79A7",  # purple
    "sae": "#D55E00",  # vermillion (any site)
    "transcoder": "#E69F00",  # orange (any site)
}
FALLBACK_COLOURS: tuple[str, ...] = ("#F0E442", "#882255", "#117733", "#332288", "#999933")

# -- categorical colours (Okabe-Ito, yellow last) and marker shapes for series that are not
# bases (the ladder figure: one colour per task, one marker per dictionary width)
CATEGORICAL_COLOURS: tuple[str, ...] = (
    "#0072B2",
    "#D55E00",
    "#009E73",
    "#CC79A7",
    "#E69F00",
    "#56B4E9",
    "#000000",
    "#F0E442",
)
MARKERS: tuple[str, ...] = ("o", "s", "^", "D", "v", "P", "X", "*")
# marker fill by rank (fewest training tokens first): open, half, full, then the other halves
FILLS: tuple[str, ...] = ("none", "bottom", "full", "left", "top", "right")

METHOD_COLOURS: dict[str, str] = {
    "relp": "#0072B2",
    "atp": "#D55E00",
    "ig": "#009E73",
    "exact": "#000000",
    "random": "#7F7F7F",
}

METHOD_LINESTYLES: dict[str, Any] = {
    "relp": "-",
    "atp": "--",
    "ig": "-.",
    "exact": (0, (5, 1, 1, 1, 1, 1)),
    "random": ":",
}

THRESHOLD = 0.8
THRESHOLD_STYLE: dict[str, Any] = {
    "color": "0.45",
    "linestyle": (0, (4, 3)),
    "linewidth": 0.7,
    "zorder": 1,
    "label": "_threshold",
}
BAND_ALPHA = 0.18
PANEL_WIDTH_IN = 3.4
PANEL_HEIGHT_IN = 2.5

RC: dict[str, Any] = {
    "font.size": 8,
    "axes.titlesize": 9,
    "axes.labelsize": 8,
    "xtick.labelsize": 7.5,
    "ytick.labelsize": 7.5,
    "legend.fontsize": 7.5,
    "legend.frameon": False,
    "lines.linewidth": 1.3,
    "axes.linewidth": 0.6,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "xtick.major.width": 0.6,
    "ytick.major.width": 0.6,
    "grid.linewidth": 0.4,
    "grid.alpha": 0.5,
    "savefig.dpi": 200,
    "pdf.fonttype": 42,  # embed TrueType: editable text in the PDF
    "svg.fonttype": "none",
}


@contextlib.contextmanager
def figure_rc() -> Iterator[None]:
    """Matplotlib settings for every sparsebench figure, restored on exit."""
    with matplotlib.rc_context(RC):
        yield


def figsize(n_panels: int = 1, height: float = PANEL_HEIGHT_IN) -> tuple[float, float]:
    """Width of ``n_panels`` paper-column panels side by side, and the height."""
    return (PANEL_WIDTH_IN * max(1, n_panels), height)


def _stable_pick(key: str, palette: tuple[str, ...]) -> str:
    return palette[zlib.crc32(key.encode()) % len(palette)]


def basis_colour(basis: str, site: str) -> str:
    """Fixed colour of a basis at a site (SAEs and transcoders: one colour for any site)."""
    key = f"{basis}@{site}"
    if key in BASIS_COLOURS:
        return BASIS_COLOURS[key]
    if basis in BASIS_COLOURS:
        return BASIS_COLOURS[basis]
    return _stable_pick(key, FALLBACK_COLOURS)


def shade(colour: str, i: int, n: int) -> str:
    """The ``i``-th of ``n`` shades of ``colour``, dark to light (``n`` <= 1: ``colour`` itself):
    several dictionaries of one basis in a figure (e.g. the quality ladder) stay that basis's
    colour and are told apart."""
    if n <= 1:
        return colour
    from matplotlib.colors import to_hex, to_rgb

    t = i / (n - 1)  # 0: darkest, 1: lightest
    rgb = np.array(to_rgb(colour))
    target, amount = (
        (np.zeros(3), 0.45 * (1 - 2 * t)) if t < 0.5 else (np.ones(3), 0.55 * (2 * t - 1))
    )
    return to_hex(rgb + (target - rgb) * amount)


def category_colour(i: int) -> str:
    """The i-th categorical colour (cycling)."""
    return CATEGORICAL_COLOURS[i % len(CATEGORICAL_COLOURS)]


def method_colour(method: str) -> str:
    return METHOD_COLOURS.get(method) or _stable_pick(method, FALLBACK_COLOURS)


def method_linestyle(method: str) -> Any:
    return METHOD_LINESTYLES.get(method, (0, (2, 1)))


def method_name(method: str) -> str:
    return METHOD_NAMES.get(method, method)


def order_key(value: str | None, order: tuple[str, ...]) -> tuple[int, str]:
    """Sort key: names in ``order`` first (in that order), then others alphabetically."""
    if value is None:
        return (-1, "")
    if value in order:
        return (order.index(value), "")
    return (len(order), value)
