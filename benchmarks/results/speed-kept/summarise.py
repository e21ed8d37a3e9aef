"""Print the speed-kept tables from this directory's JSON files: our engine against libcirkit
0.3.1, the EinsumNetworks-style reference and SPFlow 0.0.48, and spn-ac's and vdn's training
env steps/s, at two commits (the file names' commit and run number).

    python benchmarks/results/speed-kept/summarise.py
"""

import glob
import json
import statistics
from pathlib import Path

HERE = Path(__file__).parent
COMMITS = ("22c848e", "1f7b256")


def load(kind: str, commit: str) -> list[dict]:
    return [json.loads(Path(f).read_text())
            for f in sorted(glob.glob(str(HERE / f"{kind}_{commit}_*.json")))]


def span(values: list[float]) -> str:
    return f"{min(values):.2f}-{max(values):.2f}"


def engines() -> None:
    print("| circuit | batch | commit | fwd x cirkit | fwd+bwd x cirkit | ours fwd+bwd ms (median) |")
    print("|---|---:|---|---:|---:|---:|")
    for commit in COMMITS:
        runs = load("cirkit", commit)
        for i, circuit in enumerate(runs[0]["circuits"]):
            for batch in circuit["batches"]:
                cells = [r["circuits"][i]["batches"][batch] for r in runs]
                print(f"| Tucker {circuit['edges']} edges | {batch} | {commit} "
                      f"| {span([c['forward']['speedup'] for c in cells])} "
                      f"| {span([c['forward_backward']['speedup'] for c in cells])} "
                      f"| {statistics.median(c['forward_backward']['ours_ms'] for c in cells):.2f} |")
    print()
    print("| circuit | batch | commit | fwd x reference | fwd+bwd x reference | ours fwd+bwd ms (median) |")
    print("|---|---:|---|---:|---:|---:|")
    for commit in COMMITS:
        runs = load("engine", commit)
        for i, circuit in enumerate(runs[0]["reference"]):
            for batch in circuit["batches"]:
                cells = [r["reference"][i]["batches"][batch] for r in runs]
                print(f"| RAT {circuit['circuit']['edges']} edges | {batch} | {commit} "
                      f"| {span([c['speedup_forward'] for c in cells])} "
                      f"| {span([c['speedup_forward_backward'] for c in cells])} "
                      f"| {statistics.median(c['ours_forward_backward_ms'] for c in cells):.2f} |")
    for commit in COMMITS:
        ratios = [r["log_likelihood"]["ratio"] for r in load("engine", commit)]
        print(f"SPFlow at {commit}: {', '.join(f'{x:.1f}x' for x in ratios)}")


def training(mode: str) -> None:
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
