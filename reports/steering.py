"""Figures of the case studies, from their saved JSON (``python -m bench steer|auroc``).

- :func:`steer_figure`: probability against α, one panel per basis, one line per k:
  p(clean answer) solid, p(counterfactual answer) dashed, p(intermediate) dotted where the
  task has one; α = 1 is the unsteered model (a grey line);
- :func:`auroc_figure`: per class family, the histogram of each node's max over classes of
  |AUROC − 0.5| + 0.5, one line per basis and kind (attribution, activation), as a fraction of
  the basis's nodes.
"""

from __future__ import annotations

from typing import Any

from matplotlib.figure import Figure

from reports import style


def steer_figure(data: dict[str, Any]) -> Figure:
    protocol, records = data["protocol"], data["records"]
    bases = protocol["bases"]
    with style.figure_rc():
        fig = Figure(figsize=(3.2 * len(bases), 2.8), layout="constrained")
        axes = fig.subplots(1, len(bases), sharey=True, squeeze=False)[0]
        for ax, label in zip(axes, bases, strict=True):
            mine = [r for r in records if r["basis"] == label]
            for i, k in enumerate(protocol["ks"]):
                rows = sorted((r for r in mine if r["k"] == k), key=lambda r: r["alpha"])
                alphas = [r["alpha"] for r in rows]
                color = f"C{i}"
                ax.plot(alphas, [r["p_clean"] for r in rows], color=color, label=f"k={k}")
                ax.plot(alphas, [r["p_counterfactual"] for r in rows], color=color, ls="--")
                if rows and "p_intermediate" in rows[0]:
                    ax.plot(alphas, [r["p_intermediate"] for r in rows], color=color, ls=":")
            ax.axvline(1.0, color="0.6", lw=0.8)
            ax.set_title(label, fontsize="small")
            ax.set_xlabel("α (multiplier)")
        axes[0].set_ylabel("mean probability")
        axes[-1].legend(fontsize="x-small", title="— clean, -- counterfactual"
                        + (", ·· state" if protocol.get("intermediate") else ""),
                        title_fontsize="x-small")  # fmt: skip
        fig.suptitle(f"{protocol['model']} {protocol['task']}: top-k nodes multiplied by α",
                     fontsize="small")  # fmt: skip
    return fig


def auroc_figure(data: dict[str, Any]) -> Figure:
    families = data["protocol"]["families"]
    with style.figure_rc():
        fig = Figure(figsize=(3.0 * len(families), 2.6), layout="constrained")
        axes = fig.subplots(1, len(families), sharey=True, squeeze=False)[0]
        for ax, family in zip(axes, families, strict=True):
            for i, b in enumerate(data["bases"]):
                for kind, ls in (("attribution", "-"), ("activation", "--")):
                    h = b[kind][family].get("histogram")
                    if not h:
                        continue
                    edges, counts = h["bins"], h["counts"]
                    frac = [c / b["n_nodes"] for c in counts]
                    ax.step(edges[:-1], frac, where="post", color=f"C{i}", ls=ls,
                            label=f"{b['basis']} {kind}")  # fmt: skip
            ax.set_yscale("log")
            ax.axvline(0.9, color="0.6", lw=0.8)
            ax.set_title(family.replace("_", " "), fontsize="small")
            ax.set_xlabel("max over classes |AUROC − 0.5| + 0.5")
        axes[0].set_ylabel("fraction of nodes")
        axes[-1].legend(fontsize="x-small")
    return fig
