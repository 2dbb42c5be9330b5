"""The main job from Python: `agentft quickstart` (= `make demo`) with its stages, figures and report.

Run: python examples/09_quickstart.py [--budget fast|default] [--model smollm2-135m] [--out DIR]
`--budget fast` runs every stage with small counts in a few minutes; `default` is the measured run
(about 12 minutes with native bf16, README). Rerunning with the same --out resumes stage by stage.
"""

import argparse
import tempfile
from pathlib import Path

from agentft.quickstart import run_quickstart

parser = argparse.ArgumentParser()
parser.add_argument("--budget", default="fast", choices=("fast", "default"))
parser.add_argument("--model", default="smollm2-135m", help="embedded model name or local model directory")
parser.add_argument("--out", default=None)
args = parser.parse_args()
out = Path(args.out or tempfile.mkdtemp(prefix="agentft-quickstart-"))

summary = run_quickstart(out=out, model=args.model, budget=args.budget)
for name in ("base", "sft", "dpo"):
    run = summary[name]
    print(
        f"{name:>4}: success {run['success_rate']:.0%}, compliance {run['compliance_rate']:.0%}, "
        f"violations {run['violations_by_rule'] or 'none'}"
    )
print("seconds per stage:", summary["timings"])
print(f"summary: {out / 'summary.json'}; side-by-side report: {out / 'report.html'}")
