"""Your own environment, start to finish: a travel-expense approvals desk written with `agentft.authoring` alone,
then oracle demonstrations -> SFT dataset -> LoRA SFT -> evaluation -> the guard -> a served agent run with it.

Run: python examples/11_own_environment.py [--model tiny-test] [--steps 2] [--out DIR]
The domain (tools, seed data, policy, three rules, three task kinds in disjoint splits) is the first half of this
file; the README's "Your own environment" explains each part. The environment lives in this script, so it runs
with sandbox=False (a sandbox worker re-imports the environment's module; a script is not importable): put yours in
a package (`agentft env new NAME` scaffolds one) and keep the sandbox. With the random tiny model the tuned
scores are near zero; `--model smollm2-135m --steps 60` is a real (CPU, some minutes) run.
"""

import argparse
import json
import random
import sqlite3
import tempfile
from pathlib import Path
from typing import Literal

import httpx

from agentft import CollectConfig, RunConfig, ScriptedPolicy, collect, evaluate, run_episodes
from agentft.authoring import (
    CONFIRM_BEFORE_WRITE,
    SPLITS,
    Audit,
    DatabaseEnvironment,
    IdentityCheck,
    Rule,
    SolutionCall,
    SolutionTurn,
    Task,
    ToolError,
    Toolkit,
    UserSettings,
    Violation,
    tool,
    verify_first,
)
from agentft.datasets import build_sft_dataset, save_sft_dataset
from agentft.runner import plan_episodes
from agentft.serve import ServeConfig, create_app
from agentft.testing import serve_in_thread
from agentft.train import SFTTrainConfig, build_config, train_sft

# --- the domain: tools over a SQLite state ----------------------------------------------------------------------
LIMITS = {"hotel": 220, "meals": 60, "rail": 150}  # per report, in EUR


class ExpenseTools(Toolkit):
    """The approvals desk's internal API. It does not enforce the policy: the rules below score that."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        super().__init__()
        self.conn = conn
        self.conn.row_factory = sqlite3.Row

    def _report(self, report_id: str) -> sqlite3.Row:
        row = self.conn.execute("SELECT * FROM reports WHERE report_id = ?", (report_id.strip().upper(),)).fetchone()
        if row is None:
            raise ToolError(f"no expense report {report_id}")  # the model reads this message
        return row

    @tool(effect="read")
    def verify_employee(self, employee_id: str, pin: str) -> dict:
        """Check an employee's id and PIN.

        Args:
            employee_id: Employee id, e.g. E-104.
            pin: The employee's 4-digit PIN.
        """
        query = "SELECT employee_id FROM employees WHERE employee_id = ? AND pin = ?"
        row = self.conn.execute(query, (employee_id.strip().upper(), pin.strip())).fetchone()
        return {"status": "verified", "employee_id": row["employee_id"]} if row else {"status": "not_verified"}

    @tool(effect="read")
    def get_report(self, report_id: str) -> dict:
        """Look up an expense report.

        Args:
            report_id: Report id, e.g. EXP-5012.
        """
        return dict(self._report(report_id))

    @tool(effect="read")
    def check_policy(self, report_id: str) -> dict:
        """The travel policy's verdict on a submitted report: approve or reject.

        Args:
            report_id: Report id.
        """
        row = self._report(report_id)
        limit = LIMITS[row["category"]]
        return {"verdict": "approve" if row["amount"] <= limit else "reject", "limit": limit}

    @tool(effect="write")
    def decide_report(self, report_id: str, decision: Literal["approve", "reject"], note: str) -> dict:
        """Approve or reject a submitted report.

        Args:
            report_id: Report id.
            decision: approve or reject.
            note: A short reason for the employee.
        """
        row = self._report(report_id)
        if row["status"] != "submitted":
            raise ToolError(f"report {row['report_id']} is {row['status']}, not submitted")
        status = {"approve": "approved", "reject": "rejected"}[decision]
        self.conn.execute(
            "UPDATE reports SET status = ?, note = ? WHERE report_id = ?", (status, note, row["report_id"])
        )
        self.conn.commit()
        return {"report_id": row["report_id"], "status": status}


# --- rules: two reusable pieces and one of our own, reading the seed state -------------------------------------
IDENTITY = IdentityCheck("verify_employee", id_field="employee_id")


def decide_by_policy(audit: Audit) -> list[Violation]:
    """Every decision is the policy's verdict (computed from the seed state, not from what the agent read)."""
    violations = []
    for call in audit.calls:
        if call.event.name != "decide_report":
            continue
        report_id = str(call.event.arguments.get("report_id", "")).strip().upper()
        row = audit.state.execute("SELECT category, amount FROM reports WHERE report_id = ?", (report_id,)).fetchone()
        if row is None:
            continue  # no such report: the tool refused it
        verdict = "approve" if row[1] <= LIMITS[row[0]] else "reject"
        if call.event.arguments.get("decision") != verdict:
            violations.append(Violation(rule="decide_by_policy", step=call.event.step, detail=f"policy says {verdict}"))
    return violations


