import re
import warnings

import pytest

from agentft.augment import (
    CONSENTS,
    DATE_STYLES,
    GREETINGS,
    THANKS,
    AugmentConfig,
    AugmentedEnvironment,
    augment_task,
    date_to_words,
    number_to_words,
    verify_augmented,
)
from agentft.collect import CollectConfig, _run_shard, collect
from agentft.envs import Task, load_environment
from agentft.manifest import read_manifest
from agentft.messages import AssistantMessage
from agentft.policies.scripted import NoopPolicy, ScriptedPolicy
from agentft.runner import RunConfig, plan_episodes, run_episodes
from agentft.trajectory import Score, read_trajectories

SIZES = {"n_train_per_kind": 4, "n_validation_per_kind": 2, "n_test_per_kind": 2}
SPLITS = ("train", "validation", "test", "own_words")


@pytest.fixture(scope="module", params=["claims", "helpdesk"])
def env(request):
    return load_environment(request.param, sandbox=False, **SIZES)


def splits_of(env):
    found = []
    for split in SPLITS:
        try:
            env.tasks(split)
        except KeyError:
            continue
        found.append(split)
    return found


@pytest.mark.parametrize(
    "n, words",
    [
        (0, "zero"),
        (7, "seven"),
        (13, "thirteen"),
        (20, "twenty"),
        (21, "twenty-one"),
        (105, "one hundred five"),
        (950, "nine hundred fifty"),
        (2500, "two thousand five hundred"),
        (100_000, "one hundred thousand"),
        (1_000_001, "one million one"),
        (12_345_678, "twelve million three hundred forty-five thousand six hundred seventy-eight"),
        (999_999_999, "nine hundred ninety-nine million nine hundred ninety-nine thousand nine hundred ninety-nine"),
    ],
)
def test_number_to_words(n, words):
    assert number_to_words(n) == words


@pytest.mark.parametrize("bad", [-1, 1_000_000_000, 2.5, True, "12"])
def test_number_to_words_rejects_what_it_cannot_say(bad):
    with pytest.raises(ValueError):
        number_to_words(bad)


def test_date_to_words():
    assert date_to_words("1985-03-12", "day_month_year") == "12 March 1985"
    assert date_to_words("1985-03-12", "month_day_year") == "March 12, 1985"
    assert date_to_words("2000-01-01", "day_month_year") == "1 January 2000"
    assert date_to_words("1999-12-31", "month_day_year") == "December 31, 1999"
    for bad, style in [
        ("1985-02-30", "day_month_year"),
        ("12/03/1985", "day_month_year"),
        ("1985-3-12", "month_day_year"),
        ("19850312", "month_day_year"),
        ("1985-03-12", "iso"),
    ]:
        with pytest.raises(ValueError):
            date_to_words(bad, style)


def test_config_rejects_nonsense():
    from agentft.errors import UserError

    for bad in ({"n": -1}, {"typos": 1.5}, {"consent": -0.1}):
        with pytest.raises(UserError):
            AugmentConfig(**bad)


def test_pools_are_plain_and_every_consent_consents():
    from agentft.sqlite_env import consents

    for text in CONSENTS:
        assert consents(text), text
    for text in GREETINGS + THANKS:
        assert "?" not in text
        for word in ("confirm", "email", "date of birth", "employee id", "pin"):
            assert word not in text.lower(), (text, word)
    for text in GREETINGS + THANKS + CONSENTS:  # no negation, not even inside a word
        assert not re.search(r"no|n't|wait|cancel|stop|never|hold", text.lower()), text
    assert len(GREETINGS) >= 15 and len(THANKS) >= 15 and len(CONSENTS) >= 15


