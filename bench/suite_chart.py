#!/usr/bin/python3
"""Chart for bench/suite.sh: grouped bars of end-to-end msg/s per message size.

    /usr/bin/python3 bench/suite_chart.py bench/results/suite-<date>.json [out.png]

One panel per connection count; in each panel one group per message size with
three bars (ceiling = blast -> sink direct, ringmail, Postfix), log scale.
Needs Debian's python3-matplotlib (bench/suite.sh installs it).
"""
import json
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

SIZE_NAMES = {1024: "1 KiB", 4096: "4 KiB", 100000: "100 KB", 1048576: "1 MiB"}
SERIES = [("direct", "ceiling (blast → sink)", "#9e9e9e"),
          ("ringmail", "ringmail (pool_size 50)", "#1f77b4"),
          ("postfix", "Postfix 3.7", "#d62728")]


def main():
    src = sys.argv[1]
    out = sys.argv[2] if len(sys.argv) > 2 else src.rsplit(".", 1)[0] + ".png"
    with open(src) as fh:
        doc = json.load(fh)
    cells = {}
    for c in doc["cells"]:
        if c["system"] == "ringmail" and c.get("pool_size") != 50:
            continue
        cells[(c["connections"], c["size"], c["system"])] = c
    conns = sorted({k[0] for k in cells})
    sizes = sorted({k[1] for k in cells})

    fig, axes = plt.subplots(1, len(conns), figsize=(6.5 * len(conns), 5.2), sharey=True, squeeze=False)
    width = 0.27
    vals = [c["e2e_msgs_per_s"] for c in cells.values() if c.get("e2e_msgs_per_s")]
    for ax, conn in zip(axes[0], conns):
        for i, (system, label, color) in enumerate(SERIES):
            xs, ys = [], []
            for j, size in enumerate(sizes):
                c = cells.get((conn, size, system))
                if c and c.get("e2e_msgs_per_s"):
                    xs.append(j + (i - 1) * width)
                    ys.append(c["e2e_msgs_per_s"])
            bars = ax.bar(xs, ys, width, label=label, color=color)
            for b, y in zip(bars, ys):
                ax.annotate(f"{y:,.0f}", (b.get_x() + b.get_width() / 2, y), ha="center", va="bottom",
                            fontsize=7, xytext=(0, 2), textcoords="offset points")
        ax.set_yscale("log")
        ax.set_ylim(min(vals) / 2, max(vals) * 2)   # every bar visible, room for the labels
        ax.set_xticks(range(len(sizes)))
        ax.set_xticklabels([SIZE_NAMES.get(s, str(s)) for s in sizes])
        ax.set_xlabel("message size")
        ax.set_title(f"{conn} connections")
        ax.grid(axis="y", which="both", alpha=0.3)
    axes[0][0].set_ylabel("end-to-end msg/s (log scale)")
    axes[0][-1].legend(loc="upper right", fontsize=8)
    m = doc.get("machine", {})
    fig.suptitle(f"ringmail vs Postfix, durable relay on loopback — {m.get('nproc', '?')} CPUs, "
                 f"{doc.get('date_utc', '')}{' (quick)' if doc.get('quick') else ''}", fontsize=11)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    print(out)


if __name__ == "__main__":
    main()