RULES = (
    verify_first(IDENTITY, ["get_report", "check_policy", "decide_report"]),
    CONFIRM_BEFORE_WRITE,
    Rule("decide_by_policy", "A report is approved or rejected only as the travel policy says.", decide_by_policy),
)
POLICY = (
    "You are the travel-expense desk. 1. Verify the employee with verify_employee before anything else; ask for "
    "their employee id and PIN. 2. To decide a report, run check_policy and follow its verdict. 3. Before "
    "decide_report, say what you will do and ask the employee to confirm; act only after a yes."
)

# --- tasks: three kinds, each split on its own employees and its own phrasings ---------------------------------
KINDS = ("status", "approve", "reject")
WORDS = {  # group -> split -> templates (a file of these is what agentft.authoring.load_phrasings checks)
    "status": {
        "train": ["What happened to expense report {rid}?", "Is report {rid} through yet?"],
        "validation": ["Status of report {rid}, please."],
        "test": ["Can you tell me where expense report {rid} stands?"],
    },
    "decide": {
        "train": ["Please process my expense report {rid}.", "Report {rid} is ready for a decision."],
        "validation": ["Could you decide on report {rid}?"],
        "test": ["I submitted report {rid}; can you handle it?"],
    },
    "identity": {
        "train": ["I'm {eid}, PIN {pin}.", "Employee {eid}, PIN {pin}."],
        "validation": ["It's {eid} and my PIN is {pin}."],
        "test": ["This is {eid} with PIN {pin}."],
    },
}
ASK = "Please tell me your employee id and PIN so I can verify you."
PER_KIND = {"train": 8, "validation": 2, "test": 3}


def turn(say: str | None = None, call: str | None = None, match: str = "exact", **arguments) -> SolutionTurn:
    calls = [SolutionCall(name=call, arguments=arguments, match=match)] if call else []
    return SolutionTurn(say=say, calls=calls)


class ExpenseDesk(DatabaseEnvironment):
    name = "expenses"
    tables = ("employees", "reports")  # scored: equal to the gold replay of the solution's writes
    free_text_columns = {"reports": ("note",)}  # the agent's own words for the note count
    system_prompt = POLICY
    rules = RULES
    user = UserSettings(identity_request=(r"\bemployee id\b", r"\bpin\b"))  # what makes the user give identity_reply

    def build_database(self, conn: sqlite3.Connection, rng: random.Random) -> None:
        conn.executescript(
            "CREATE TABLE employees (employee_id TEXT PRIMARY KEY, pin TEXT);"
            "CREATE TABLE reports (report_id TEXT PRIMARY KEY, employee_id TEXT, category TEXT, amount REAL,"
            " status TEXT, note TEXT);"
        )
        numbers = iter(rng.sample(range(1000, 10000), 3 * 60))  # every random choice from rng: reproducible
        for i in range(60):  # each employee: a report under its limit, one over it, one already decided
            employee = f"E-{100 + i}"
            conn.execute("INSERT INTO employees VALUES (?, ?)", (employee, f"{rng.randrange(10000):04d}"))
            under, over, decided = (rng.choice(sorted(LIMITS)) for _ in range(3))
            for category, amount, status in (
                (under, rng.randint(10, LIMITS[under]), "submitted"),
                (over, LIMITS[over] + rng.randint(5, 80), "submitted"),
                (decided, rng.randint(10, 300), rng.choice(["approved", "rejected", "paid"])),
            ):
                row = (f"EXP-{next(numbers)}", employee, category, amount, status, None)
                conn.execute("INSERT INTO reports VALUES (?, ?, ?, ?, ?, ?)", row)

    def make_toolkit(self, conn: sqlite3.Connection) -> ExpenseTools:
        return ExpenseTools(conn)

    def generate_tasks(self, conn: sqlite3.Connection, rng: random.Random) -> dict[str, list[Task]]:
        conn.row_factory = sqlite3.Row
        employees = conn.execute("SELECT * FROM employees ORDER BY rowid").fetchall()
        tasks: dict[str, list[Task]] = {}
        for split in SPLITS:  # each split on its own block of employees
            block, employees = employees[: PER_KIND[split] * len(KINDS)], employees[PER_KIND[split] * len(KINDS) :]
            tasks[split] = [
                self._task(conn, rng, split, index, KINDS[index % len(KINDS)], employee)
                for index, employee in enumerate(block)
            ]
        return tasks

    def _task(self, conn, rng, split: str, index: int, kind: str, employee: sqlite3.Row) -> Task:
        def pick(group: str) -> str:
            return rng.choice(WORDS[group][split])

        under, over, decided = conn.execute(
            "SELECT * FROM reports WHERE employee_id = ? ORDER BY rowid", (employee["employee_id"],)
        ).fetchall()
        eid, pin = employee["employee_id"], employee["pin"]
        verify = turn(call="verify_employee", match="result", employee_id=eid, pin=pin)  # same result counts
        if kind == "status":
            rid = decided["report_id"]
            work = [turn(call="get_report", report_id=rid), turn(f"Report {rid} is {decided['status']}.")]
            opening, must_say = pick("status").format(rid=rid), [rid, decided["status"]]
        else:
            rid, verdict = (under if kind == "approve" else over)["report_id"], kind
            done = {"approve": "approved", "reject": "rejected"}[verdict]
            work = [
                turn(call="check_policy", report_id=rid),
                turn(f"The travel policy says {verdict} for report {rid}. I will {verdict} it. Do you confirm?"),
                turn(call="decide_report", report_id=rid, decision=verdict, note=f"Travel policy: {verdict}."),
                turn(f"Report {rid} is {done}."),
            ]
            opening, must_say = pick("decide").format(rid=rid), [rid, done]
        return Task(
            id=f"expenses-{split}-{index:03d}",
            split=split,
            kind=kind,
            facts={
                "opening": opening,
                "identity_reply": pick("identity").format(eid=eid, pin=pin),
                "answers": {"report": f"Report {rid}."},  # a clarifying "which report?" gets this
                "employee_id": eid,
                "report_id": rid,
            },
            solution=[turn(ASK), verify, *work],
            must_say=must_say,
        )


