"""SFT and DPO datasets from 200 oracle + 100 base-model trajectories of the claims environment."""

import json
from collections import Counter

import pytest

from agentft.collect import CollectConfig, collect
from agentft.datasets import (
    FilterConfig,
    SFTDataset,
    build_sft_dataset,
    export_openai,
    longest_turn_tokens,
    save_sft_dataset,
    split_of,
)
from agentft.errors import UserError
from agentft.lineage import trace
from agentft.preferences import PreferenceConfig, PreferenceDataset, build_dpo_dataset, save_dpo_dataset
from agentft.runner import RunConfig
from agentft.trajectory import read_trajectories

FAST_ENV = {"sandbox": False}


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("runs")
    oracle = collect(
        CollectConfig(env="claims", policy="oracle", out=str(root / "oracle"), n=200, env_kwargs=FAST_ENV)
    ).out
    base = collect(
        CollectConfig(
            env="claims",
            policy="hf:tiny-test",
            out=str(root / "base"),
            n=100,
            env_kwargs=FAST_ENV,
            policy_kwargs={"max_new_tokens": 12},
            run=RunConfig(max_steps=3, batch_size=50),
        )
    ).out
    return oracle, base


def test_sft_dataset_filters_splits_by_task_and_trains_with_trl(runs, tmp_path, tiny):
    oracle, base = runs
    dataset = build_sft_dataset([oracle, base], tokenizer=tiny[1])
    assert dataset.drops["not_successful"] == 100
    assert 0 < dataset.drops["duplicate"] < 20  # handbook questions repeat across tasks; those rows add nothing
    assert len(dataset.train) + len(dataset.validation) == 200 - dataset.drops["duplicate"]
    tasks = {split: {r["trajectory_id"] for r in getattr(dataset, split)} for split in ("train", "validation")}
    records = {t.id: t for t in read_trajectories(oracle / "trajectories.jsonl")}
    train_tasks = {records[i].task_id for i in tasks["train"]}
    validation_tasks = {records[i].task_id for i in tasks["validation"]}
    assert validation_tasks and not train_tasks & validation_tasks
    row = dataset.train[0]
    assert isinstance(row["tools"], str) and json.loads(row["tools"])[0]["type"] == "function"
    calls = [c for m in row["messages"] if m.get("tool_calls") for c in m["tool_calls"]]
    assert calls and all(isinstance(c["function"]["arguments"], str) for c in calls)
    out = save_sft_dataset(dataset, tmp_path / "sft")
    card = (out / "README.md").read_text()
    assert "not_successful | 100" in card and "## Slices" in card and "segment" in card and "Token lengths" in card
    manifest = json.loads((out / "manifest.json").read_text())
    assert len(manifest["inputs"]) == 2 and manifest["config"]["trajectory_ids"]["train"]

    # TRL's SFTTrainer accepts it, with the loss on assistant tokens only.
    from datasets import load_from_disk
    from trl import SFTConfig, SFTTrainer

    model, tokenizer = tiny
    hf = load_from_disk(str(out / "hf"))
    trainer = SFTTrainer(
        model=model,
        processing_class=tokenizer,
        train_dataset=hf["train"].select(range(4)),
        args=SFTConfig(
            output_dir=str(tmp_path / "trl"),
            max_steps=1,
            per_device_train_batch_size=2,
            assistant_only_loss=True,
            report_to=[],
            use_cpu=True,
            bf16=False,
            max_length=None,
            logging_steps=1,
            save_strategy="no",
            gradient_checkpointing=False,
        ),
    )
    first = trainer.train_dataset[0]
    trained = [label for label in first["labels"] if label != -100]  # TRL 1.x masks non-assistant labels
    assert 0 < len(trained) < len(first["input_ids"]) / 2
    assert trainer.train().training_loss > 0


def test_filters_count_each_drop_reason(runs):
    oracle, base = runs
    once = build_sft_dataset([oracle])
    twice = build_sft_dataset([oracle, oracle / "trajectories.jsonl"])  # the same records twice
    assert twice.drops == {"duplicate": once.drops["duplicate"] + 200}
    everything = build_sft_dataset(
        [base],
        filters=FilterConfig(
            require_success=False, require_compliant=False, statuses=("completed", "max_steps", "error")
        ),
    )
    # The base model's replies are mostly empty (no text, no calls): never a training target, whatever the filters,
    # and counted. The rest of the garbage is kept (near-duplicates may collapse).
    kept = len(everything.train) + len(everything.validation)
    assert kept + everything.drops["empty_reply"] >= 90
    assert set(everything.drops) <= {"empty_reply", "duplicate"}
    with pytest.raises(UserError, match="needs the target model's tokenizer"):
        build_sft_dataset([oracle], filters=FilterConfig(max_tokens=100))


