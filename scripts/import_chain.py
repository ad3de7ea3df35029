"""What a run's imports cost, and whose they are: torch's, Lightning's, or this project's.

Runs ``python -X importtime`` on the imports a default run makes (torch, then Lightning, then
the engine and the example project), as fresh processes, and attributes each module's own time
to the statement that pulled it in and to its top-level package. So "Lightning" counts
everything ``import lightning`` loads beyond torch (torchmetrics, and through it transformers
where that is installed, torchvision, matplotlib, ...). ``-X importtime`` slows imports; the
shares, not the sums, are the result.

    python scripts/import_chain.py                       # this interpreter, 3 rounds
    python scripts/import_chain.py --python /venv/bin/python --label "with transformers"

Writes benchmarks/results/import_chain_<date>.{json,md}.
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

from measure import RESULTS, result_header, write_results

from lightspeed import hardware

ROOT = Path(__file__).resolve().parents[1]
STATEMENTS = {
    "torch": "import torch",
    "lightning": "import lightning",
    "this project": "import lightspeed.cli, lightspeed.session, myproject.classifier, "
    "myproject.idx_datamodule, myproject.nets",
}
START = "interpreter start-up"  # site, encodings, ...: before the code runs
LINE = re.compile(r"import time:\s+(\d+) \|\s+(\d+) \|( *)(\S+)")


def one_round(python: str) -> dict[str, dict[str, float]]:
    """Seconds of own import time by statement and top-level package, for one fresh process."""
    code = "; ".join(STATEMENTS.values())
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(
            filter(None, [str(ROOT / "src"), os.environ.get("PYTHONPATH")])
        ),
    }
    done = subprocess.run(
        [python, "-X", "importtime", "-c", code], capture_output=True, text=True, env=env
    )
    if done.returncode:
        raise RuntimeError(done.stderr.strip().splitlines()[-1])
    return attribute(done.stderr)


def attribute(importtime: str) -> dict[str, dict[str, float]]:
    """``-X importtime`` output → seconds of own import time by statement and package."""
    rows = [m.groups() for m in map(LINE.match, importtime.splitlines()) if m]
    # a module's line comes after the modules it imported; a top-level line (no indent) closes
    # the group of one statement's imports, in statement order
    per: dict[str, dict[str, float]] = {k: defaultdict(float) for k in [*STATEMENTS, START]}
    names, group = list(STATEMENTS), []
    for own, _cumulative, indent, module in rows:
        group.append((module, int(own) / 1e6))
        if len(indent) <= 1:  # an import the -c code made itself (one space, no nesting)
            stmt = next((n for n in names if module.split(".")[0] in owner(n)), None)
            for mod, seconds in group:
                per[stmt or START][mod.split(".")[0]] += seconds
            group = []
    return per


def owner(statement: str) -> set[str]:
    """The top-level names whose own line ends that statement's group of imports."""
    return {"torch": {"torch"}, "lightning": {"lightning"}}.get(
        statement, {"lightspeed", "myproject"}
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--python", default=sys.executable, help="interpreter to measure")
    parser.add_argument("--label", default="", help="what is special about that interpreter")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--top", type=int, default=8, help="packages listed per statement")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()

    rounds = [one_round(args.python) for _ in range(args.rounds)]
    result = {
        **result_header("import time by statement and package (-X importtime)", hardware.report()),
        "python": args.python,
        "label": args.label,
        "rounds": args.rounds,
        "statements": {},
    }
    for stmt in STATEMENTS:
        packages = {p for r in rounds for p in r[stmt]}
        medians = {p: statistics.median(r[stmt].get(p, 0.0) for r in rounds) for p in packages}
        totals = [sum(r[stmt].values()) for r in rounds]
        result["statements"][stmt] = {
            "code": STATEMENTS[stmt],
            "total_s": round(statistics.median(totals), 2),
            "packages_s": {
                p: round(s, 3) for p, s in sorted(medians.items(), key=lambda kv: -kv[1])
            },
        }
    path = write_results(result, markdown(result, args.top), "import_chain", False, args.out)
    print(markdown(result, args.top))
    print(f"wrote {path}.{{json,md}}")
    return 0


def markdown(r: dict, top: int) -> str:
    lines = [
        f"# {r['benchmark']}",
        "",
        f"- date: {r['date']}; command: `{r['command']}`",
        f"- hardware: {hardware.one_line(r['hardware'])}",
        f"- interpreter: `{r['python']}`" + (f" ({r['label']})" if r["label"] else ""),
        f"- medians of {r['rounds']} fresh processes; `-X importtime` slows imports, so read "
        "the shares",
        "",
        "| statement | own import time, s | largest packages it loads (s) |",
        "|---|---|---|",
    ]
    for v in r["statements"].values():
        shown = ", ".join(f"{p} {s:.2f}" for p, s in list(v["packages_s"].items())[:top])
        lines.append(f"| `{v['code']}` | {v['total_s']:.2f} | {shown} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
