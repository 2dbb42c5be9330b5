"""Evaluate two policies on the test split and compare them in one HTML report (base vs tuned, in miniature).

Run: python examples/05_evaluate.py [--out DIR]
The same as `agentft eval --env ENV --policy oracle --split test --k 2 --out DIR/oracle` (and noop), then
`agentft report DIR/oracle DIR/noop --out DIR/compare.html`. Any policy spec works (hf:..., openai:...).
"""

import argparse
import tempfile
from pathlib import Path

from agentft.collect import CollectConfig
from agentft.evaluate import evaluate
from agentft.report import load_runs, write_report
from agentft.runner import RunConfig

parser = argparse.ArgumentParser()
parser.add_argument("--out", default=None)
args = parser.parse_args()
out = Path(args.out or tempfile.mkdtemp(prefix="agentft-eval-"))

for policy in ("oracle", "noop"):
    config = CollectConfig(
        env="agentft.toy_env:OrdersEnvironment",
        policy=policy,
        out=str(out / policy),
        split="test",
        run=RunConfig(batch_size=16, max_steps=8),
    )
    summary = evaluate(config, k=2)
    pass_hat = ", ".join(f"pass^{k} {v:.0%}" for k, v in summary.pass_hat_k.items())
    print(
        f"{policy:>6}: {summary.episodes} episodes over {summary.tasks} tasks; "
        f"success {summary.success_rate:.0%}, compliance {summary.compliance_rate:.0%}, {pass_hat}; "
        f"violations {summary.violations_by_rule or 'none'}"
    )
    print(f"        wrote {out / policy}/summary.json and report.html")

report = write_report(out / "compare.html", load_runs([out / "oracle", out / "noop"]), title="oracle vs noop")
print(f"comparison report: {report}")