def test_rows_that_all_hash_to_validation_are_trained_on(runs):
    """A handful of rows (served feedback) can all fall in the validation split: they become train rows,
    rather than an error saying that no rows are left."""
    oracle, _ = runs
    every_row = build_sft_dataset([oracle], validation_fraction=1.0)
    assert every_row.train and not every_row.validation


def test_token_length_filter(runs, tiny):
    oracle, _ = runs
    dataset = build_sft_dataset([oracle], filters=FilterConfig(max_tokens=400), tokenizer=tiny[1])
    assert dataset.drops["too_long"] > 0
    assert dataset.stats["tokens"]["max"] <= 400


def test_the_longest_turn_is_measured_in_the_tokens_the_model_generates(runs, tiny):
    oracle, _ = runs
    tokenizer = tiny[1]
    trajectories = list(read_trajectories(oracle / "trajectories.jsonl"))
    longest = max(
        (m for t in trajectories for m in t.messages if m.role == "assistant" and m.content and not m.tool_calls),
        key=lambda m: len(tokenizer(m.content)["input_ids"]),
    )
    said = len(tokenizer(longest.content + "<|im_end|>\n", add_special_tokens=False)["input_ids"])
    measured = longest_turn_tokens(trajectories, tokenizer)
    assert measured >= said  # turns with a tool call are longer still
    assert measured == build_sft_dataset([oracle], tokenizer=tokenizer).stats["tokens"]["longest_turn"]
    said_only = [[m for m in t.messages if m.role != "assistant" or not m.tool_calls] for t in trajectories]
    only_words = [
        t.model_copy(update={"messages": messages}) for t, messages in zip(trajectories, said_only, strict=True)
    ]
    assert longest_turn_tokens(only_words, tokenizer) == said


def test_dpo_pairs_diverge_at_the_first_bad_turn(runs, tmp_path):
    oracle, base = runs
    dataset = build_dpo_dataset([oracle, base])
    oracle_ids = {t.id for t in read_trajectories(oracle / "trajectories.jsonl")}
    oracle_by_id = {t.id: t for t in read_trajectories(oracle / "trajectories.jsonl")}
    base_by_id = {t.id: t for t in read_trajectories(base / "trajectories.jsonl")}
    # One pair per failing base episode; identical pairs (a handbook question asked twice, answered alike) once.
    distinct = {json.dumps([m.content for m in t.messages]) for t in base_by_id.values()}
    assert dataset.stats["pairs"] == len(distinct) and len(distinct) >= 95
    for row in dataset.rows:
        source = row["source"]
        assert source["chosen_trajectory"] in oracle_ids and source["kind"] == "step"
        n = source["message_index"]
        good, bad = oracle_by_id[source["chosen_trajectory"]], base_by_id[source["rejected_trajectory"]]
        assert len(row["prompt"]) == n
        assert [m["content"] for m in row["prompt"]] == [m.content for m in bad.messages[:n]]
        assert [m["content"] for m in row["prompt"]] == [m.content for m in good.messages[:n]]
        assert row["chosen"] != row["rejected"]
        assert row["chosen"][0]["role"] == row["rejected"][0]["role"] == "assistant"
        chosen_calls = [
            (c["function"]["name"], json.loads(c["function"]["arguments"]))
            for c in row["chosen"][0].get("tool_calls") or []
        ]
        good_turn = good.messages[n]
        assert chosen_calls == [(c.function.name, c.function.arguments) for c in good_turn.tool_calls]
        assert row["chosen"][0].get("content") == good_turn.content
    out = save_dpo_dataset(dataset, tmp_path / "dpo")
    assert sum(1 for _ in (out / "train.jsonl").open()) == len(distinct)


