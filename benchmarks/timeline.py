"""Time-domain benchmark: recall per event kind and significance, false events per 100 frames,
the ranking of injected against false events, and time per frame.

    uv run python benchmarks/timeline.py [--frames 200] [--size 256] [--speed-size 2048]
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from reaper_core.events import search_stack
from reaper_core.simulate_stack import EXPECTED_KIND, simulate_stack
from reaper_core.stacks import Stack, StackFrame


def as_stack(sim) -> Stack:
    frames = [StackFrame("sim", "sim", float(t), int(q), i)
              for i, (t, q) in enumerate(zip(sim.times, sim.quality, strict=True))]
    return Stack("simulated", frames, sim.frames.shape[1:], cube=sim.frames)


def matches(truth, ev) -> bool:
    if ev.frame_end < truth.f_start - 2 or ev.frame_start > truth.f_end + 2:
        return False
    if truth.kind in ("asteroid", "satellite"):
        t = np.linspace(-1 if truth.kind == "satellite" else 0, 1, 200)
        x0, y0 = (2 * truth.x - truth.x_end, 2 * truth.y - truth.y_end) \
            if truth.kind == "satellite" else (truth.x, truth.y)
        lx = truth.x + t * (truth.x_end - truth.x) if truth.kind == "satellite" else \
            np.linspace(x0, truth.x_end, 200)
        ly = truth.y + t * (truth.y_end - truth.y) if truth.kind == "satellite" else \
            np.linspace(y0, truth.y_end, 200)
        return np.hypot(lx - ev.x, ly - ev.y).min() < 4
    return np.hypot(ev.x - truth.x, ev.y - truth.y) < 3


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--frames", type=int, default=200)
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--seeds", type=int, default=2)
    ap.add_argument("--speed-size", type=int, default=2048)
    args = ap.parse_args()
    found: dict[str, list[tuple[float, bool, bool]]] = {k: [] for k in EXPECTED_KIND}
    n_false, n_frames, scores_true, scores_false = 0, 0, [], []
    for seed in range(args.seeds):
        sim = simulate_stack(args.frames, args.size, seed=seed,
                             events=dict.fromkeys(EXPECTED_KIND, 3))
        res = search_stack(as_stack(sim))
        used = set()
        for tr in sim.events:
            hit = [j for j, e in enumerate(res.events) if matches(tr, e)]
            best = max(hit, key=lambda j: res.events[j].peak_sigma) if hit else None
            used.update(hit)
            ok_kind = best is not None and res.events[best].kind == tr.expected
            found[tr.kind].append((tr.peak_sigma, best is not None, ok_kind))
            if best is not None:
                scores_true.append(res.events[best].peak_sigma)
        false = [e for j, e in enumerate(res.events) if j not in used]
        n_false += len(false)
        scores_false += [e.peak_sigma for e in false]
        n_frames += args.frames
    print(f"{args.seeds} stacks of {args.frames} frames of {args.size}² px, 3 of each kind each")
    print(f"{'kind':10s} {'5–10σ':>9s} {'10–30σ':>9s} {'>30σ':>9s} {'kind right':>11s}")
    for kind, rows in found.items():
        cells = []
        for lo, hi in ((5, 10), (10, 30), (30, 1e9)):
            sel = [f for s, f, _ in rows if lo <= s < hi]
            cells.append(f"{sum(sel)}/{len(sel)}" if sel else "—")
        right = sum(k for _, f, k in rows if f)
        print(f"{kind:10s} {cells[0]:>9s} {cells[1]:>9s} {cells[2]:>9s} "
              f"{right}/{sum(f for _, f, _ in rows):>3d}")
    print(f"false events: {n_false} in {n_frames} frames = {100 * n_false / n_frames:.1f} "
          "per 100 frames (target < 1)")
    if scores_true and scores_false:
        from sklearn.metrics import roc_auc_score

        y = np.r_[np.ones(len(scores_true)), np.zeros(len(scores_false))]
        print(f"ROC AUC, injected over false events, by peak S/N: "
              f"{roc_auc_score(y, np.r_[scores_true, scores_false]):.3f}")
    # Speed on full-size frames.
    from reaper_core.difference import build_reference, detect, difference

    sim = simulate_stack(8, args.speed_size, seed=1, events={})
    stack = as_stack(sim)
    t0 = time.perf_counter()
    ref = build_reference(stack)
    t_ref = time.perf_counter() - t0
    t0 = time.perf_counter()
    for i in range(len(stack)):
        detect(difference(stack.frame(i), ref), frame=i)
    t_det = (time.perf_counter() - t0) / len(stack)
    t0 = time.perf_counter()
    for i in range(len(stack)):
        difference(stack.frame(i), ref)
    t_lc = (time.perf_counter() - t0) / len(stack)
    print(f"{args.speed_size}² frames: reference of {len(ref.frames)} frames {t_ref:.1f} s (once); "
          f"per frame: difference + detection {t_det:.2f} s, second pass for light curves "
          f"{t_lc:.2f} s, total {t_det + t_lc:.2f} s (target ≤ 1.5 s)")


if __name__ == "__main__":
    main()