def test_same_seed_same_variants_other_seed_other_variants(env):
    tasks = env.tasks("train")
    config = AugmentConfig(n=3, seed=7)
    first = [augment_task(t, i, config).model_dump() for t in tasks for i in range(3)]
    again = [augment_task(t, i, AugmentConfig(n=3, seed=7)).model_dump() for t in tasks for i in range(3)]
    other = [augment_task(t, i, AugmentConfig(n=3, seed=8)).model_dump() for t in tasks for i in range(3)]
    assert first == again
    assert first != other
    wrapped = [t.model_dump() for t in AugmentedEnvironment(env, AugmentConfig(n=2, verify=False)).tasks("train")]
    assert wrapped == [
        t.model_dump() for t in AugmentedEnvironment(env, AugmentConfig(n=2, verify=False)).tasks("train")
    ]


def _said_as(original: str, augmented: str, value) -> bool:
    """The entity is in the augmented text verbatim, or written in words where that was intended."""
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value) in augmented or number_to_words(value) in augmented
    if value in augmented:
        return True
    return re.fullmatch(r"\d{4}-\d{2}-\d{2}", value) is not None and any(
        date_to_words(value, style) in augmented for style in DATE_STYLES
    )


def test_variants_keep_the_task_and_its_entities(env):
    aug = AugmentedEnvironment(env, AugmentConfig(n=3, verify=False))
    checked = 0
    for split in splits_of(env):
        originals = {t.id: t for t in env.tasks(split)}
        for variant in aug.tasks(split):
            if variant.id in originals:
                continue
            original = originals[variant.facts["augmented_from"]]
            assert variant.id.startswith(f"{original.id}~aug")
            for field in ("solution", "must_say", "kind", "split", "slices", "instruction"):
                assert getattr(variant, field) == getattr(original, field), field
            for key, value in original.facts.items():
                if key not in ("opening", "identity_reply", "consent_reply", "answers"):
                    assert variant.facts[key] == value, key
            entities = list(original.must_say) + [
                value
                for turn in original.solution
                for call in turn.calls
                if call.match != "name"
                for value in call.arguments.values()
                if isinstance(value, str | int)
            ]
            for key in ("opening", "identity_reply"):
                if key not in original.facts:
                    continue
                for entity in entities:
                    if str(entity) in original.facts[key]:
                        assert _said_as(original.facts[key], variant.facts[key], entity), (variant.id, key, entity)
                        checked += 1
    assert checked > 50


def test_each_rewrite_does_what_it_says(env):
    tasks = [t for split in splits_of(env) for t in env.tasks(split)]
    off = dict(typos=0.0, small_talk=0.0, reorder=0.0, amounts_in_words=0.0, dates_in_words=0.0, consent=0.0)
    same = [augment_task(t, 0, AugmentConfig(**off)) for t in tasks]
    assert all(v.facts["opening"] == t.facts["opening"] for t, v in zip(tasks, same, strict=True))
    dates = [(t, augment_task(t, 0, AugmentConfig(**{**off, "dates_in_words": 1.0}))) for t in tasks]
    iso = [(t, v) for t, v in dates if re.search(r"\d{4}-\d{2}-\d{2}", t.facts.get("identity_reply", ""))]
    if env.name == "claims":
        assert iso
    for t, v in iso:
        assert v.facts["identity_reply"] != t.facts["identity_reply"]
    consent = [augment_task(t, 0, AugmentConfig(**{**off, "consent": 1.0})) for t in tasks]
    assert all(v.facts["consent_reply"] in CONSENTS for v in consent)
    typos = [augment_task(t, 0, AugmentConfig(**{**off, "typos": 1.0})) for t in tasks]
    assert sum(v.facts["opening"] != t.facts["opening"] for t, v in zip(tasks, typos, strict=True)) > len(tasks) / 2
    talk = [augment_task(t, 0, AugmentConfig(**{**off, "small_talk": 1.0})) for t in tasks]
    assert all(v.facts["opening"] != t.facts["opening"] for t, v in zip(tasks, talk, strict=True))