def test_perturbation_and_whole_episode_pairs(runs):
    oracle, base = runs
    perturbed = build_dpo_dataset([oracle], PreferenceConfig(step_pairs=False, perturbations=True))
    kinds = perturbed.stats["by_kind"]
    assert kinds["skip_confirmation"] > 0 and kinds["skip_verification"] > 0
    row = next(r for r in perturbed.rows if r["source"]["kind"] == "skip_confirmation")
    assert "confirm" in row["chosen"][0]["content"] and row["rejected"][0]["tool_calls"]
    # Every perturbation has its mirror one step on, with the two turns swapped.
    assert kinds["ask_again"] == kinds["skip_confirmation"] and kinds["verify_again"] == kinds["skip_verification"]
    mirror = next(
        r
        for r in perturbed.rows
        if r["source"]["kind"] == "ask_again" and r["source"]["chosen_trajectory"] == row["source"]["chosen_trajectory"]
    )
    assert mirror["chosen"] == row["rejected"] and mirror["rejected"] == row["chosen"]
    assert mirror["prompt"][: len(row["prompt"]) + 1] == row["prompt"] + row["chosen"]
    assert mirror["prompt"][-1]["role"] == "user"  # the yes
    again = next(r for r in perturbed.rows if r["source"]["kind"] == "verify_again")
    assert again["rejected"][0]["tool_calls"][0]["function"]["name"] == "verify_identity"
    assert again["prompt"][-1]["role"] == "tool" and "verified" in again["prompt"][-1]["content"]
    whole = build_dpo_dataset([oracle, base], PreferenceConfig(step_pairs=False, whole_episodes=True))
    distinct = {json.dumps([m.content for m in t.messages]) for t in read_trajectories(base / "trajectories.jsonl")}
    assert whole.stats["by_kind"] == {"episode": len(distinct)}
    assert all(len(r["prompt"]) == 2 for r in whole.rows)


def test_step_mirrors_reject_the_chosen_words_where_another_task_says_otherwise(runs):
    """A model that looks up someone else's claim gives the pair "refuse > look up"; its mirror rejects the
    refusal in another task whose expert, at the same turn with the same tool calls, says something else."""
    from agentft.preferences import mine_pairs

    oracle, _ = runs
    goods = list(read_trajectories(oracle / "trajectories.jsonl"))
    refusal, n = next(
        (t, n)
        for t in goods
        for n, m in enumerate(t.messages)
        if m.role == "assistant" and "own account" in (m.content or "")
    )
    words = refusal.messages[n].content
    bad = refusal.model_copy(deep=True)
    bad.id, bad.messages[n].content = "bad", "I will look up that claim for you."
    bad.score = bad.score.model_copy(update={"success": False})
    rows = [pair.row() for pair in mine_pairs([*goods, bad], PreferenceConfig(step_mirrors=True))]
    assert [r["source"]["kind"] for r in rows] == ["step", "step_mirror"]
    step, mirror = rows
    assert step["chosen"][0]["content"] == words and mirror["rejected"][0]["content"] == words
    assert mirror["source"]["task_id"] != refusal.task_id and mirror["chosen"][0]["content"] != words
    assert len(mirror["prompt"]) == n and mirror["prompt"][-1]["role"] == "tool"  # after the identity check
    names = [
        [c["function"]["name"] for c in turn[0].get("tool_calls") or []]
        for turn in (mirror["chosen"], mirror["rejected"])
    ]
    assert names[0] == names[1]  # the same calls: only the words differ
    assert [r.source.kind for r in mine_pairs([*goods, bad])] == ["step"]  # off by default
    bad.messages[n].tool_calls = refusal.messages[n - 2].tool_calls  # a pair that differs in its calls: no mirror
    assert [r.source.kind for r in mine_pairs([*goods, bad], PreferenceConfig(step_mirrors=True))] == ["step"]


def test_openai_export_and_lineage(runs, tmp_path):
    oracle, _ = runs
    out = save_sft_dataset(build_sft_dataset([oracle]), tmp_path / "sft")
    count = export_openai(out, tmp_path / "openai.jsonl")
    first = json.loads((tmp_path / "openai.jsonl").read_text().splitlines()[0])
    assert count > 0 and first["tools"][0]["type"] == "function"
    assert all(v is not None for m in first["messages"] for v in m.values())
    tree = trace(out)
    assert tree["kind"] == "dataset" and tree["inputs"][0]["status"] == "ok"
    assert tree["upstream"][0]["kind"] == "collect" and "policy=oracle" in tree["upstream"][0]["summary"]
    (oracle / "trajectories.jsonl").open("a").write("\n")
    assert trace(out)["inputs"][0]["status"] == "changed"


def test_a_dataset_write_that_fails_halfway_keeps_the_previous_dataset(tmp_path):
    old = {name: f'{{"old": "{name}"}}\n' for name in ("train", "validation")}
    for name, text in old.items():
        (tmp_path / f"{name}.jsonl").write_text(text)
    bad = SFTDataset(
        train=[{"ok": 1}], validation=[{"ok": 2}, {"unserializable": object()}], drops=Counter(), sources=[], config={}
    )
    with pytest.raises(TypeError):
        save_sft_dataset(bad, tmp_path)
    with pytest.raises(TypeError):
        save_dpo_dataset(
            PreferenceDataset(rows=[{"ok": 1}, {"unserializable": object()}], sources=[], config={}), tmp_path
        )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["train.jsonl", "validation.jsonl"]  # no temporary left
    assert {name: (tmp_path / f"{name}.jsonl").read_text() for name in old} == old


