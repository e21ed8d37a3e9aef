"""Print the speed-kept tables from this directory's JSON files: our engine against libcirkit
0.3.1, the EinsumNetworks-style reference and SPFlow 0.0.48, and spn-ac's and vdn's training
env steps/s, at two commits (the file names' commit and run number); by default this
directory's, 22c848e against 1f7b256, or those of a subdirectory and its two commits:

    python benchmarks/results/speed-kept/summarise.py
    python benchmarks/results/speed-kept/summarise.py functional-adam 9c7e014 1f7b256
"""

import glob
import json
import statistics
import sys
from pathlib import Path

HERE = Path(__file__).parent
if len(sys.argv) not in (1, 4):
    sys.exit("usage: summarise.py [SUBDIRECTORY NEW_COMMIT OLD_COMMIT]")
FOLDER, *COMMITS = sys.argv[1:] if len(sys.argv) == 4 else (".", "22c848e", "1f7b256")


def load(kind: str, commit: str) -> list[dict]:
    return [json.loads(Path(f).read_text())
            for f in sorted(glob.glob(str(HERE / FOLDER / f"{kind}_{commit}_*.json")))]


def span(values: list[float]) -> str:
    return f"{min(values):.2f}-{max(values):.2f}"


#: per engine script: its circuits' list, a circuit's name, and a batch cell's
#: (fwd ratio, fwd+bwd ratio, our fwd+bwd ms)
ENGINE_TABLES = {
    "cirkit": ("circuits", lambda c: f"Tucker {c['edges']} edges",
               lambda b: (b["forward"]["speedup"], b["forward_backward"]["speedup"],
                          b["forward_backward"]["ours_ms"])),
    "engine": ("reference", lambda c: f"RAT {c['circuit']['edges']} edges",
               lambda b: (b["speedup_forward"], b["speedup_forward_backward"],
                          b["ours_forward_backward_ms"])),
}


def engines() -> None:
    if not load("engine", COMMITS[0]):
        return
    for kind, (key, name, cell) in ENGINE_TABLES.items():
        other = "cirkit" if kind == "cirkit" else "reference"
        print(f"| circuit | batch | commit | fwd x {other} | fwd+bwd x {other} "
              f"| ours fwd+bwd ms (median) |")
        print("|---|---:|---|---:|---:|---:|")
        for commit in COMMITS:
            runs = load(kind, commit)
            for i, circuit in enumerate(runs[0][key]):
                for batch in circuit["batches"]:
                    cells = [cell(r[key][i]["batches"][batch]) for r in runs]
                    print(f"| {name(circuit)} | {batch} | {commit} "
                          f"| {span([c[0] for c in cells])} | {span([c[1] for c in cells])} "
                          f"| {statistics.median(c[2] for c in cells):.2f} |")
        print()
    for commit in COMMITS:
        ratios = [r["log_likelihood"]["ratio"] for r in load("engine", commit)]
        print(f"SPFlow at {commit}: {', '.join(f'{x:.1f}x' for x in ratios)}")


def training(mode: str) -> None:
    if not load(f"train_{mode}", COMMITS[0]):
        return
    rows = {}
    for commit in COMMITS:
        for run in load(f"train_{mode}", commit):
            for s in run["settings"]:
                row = rows.setdefault((s["setting"], commit), {"spn-ac": [], "vdn": [],
                                                               "compiled": []})
                row["spn-ac"].append(s["spn-ac"]["env_steps_per_s"])
                row["vdn"].append(s["vdn"]["env_steps_per_s"])
                if "spn-ac-compiled" in s:
                    row["compiled"].append(s["spn-ac-compiled"]["env_steps_per_s"])
    key = "compiled" if mode == "compiled" else "spn-ac"
    print(f"| setting | spn-ac {mode}, {COMMITS[0]} | {COMMITS[1]} | ratio (median; per run) "
          f"| vdn {COMMITS[0]} | {COMMITS[1]} | ratio |")
    print("|---|---:|---:|---|---:|---:|---:|")
    for setting in ("3x6x6", "6x20x20"):
        new, old = rows[(setting, COMMITS[0])], rows[(setting, COMMITS[1])]
        med = statistics.median
        paired = ", ".join(f"{a / b:.2f}" for a, b in zip(new[key], old[key]))
        print(f"| {setting} | {med(new[key]):.0f} | {med(old[key]):.0f} "
              f"| **{med(new[key]) / med(old[key]):.2f}**; {paired} | {med(new['vdn']):.0f} "
              f"| {med(old['vdn']):.0f} | {med(new['vdn']) / med(old['vdn']):.2f} |")


if __name__ == "__main__":
    engines()
    print()
    training("eager")
    print()
    training("compiled")