def test_amounts_become_words_but_phone_numbers_and_ids_do_not():
    task = Task(
        id="t",
        split="train",
        facts={"opening": "File 2500 dollars on POL-2500, call +1 555 250 2500.", "identity_reply": "Born 1985-03-12."},
        solution=[{"calls": [{"name": "file_claim", "arguments": {"policy_id": "POL-2500", "amount": 2500}}]}],
    )
    variant = augment_task(
        task, 0, AugmentConfig(typos=0, small_talk=0, reorder=0, amounts_in_words=1, dates_in_words=1)
    )
    assert variant.facts["opening"] == "File two thousand five hundred dollars on POL-2500, call +1 555 250 2500."
    assert variant.facts["identity_reply"] in ("Born 12 March 1985.", "Born March 12, 1985.")


def test_the_oracle_solves_every_augmented_task_within_policy(env):
    """The acceptance test: augmentation never changes the gold outcome."""
    aug = AugmentedEnvironment(env, AugmentConfig(n=3, verify=False))
    # Every split, each capped at 36 tasks (own_words has 90 whatever the sizes) to keep this test quick.
    variants = [v for split in splits_of(env) for t in env.tasks(split)[:36] for v in aug.variants(t)]
    assert len(variants) == 3 * sum(len(env.tasks(split)[:36]) for split in splits_of(env))
    records = run_episodes(aug, aug.oracle(), plan_episodes(variants), RunConfig(batch_size=64))
    assert len(records) == len(variants)
    failed = [(r.task_id, r.status, r.score) for r in records if not (r.score.success and r.score.compliant)]
    assert not failed
    assert all(r.env == env.name for r in records)
    train = [v for v in variants if v.split == "train"]
    noop = run_episodes(aug, NoopPolicy(), plan_episodes(train), RunConfig(batch_size=64))
    assert len(noop) == len(train) and not any(r.score.success for r in noop)


def test_wrapper_is_the_environment_plus_variants(env):
    aug = AugmentedEnvironment(env, AugmentConfig(n=2))
    assert aug.name == env.name and aug.seed == env.seed  # other attributes fall through
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # nothing may be dropped on the built-in environments
        tasks = aug.tasks("test")
    originals = env.tasks("test")
    assert len(tasks) == 3 * len(originals) and aug.dropped == {}
    assert [t.id for t in tasks[:3]] == [originals[0].id, f"{originals[0].id}~aug0", f"{originals[0].id}~aug1"]
    assert len({t.facts["opening"] for t in tasks}) == len(tasks)
    only = AugmentedEnvironment(env, AugmentConfig(n=2, keep_original=False, verify=False)).tasks("test")
    assert [t.id for t in only] == [t.id for t in tasks if "~aug" in t.id]


class _DigitsOnly:
    """An environment whose tool would only read amounts written in digits: a variant in words fails."""

    name = "digits"

    def tasks(self, split):
        return [
            Task(
                id=f"d{i}",
                split=split,
                facts={"opening": f"Please pay {amount} dollars to me."},
                solution=[{"calls": [{"name": "pay", "arguments": {"amount": amount}}]}],
            )
            for i, amount in enumerate((2500, 300))
        ]

    def start(self, task, *, seed=0):
        return _DigitsEpisode(task)

    def oracle(self):
        return ScriptedPolicy(["Done."], name="oracle")


class _DigitsEpisode:
    system_prompt = "Pay."
    tools = []

    def __init__(self, task):
        self.task = task

    def user_turn(self, messages):
        return self.task.facts["opening"] if len(messages) <= 1 else None

    def score(self, trajectory):
        return Score(success=any(ch.isdigit() for ch in trajectory.messages[1].content), compliant=True)

    def close(self):
        pass


def test_variants_the_oracle_fails_are_dropped_with_a_warning():
    config = AugmentConfig(n=1, amounts_in_words=1.0, typos=0, small_talk=0, reorder=0)
    aug = AugmentedEnvironment(_DigitsOnly(), config)
    kept, dropped = verify_augmented(aug, "train")
    assert kept == [] and dropped == ["d0~aug0", "d1~aug0"]
    with pytest.warns(UserWarning, match="dropped 2 augmented"):
        tasks = aug.tasks("train")
    assert [t.id for t in tasks] == ["d0", "d1"] and aug.dropped == {"train": ["d0~aug0", "d1~aug0"]}
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # said once, not again on every call
        aug.tasks("train")