def test_split_is_stable():
    assert split_of("claims-train-0001", 0.1) == split_of("claims-train-0001", 0.1)
    share = sum(split_of(f"t{i}", 0.1) == "validation" for i in range(2000)) / 2000
    assert 0.07 < share < 0.13


def test_scrubbed_dataset_holds_no_original_personal_data(runs, monkeypatch):
    oracle, _ = runs
    originals = set()
    for t in read_trajectories(oracle / "trajectories.jsonl"):
        for call in (c for m in t.messages if m.role == "assistant" for c in m.tool_calls):
            if call.function.name == "verify_identity":
                originals.add(call.function.arguments["email"])
    assert originals
    first = build_sft_dataset([oracle], scrub=True, scrub_key="k")
    text = json.dumps(first.train + first.validation)
    assert not [email for email in originals if email in text]
    assert first.stats["scrubbed"]["EMAIL"] > 0 and first.config["scrub_key_fixed"]
    again = build_sft_dataset([oracle], scrub=True, scrub_key="k")
    assert again.train == first.train  # a fixed key gives the same fakes every build


def test_a_task_and_its_augmented_variants_fall_on_the_same_side(tmp_path):
    from agentft.augment import original_task_id

    out = collect(
        CollectConfig(env="claims", policy="oracle", out=str(tmp_path / "aug"), n=18, augment=2, env_kwargs=FAST_ENV)
    ).out
    records = {t.id: t for t in read_trajectories(out / "trajectories.jsonl")}
    dataset = build_sft_dataset([out], validation_fraction=0.5)
    sides = {
        split: {original_task_id(records[r["trajectory_id"]].task_id) for r in getattr(dataset, split)}
        for split in ("train", "validation")
    }
    assert sides["train"] and sides["validation"] and not sides["train"] & sides["validation"]
    assert any("~aug" in records[r["trajectory_id"]].task_id for r in dataset.train)


TOY = "agentft.toy_env:OrdersEnvironment"


@pytest.fixture
def toy_run(tmp_path):
    return collect(CollectConfig(env=TOY, policy="oracle", out=str(tmp_path / "toy"), n=10)).out


@pytest.mark.parametrize(
    "tail",
    [b'{"schema_version": 1, "id": "cut-he', b"\x00" * 4096, b"\x00" * 100 + b"\n" + b"\x00" * 100 + b"\n"],
    ids=["torn_line", "nul_block", "nul_block_with_newlines"],
)
def test_a_torn_or_zero_filled_end_is_counted_and_printed_not_dropped_silently(toy_run, tmp_path, tail):
    from typer.testing import CliRunner

    from agentft.cli import app

    source = toy_run / "trajectories.jsonl"
    with source.open("ab") as handle:
        handle.write(tail)
    dataset = build_sft_dataset([toy_run], validation_fraction=0.0)
    assert dataset.drops["torn_line"] == 1 and dataset.stats["torn_files"] == [str(source)]
    assert len(dataset.train) == 10  # every whole record is still there
    result = CliRunner().invoke(app, ["dataset", "sft", "--from", str(toy_run), "--out", str(tmp_path / "sft")])
    assert result.exit_code == 0, result.output
    assert "torn_line 1" in result.output and "dropped: none" not in result.output
    assert str(source) in result.output.replace("\n", "")
    card = (tmp_path / "sft" / "README.md").read_text()
    assert "| torn_line | 1 |" in card
    # DPO mining reads the same sources and says the same.
    assert build_dpo_dataset([toy_run], PreferenceConfig(perturbations=True)).stats["torn_files"] == [str(source)]
    result = CliRunner().invoke(
        app, ["dataset", "dpo", "--from", str(toy_run), "--out", str(tmp_path / "dpo"), "--perturb"]
    )
    assert result.exit_code == 0, result.output
    assert "torn or zero-filled" in result.output and str(source) in result.output.replace("\n", "")


def _break(trajectory, how):
    """One well-formed toy episode made structurally broken in one way."""
    from agentft.messages import AssistantMessage, ToolMessage

    messages = list(trajectory.messages)
    first_call = next(i for i, m in enumerate(messages) if isinstance(m, AssistantMessage) and m.tool_calls)
    result = next(i for i, m in enumerate(messages) if isinstance(m, ToolMessage))
    if how == "result_without_call":  # the tool result comes before the call it answers
        messages.insert(first_call, messages.pop(result))
    elif how == "no_assistant_turn":
        messages = [m for m in messages if not isinstance(m, AssistantMessage | ToolMessage)]
    elif how == "call_without_result":
        del messages[result]
    elif how == "undeclared_tool":
        call = messages[first_call].tool_calls[0]
        broken = call.model_copy(update={"function": call.function.model_copy(update={"name": "delete_everything"})})
        messages[first_call] = messages[first_call].model_copy(update={"tool_calls": [broken]})
    return trajectory.model_copy(update={"messages": messages, "id": f"{trajectory.id}-{how}"})