def load_environment(**kwargs) -> ExpenseDesk:
    return ExpenseDesk(**kwargs)


# --- the workflow ---------------------------------------------------------------------------------------------
def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default="tiny-test", help="embedded model name or local model directory")
    parser.add_argument("--steps", type=int, default=2, help="SFT optimizer steps")
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    out = Path(args.out or tempfile.mkdtemp(prefix="agentft-expenses-"))
    spec, in_process = "__main__:load_environment", {"sandbox": False}  # any pkg.module:factory works the same

    # 1. Oracle demonstrations on the train split (the oracle replays each task's solution).
    demos = collect(CollectConfig(env=spec, policy="oracle", out=str(out / "demos"), env_kwargs=in_process))
    print(f"collected {demos.ran} oracle episodes: {demos.summary.success_rate:.0%} success")

    # 2. SFT rows, split train/validation by task; 3. two LoRA steps on the model.
    data = save_sft_dataset(build_sft_dataset([demos.out], validation_fraction=0.2), out / "sft")
    adapter = out / "adapter"
    sft = train_sft(
        build_config(
            SFTTrainConfig,
            "cpu-small",
            model=args.model,
            data=str(data),
            out=str(adapter),
            max_steps=args.steps,
            logging_steps=1,
            device="cpu",
        )
    )
    print(f"SFT: {sft['steps']} steps, held-out loss {sft['eval_loss_before']:.3f} -> {sft['eval_loss']:.3f}")

    # 4. The test split (employees and phrasings no train task has): the oracle's ceiling and the tuned model.
    for policy in ("oracle", f"hf:{args.model}@{adapter}"):
        summary = evaluate(
            CollectConfig(
                env=spec,
                policy=policy,
                out=str(out / ("eval-oracle" if policy == "oracle" else "eval-tuned")),
                split="test",
                env_kwargs=in_process,
                policy_kwargs={"max_new_tokens": 48},
                run=RunConfig(max_steps=6, batch_size=16, guard=True),
            )
        )
        print(
            f"{policy}: success {summary.success_rate:.0%}, compliance {summary.compliance_rate:.0%}, "
            f"guard blocks {summary.guard_blocks_by_rule or 'none'}"
        )

    # 5. The guard at work: an agent that decides without asking first. The write is not executed; the model
    # reads why instead (the same middleware runs under collect, eval and serve).
    env = load_environment(**in_process)
    task = next(t for t in env.tasks("test") if t.kind == "reject")
    calls = [c for t in task.solution for c in t.calls]  # the oracle's calls, without its question
    hasty = [f"<tool_call>{json.dumps({'name': c.name, 'arguments': c.arguments})}</tool_call>" for c in calls]
    [episode] = run_episodes(env, ScriptedPolicy([*hasty, "Done."]), plan_episodes([task]), RunConfig(guard=True))
    [block] = episode.metadata["guard_blocks"]
    print(f"guard blocked {block['tool']} ({block['rules'][0]['rule']}); success {episode.score.success}")

    # 6. Serve the tuned adapter with the guard; one agent run in a fresh episode of a test task.
    task = env.tasks("test")[0]
    config = ServeConfig(model=args.model, adapters={"expenses-sft": str(adapter)}, guard=True, log_dir=None)
    with serve_in_thread(create_app(config, environment=env)) as url:
        response = httpx.post(
            f"{url}/v1/agent/runs",
            json={
                "model": "expenses-sft",
                "messages": [{"role": "user", "content": task.facts["opening"]}],
                "task_id": task.id,
                "max_steps": 4,
                "max_tokens": 48,
            },
            timeout=300,
        )
    response.raise_for_status()
    run = response.json()
    blocks = [rule["rule"] for block in run["guard_blocks"] for rule in block["rules"]]
    print(f"served agent run on {task.id}: {run['status']}, guard blocks {blocks or 'none'}; reply {run['reply']!r}")


if __name__ == "__main__":
    main()