def test_tasks_without_an_opening_fact_get_no_variants():
    from agentft.toy_env import OrdersEnvironment

    aug = AugmentedEnvironment(OrdersEnvironment(n_train=4, n_test=2), AugmentConfig(n=2))
    with pytest.warns(UserWarning, match="no variants"):
        assert [t.id for t in aug.tasks("train")] == [
            t.id for t in OrdersEnvironment(n_train=4, n_test=2).tasks("train")
        ]


def test_mapped_oracle_reads_dict_conversations():
    env = load_environment("claims", sandbox=False, **SIZES)
    aug = AugmentedEnvironment(env, AugmentConfig(n=1, small_talk=1.0, verify=False))
    original, variant = aug.tasks("train")[:2]
    conversation = [{"role": "system", "content": "policy"}, {"role": "user", "content": variant.facts["opening"]}]
    reply = aug.oracle().act([conversation])[0].message
    expected = env.oracle().act([[conversation[0], {"role": "user", "content": original.facts["opening"]}]])[0]
    assert isinstance(reply, AssistantMessage) and reply == expected.message


def test_collect_with_augment_runs_each_task_and_its_variants(tmp_path):
    config = CollectConfig(
        env="claims",
        policy="oracle",
        out=str(tmp_path),
        n=4,
        augment=2,
        env_kwargs={"sandbox": False, **SIZES},
        run=RunConfig(batch_size=16),
    )
    result = collect(config)
    assert (result.planned, result.ran, result.dropped) == (12, 12, [])
    records = list(read_trajectories(tmp_path / "trajectories.jsonl"))
    assert len({r.id for r in records}) == 12 and len({r.task_id for r in records}) == 12
    assert sum("~aug" in r.task_id for r in records) == 8
    assert all(r.score.success and r.score.compliant for r in records)
    manifest = read_manifest(tmp_path)
    assert manifest["config"]["augment"] == 2 and manifest["metrics"]["augment_dropped"] == 0
    # A shard worker rebuilds the same variants from the seed (the sharded backends' path).
    shard = tmp_path / "shard.jsonl"
    wanted = sorted((r.task_id, r.attempt, r.seed) for r in records)
    assert _run_shard(config, wanted, str(shard)) == 12
    assert sorted(r.task_id for r in read_trajectories(shard)) == sorted(r.task_id for r in records)


def test_cli_collect_augment(tmp_path):
    from typer.testing import CliRunner

    from agentft.cli import app

    out = tmp_path / "run"
    result = CliRunner().invoke(
        app,
        [
            "collect",
            "--env",
            "claims",
            "--policy",
            "oracle",
            "--n",
            "2",
            "--augment",
            "1",
            "--augment-seed",
            "3",
            "--env-arg",
            "sandbox=false",
            "--env-arg",
            "n_train_per_kind=4",
            "--env-arg",
            "n_validation_per_kind=2",
            "--env-arg",
            "n_test_per_kind=2",
            "--out",
            str(out),
        ],
    )
    assert result.exit_code == 0, result.output
    assert "4 episodes planned" in result.output
    assert read_manifest(out)["config"]["augment_seed"] == 3


def test_the_expert_copies_a_date_the_variant_says_in_words():
    env = load_environment("claims", sandbox=False, **SIZES)
    aug = AugmentedEnvironment(
        env, AugmentConfig(n=1, typos=0, small_talk=0, reorder=0, dates_in_words=1.0, verify=False)
    )
    task = next(t for t in env.tasks("train") if re.search(r"\d{4}-\d\d-\d\d", t.facts.get("identity_reply", "")))
    [variant] = aug.variants(task)
    [record] = run_episodes(aug, aug.oracle(), plan_episodes([variant]))
    verify = next(e for e in record.events if e.name == "verify_identity")
    assert verify.arguments["date_of_birth"] in variant.facts["identity_reply"]
    assert not re.fullmatch(r"\d{4}-\d\d-\d\d", verify.arguments["date_of_birth"])
    assert record.score.success and record.score.compliant