@pytest.mark.parametrize("how", ["result_without_call", "no_assistant_turn", "call_without_result", "undeclared_tool"])
def test_structurally_broken_records_are_dropped_as_malformed(toy_run, tmp_path, how):
    from agentft.trajectory import TrajectoryWriter, structure_problem

    good = list(read_trajectories(toy_run / "trajectories.jsonl"))
    assert all(structure_problem(t) is None for t in good)
    broken = _break(good[0], how)
    assert structure_problem(broken) == how
    with TrajectoryWriter(tmp_path / "broken.jsonl") as writer:
        writer.write_batch([broken, *good[1:]])
    dataset = build_sft_dataset([tmp_path / "broken.jsonl"], validation_fraction=0.0)
    assert dict(dataset.drops) == {f"malformed:{how}": 1}
    assert broken.id not in {row["trajectory_id"] for row in dataset.train} and len(dataset.train) == 9


def test_a_reply_that_ends_in_tool_calls_is_a_whole_turn_not_malformed(toy_run):
    from agentft.messages import AssistantMessage
    from agentft.trajectory import structure_problem

    good = next(read_trajectories(toy_run / "trajectories.jsonl"))
    first_call = next(i for i, m in enumerate(good.messages) if isinstance(m, AssistantMessage) and m.tool_calls)
    served = good.model_copy(update={"messages": good.messages[: first_call + 1]})
    assert structure_problem(served) is None


def _empty_last_reply(trajectory, content):
    """A served turn cut off before any output: the last assistant reply holds neither text nor tool calls."""
    from agentft.messages import AssistantMessage

    last = trajectory.messages[-1]
    assert isinstance(last, AssistantMessage) and not last.tool_calls and last.content
    messages = [*trajectory.messages[:-1], AssistantMessage(content=content)]
    return trajectory.model_copy(update={"messages": messages, "id": f"{trajectory.id}-empty"})


@pytest.mark.parametrize("content", ["", None, " \n"], ids=["empty", "null", "blank"])
def test_an_empty_assistant_reply_is_never_a_training_target(toy_run, tmp_path, content):
    from agentft.messages import AssistantMessage
    from agentft.trajectory import TrajectoryWriter

    good = list(read_trajectories(toy_run / "trajectories.jsonl"))
    empty = _empty_last_reply(good[0], content)
    # The same empty turn as context only (weight 0) is not a target: that episode stays.
    context = empty.model_copy(
        update={
            "messages": [*empty.messages[:-1], AssistantMessage(content=content, weight=0), good[1].messages[-1]],
            "id": f"{good[1].id}-context",
        }
    )
    with TrajectoryWriter(tmp_path / "served.jsonl") as writer:
        writer.write_batch([empty, context, *good[2:]])
    dataset = build_sft_dataset([tmp_path / "served.jsonl"], validation_fraction=0.0)
    assert dict(dataset.drops) == {"empty_reply": 1}
    assert empty.id not in {row["trajectory_id"] for row in dataset.train} and len(dataset.train) == 9
    for row in dataset.train:
        assert all(m["content"] or m.get("tool_calls") for m in row["messages"] if m.get("weight") == 1)
    # DPO: a pair whose chosen reply is empty is dropped and counted; its rejected side may be anything.
    failed = good[0].model_copy(
        update={"id": f"{good[0].id}-failed", "score": good[0].score.model_copy(update={"success": False})}
    )
    wrong = _empty_last_reply(failed, "wrong")
    with TrajectoryWriter(tmp_path / "pairs.jsonl") as writer:
        writer.write_batch([empty, wrong])
    pairs = build_dpo_dataset([tmp_path / "pairs.jsonl"], PreferenceConfig())
    assert pairs.stats["pairs"] == 0 and pairs.stats["dropped"] == {"empty_reply": 1}
    with TrajectoryWriter(tmp_path / "fine.jsonl") as writer:
        writer.write_batch([good[0], _empty_last_reply(failed, "")])
    pairs = build_dpo_dataset([tmp_path / "fine.jsonl"], PreferenceConfig())
    assert pairs.stats["pairs"] == 1 and pairs.stats["dropped"] == {}
