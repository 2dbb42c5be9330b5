"""The generation engine on tiny-test: cached turns equal full re-encoding, continuous batching equals one at a
time, and a finished or cancelled row frees its slot."""

import os

import pytest
import torch

from agentft.engine import Engine, Request, supports
from agentft.errors import UserError


@pytest.fixture(scope="module")
def model_and_stops(tiny):
    model, tokenizer = tiny
    stops = [tokenizer.convert_tokens_to_ids("<|im_end|>"), tokenizer.eos_token_id]
    return model, tokenizer, stops


def encode(tokenizer, text):
    return tokenizer(text, add_special_tokens=False)["input_ids"]


def hf_greedy(model, prompt, n, stops):
    with torch.inference_mode():
        out = model.generate(
            torch.tensor([prompt]),
            max_new_tokens=n,
            do_sample=False,
            eos_token_id=stops,
            pad_token_id=0,
            temperature=None,
            top_p=None,
            top_k=None,
        )
    return out[0, len(prompt) :].tolist()


PROMPTS = [
    "<|im_start|>system\nYou are the claims desk.<|im_end|>\n<|im_start|>user\nCheck claim CLM-1<|im_end|>\n",
    "<|im_start|>system\nYou are the claims desk.<|im_end|>\n<|im_start|>user\nFile a claim for 300<|im_end|>\n",
    "hello world",
    "a",
    "the quick brown fox jumps over the lazy dog " * 3,
    "<|im_start|>user\nWho am I?<|im_end|>\n",
]


def test_the_engine_supports_full_and_per_layer_sliding_attention_only(model_and_stops):
    model, _, _ = model_and_stops
    assert supports(model)

    def fake(**config):
        return type("M", (), {"config": type("C", (), config)()})()

    assert supports(fake(sliding_window=4, layer_types=["sliding_attention", "full_attention"]))
    assert not supports(fake(layer_types=["chunked_attention"]))
    assert not supports(fake(sliding_window=512))  # a window on every layer, no per-layer types: not read
    with pytest.raises(ValueError, match="sliding-window"):
        Engine(fake(layer_types=["chunked_attention"]), [0])


@pytest.fixture(scope="module")
def tiny_gemma(model_and_stops):
    """A seeded random Gemma 3 (sliding-window and full layers, window 6) on tiny-test's tokenizer."""
    from transformers import Gemma3ForCausalLM, Gemma3TextConfig

    _, tokenizer, stops = model_and_stops
    config = Gemma3TextConfig(
        vocab_size=len(tokenizer),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=3,
        num_attention_heads=4,
        num_key_value_heads=1,
        head_dim=16,
        sliding_window=6,
        layer_types=["sliding_attention", "sliding_attention", "full_attention"],
        pad_token_id=0,
    )
    torch.manual_seed(0)
    return Gemma3ForCausalLM(config).eval(), tokenizer, stops


def test_sliding_window_layers_equal_transformers_generate(tiny_gemma):
    model, tokenizer, stops = tiny_gemma
    assert supports(model)
    prompts = [encode(tokenizer, p) for p in PROMPTS]  # most longer than the window
    limits = [3, 17, 9, 30, 5, 12]
    batched = Engine(model, stops, max_batch=3).run([Request(p, n) for p, n in zip(prompts, limits, strict=True)])
    for prompt, limit, result in zip(prompts, limits, batched, strict=True):
        assert result.tokens == hf_greedy(model, prompt, limit, stops)
    # A second turn continues the first one's cache: still what a full re-encoding gives.
    engine = Engine(model, stops, max_batch=2)
    first = engine.run([Request(prompts[0], 8, session="a")])[0]
    follow = prompts[0] + first.tokens + encode(tokenizer, "<|im_start|>user\nAnd claim CLM-2?<|im_end|>\n")
    second = engine.run([Request(follow, 10, session="a")])[0]
    assert second.cached_tokens >= len(prompts[0]) and second.tokens == hf_greedy(model, follow, 10, stops)


def test_continuous_batching_equals_one_at_a_time_and_transformers_generate(model_and_stops):
    model, tokenizer, stops = model_and_stops
    prompts = [encode(tokenizer, p) for p in PROMPTS]
    limits = [3, 17, 9, 30, 5, 12]  # rows end at different steps: later requests join as they leave
    batched = Engine(model, stops, max_batch=3).run([Request(p, n) for p, n in zip(prompts, limits, strict=True)])
    for prompt, limit, result in zip(prompts, limits, batched, strict=True):
        alone = Engine(model, stops, max_batch=1).run([Request(prompt, limit)])[0]
        assert result.tokens == alone.tokens == hf_greedy(model, prompt, limit, stops)
        assert result.finish == ("stop" if result.tokens[-1] in stops else "length")
        assert result.prompt_tokens == len(prompt)
    # Sampled rows draw from their own seeded generators: the same tokens whatever their neighbours.
    sampled = [Request(p, 20, temperature=1.0, seed=i, logprobs=True) for i, p in enumerate(prompts)]
    together = Engine(model, stops, max_batch=4).run(sampled)
    for request, result in zip(sampled, together, strict=True):
        alone = Engine(model, stops, max_batch=1).run([request])[0]
        assert result.tokens == alone.tokens
        assert result.logprobs == pytest.approx(alone.logprobs, abs=1e-4)
        assert len(result.logprobs) == len(result.tokens) and all(lp <= 0 for lp in result.logprobs)
    assert len({tuple(r.tokens) for r in together}) > 1


def test_turns_reuse_their_cache_and_equal_a_full_reencoding(model_and_stops):
    model, tokenizer, stops = model_and_stops
    kept = Engine(model, stops, max_batch=2, slots=8)
    conversations = [encode(tokenizer, p) for p in PROMPTS[:4]]
    resident = [0] * 4
    for turn in range(3):
        requests = [Request(c, 8 + turn, temperature=0.8, seed=turn * 10 + i) for i, c in enumerate(conversations)]
        cached = kept.run(requests)
        fresh = [Engine(model, stops, max_batch=1).run([r])[0] for r in requests]
        assert [r.tokens for r in cached] == [r.tokens for r in fresh]
        if turn:  # each conversation continues its own resident sequence: only the new tokens are prefilled
            assert [r.cached_tokens for r in cached] == resident
        assert all(r.cached_tokens == 0 for r in fresh)
        # Resident: the prompt and what was generated, but the last token (sampled, never fed back).
        resident = [len(c) + len(r.tokens) - 1 for c, r in zip(conversations, cached, strict=True)]
        # The next turn: the reply (re-encoded), then a tool result, as a chat template would append them.
        conversations = [
            c + r.tokens[:-1] + encode(tokenizer, f"<|im_end|>\n<|im_start|>tool\nresult {turn}<|im_end|>\n")
            for c, r in zip(conversations, cached, strict=True)
        ]
    assert kept.stats["cached_tokens"] > kept.stats["prefill_tokens"]


def test_requests_sharing_an_opening_encode_it_once(model_and_stops):
    model, tokenizer, stops = model_and_stops
    opening = "<|im_start|>system\n" + "You are the claims desk. Follow the rules. " * 8 + "<|im_end|>\n"
    prompts = [encode(tokenizer, opening + f"<|im_start|>user\nclaim {i}<|im_end|>\n") for i in range(5)]
    engine = Engine(model, stops, max_batch=5, slots=8)
    results = engine.run([Request(p, 6) for p in prompts])
    shared = len(encode(tokenizer, opening))
    assert all(r.cached_tokens >= shared - 2 for r in results)
    assert engine.stats["prefill_tokens"] < sum(len(p) for p in prompts) / 2
    assert [r.tokens for r in results] == [hf_greedy(model, p, 6, stops) for p in prompts]


def test_the_vocabulary_projection_sees_contiguous_last_positions_only(model_and_stops):
    """A strided input makes torch's matmul copy the projection's weight once per row (most of a prefill pass
    for a real vocabulary): every pass hands it a contiguous block, one position a row, none when no logits."""
    model, tokenizer, stops = model_and_stops
    seen = []
    hook = model.get_output_embeddings().register_forward_pre_hook(
        lambda module, args: seen.append((tuple(args[0].shape), args[0].is_contiguous()))
    )
    opening = "<|im_start|>system\n" + "You are the claims desk. Follow the rules. " * 8 + "<|im_end|>\n"
    prompts = [encode(tokenizer, opening + f"<|im_start|>user\nclaim {'x ' * i}{i}<|im_end|>\n") for i in range(3)]
    try:
        Engine(model, stops, max_batch=3, draft_tokens=0).run([Request(p, 3) for p in prompts])
    finally:
        hook.remove()
    assert seen[0] == ((1, 0, model.config.hidden_size), True)  # the shared opening: no logits wanted
    assert all(contiguous and shape[1] == 1 for shape, contiguous in seen[1:])
    assert any(shape[0] == 3 for shape, _ in seen[1:])  # the three rows' prefill and decode passes


@pytest.mark.parametrize("queries", [1, 3])
def test_engine_attention_reads_a_shared_prefix_once_with_sdpas_result(queries):
    from types import SimpleNamespace

    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    from agentft.engine_attention import engine_attention

    torch.manual_seed(0)
    batch, kv_heads, groups, width, prefix, dim = 4, 2, 3, 40, 24, 8
    key, value = torch.randn(batch, kv_heads, width, dim), torch.randn(batch, kv_heads, width, dim)
    key[:, :, :prefix], value[:, :, :prefix] = key[:1, :, :prefix], value[:1, :, :prefix]  # one encoding, copied
    query = torch.randn(batch, kv_heads * groups, queries, dim)
    starts = torch.tensor([prefix, 30, prefix + 5, 36])
    positions = starts[:, None] + torch.arange(queries)[None, :]
    allowed = torch.arange(width)[None, None, None, :] <= positions[:, None, :, None]
    mask = torch.zeros(allowed.shape).masked_fill(~allowed, torch.finfo(torch.float32).min)
    module = SimpleNamespace(num_key_value_groups=groups, is_causal=True, sliding_window=None)
    expected, _ = sdpa_attention_forward(module, query, key, value, mask, scaling=dim**-0.5)
    for shared in (0, prefix):
        got, _ = engine_attention(module, query, key, value, mask, scaling=dim**-0.5, shared_prefix=shared)
        torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)


def test_evicted_conversations_are_recomputed_exactly(model_and_stops):
    model, tokenizer, stops = model_and_stops
    engine = Engine(model, stops, max_batch=1, slots=2)  # three conversations, two slots: one gives way
    prompts = [encode(tokenizer, p) for p in PROMPTS[2:5]]
    first = engine.run([Request(p, 5) for p in prompts])
    longer = [p + r.tokens for p, r in zip(prompts, first, strict=True)]
    again = engine.run([Request(p, 5) for p in longer])
    assert [r.tokens for r in again] == [hf_greedy(model, p, 5, stops) for p in longer]
    assert any(r.cached_tokens == 0 for r in again)  # the one that gave way was prefilled again


def test_a_finished_or_cancelled_row_frees_its_slot_at_the_next_step(model_and_stops):
    model, tokenizer, stops = model_and_stops
    engine = Engine(model, stops, max_batch=2, draft_tokens=0)  # one token a step: the steps below count them
    long_a = engine.submit(Request(encode(tokenizer, "a"), 50))
    short = engine.submit(Request(encode(tokenizer, "hello world"), 3))
    queued = engine.submit(Request(encode(tokenizer, "the quick brown fox"), 50))
    engine.step()  # admits two (the prefill samples their first token), decodes their second
    assert engine.active == 2 and queued in engine.waiting
    finished = engine.step()  # the short row reaches its limit and leaves
    assert finished == [short] and short.result.finish == "length" and len(short.result.tokens) == 3
    engine.step()  # the queued request takes the freed slot
    assert queued not in engine.waiting and engine.active == 2
    long_a.cancel()
    finished = engine.step()
    assert long_a in finished and long_a.result.finish == "cancelled"
    assert engine.active == 1
    waiting = engine.submit(Request(encode(tokenizer, "x"), 3))
    waiting.cancel()  # cancelled before it ever ran
    assert waiting in engine.step() and waiting.result.finish == "cancelled" and waiting.result.tokens == []
    while engine.busy:
        engine.step()
    assert queued.result.finish in ("stop", "length")


def test_drafts_from_the_context_give_the_same_tokens_in_fewer_steps(model_and_stops):
    model, tokenizer, stops = model_and_stops
    repetitive = "<|im_start|>user\nclaim CLM-1 claim CLM-1 claim CLM-1 claim<|im_end|>\n" * 3
    prompts = [encode(tokenizer, p) for p in [repetitive, *PROMPTS]]
    limits = [40, 3, 17, 9, 30, 5, 12]
    requests = [Request(p, n) for p, n in zip(prompts, limits, strict=True)]
    plain = Engine(model, stops, max_batch=3, draft_tokens=0)
    drafted = Engine(model, stops, max_batch=3, draft_tokens=4, draft_budget=16)
    expected = plain.run(requests)
    for want, got, prompt, limit in zip(expected, drafted.run(requests), prompts, limits, strict=True):
        assert got.tokens == want.tokens == hf_greedy(model, prompt, limit, stops)
        assert got.finish == want.finish
    assert drafted.stats["accepted_tokens"] > 0 and drafted.stats["draft_tokens"] > drafted.stats["accepted_tokens"]
    assert drafted.stats["decode_steps"] < plain.stats["decode_steps"]
    assert drafted.stats["generated_tokens"] == plain.stats["generated_tokens"]
    # A budget too small for a draft per row, and sampled rows, take one token a step.
    narrow = Engine(model, stops, max_batch=3, draft_budget=3)
    assert [r.tokens for r in narrow.run(requests)] == [r.tokens for r in expected]
    assert narrow.stats["draft_tokens"] == 0
    sampled = [Request(p, 20, temperature=1.0, seed=i) for i, p in enumerate(prompts)]
    engine = Engine(model, stops, max_batch=3)
    assert [r.tokens for r in engine.run(sampled)] == [r.tokens for r in plain.run(sampled)]
    assert engine.stats["draft_tokens"] == 0


def test_min_new_tokens_and_allowed_tokens(model_and_stops):
    model, tokenizer, stops = model_and_stops
    prompt = encode(tokenizer, "hello")
    forced = [5, 6, 7]
    result = Engine(model, stops).run(
        [Request(prompt, 6, min_new_tokens=6, allowed=lambda done: [forced[len(done)]] if len(done) < 3 else None)]
    )[0]
    assert result.tokens[:3] == forced and len(result.tokens) == 6 and not set(result.tokens) & set(stops)
    with pytest.raises(ValueError, match="at least one prompt token"):
        Engine(model, stops).submit(Request([], 5))


def test_the_runner_gives_the_same_episodes_continuous_or_in_lockstep(tiny):
    from agentft.policies.hf import HFPolicy
    from agentft.runner import RunConfig, plan_episodes, run_episodes
    from agentft.toy_env import OrdersEnvironment

    env = OrdersEnvironment(n_train=7)
    specs = plan_episodes(env.tasks("train"), k=2)
    config = RunConfig(max_steps=3, batch_size=5)
    runs = {}
    for continuous in (True, False):
        policy = HFPolicy("tiny-test", loaded=tiny, max_new_tokens=16, batch_size=3, engine=continuous)
        assert policy.continuous is continuous
        trajectories = run_episodes(env, policy, specs, config, policy_name="tiny")
        runs[continuous] = {t.id: [m.model_dump() for m in t.messages] for t in trajectories}
        assert all(t.usage.model_seconds > 0 and t.tokens is None for t in trajectories)  # recorded on request
    assert len(runs[True]) == len(specs) and runs[True] == runs[False]


def assert_token_exact(model, tokenizer, turn, prompt, temperature):
    """The recorded prompt is the rendered one, and the log-probabilities are a plain forward pass's."""
    assert turn.prompt_ids == tokenizer(prompt, add_special_tokens=False)["input_ids"]
    with torch.no_grad():
        logits = model(torch.tensor([turn.prompt_ids + turn.completion_ids])).logits[0].float()
    start = len(turn.prompt_ids) - 1
    expected = torch.log_softmax(logits[start : start + len(turn.completion_ids)] / (temperature or 1.0), dim=-1)
    expected = expected.gather(1, torch.tensor(turn.completion_ids)[:, None])[:, 0]
    assert turn.logprobs == pytest.approx(expected.tolist(), abs=1e-4)
    assert turn.temperature == temperature and (turn.seed is None) == (temperature == 0)


@pytest.mark.parametrize("temperature", [0.0, 0.9])
def test_recorded_turns_are_token_exact(tiny, tmp_path, temperature):
    from agentft.policies.hf import HFPolicy
    from agentft.runner import RunConfig, plan_episodes, run_episodes
    from agentft.toy_env import OrdersEnvironment
    from agentft.trajectory import TrajectoryWriter, load_trajectories

    model, tokenizer = tiny
    policy = HFPolicy(
        "tiny-test", loaded=tiny, max_new_tokens=12, batch_size=3, temperature=temperature, record_tokens=True
    )
    # Turns of growing conversations: the later ones are prefilled from the cache, and still exact.
    conversations = [[{"role": "user", "content": f"Where is order {i}?"}] for i in range(3)]
    for _ in range(3):
        replies = policy.act(conversations, None)
        for conversation, reply in zip(conversations, replies, strict=True):
            assert_token_exact(model, tokenizer, reply.tokens, policy.prompt_text(conversation, None), temperature)
            conversation += [reply.message.model_dump(), {"role": "user", "content": "and then?"}]
    assert policy.engine.stats["cached_tokens"] > policy.engine.stats["prefill_tokens"]
    # Through the runner: every turn of every episode on its trajectory, and on disk.
    env = OrdersEnvironment(n_train=3)
    trajectories = run_episodes(env, policy, plan_episodes(env.tasks("train"), k=2), RunConfig(max_steps=3))
    for trajectory in trajectories:
        turns = [i for i, m in enumerate(trajectory.messages) if m.role == "assistant"]
        assert [t.step for t in trajectory.tokens] == list(range(len(turns)))
        for index, turn in zip(turns, trajectory.tokens, strict=True):
            prompt = policy.prompt_text(trajectory.messages[:index], trajectory.tools)
            assert_token_exact(model, tokenizer, turn, prompt, temperature)
    if temperature:  # two attempts of a task sample differently
        by_task = {}
        for trajectory in trajectories:
            by_task.setdefault(trajectory.task_id, []).append(trajectory.tokens[0].completion_ids)
        assert any(a != b for a, b in by_task.values())
    with pytest.raises(UserError, match="record_tokens needs"):
        HFPolicy("tiny-test", loaded=tiny, engine=False, record_tokens=True)
    with TrajectoryWriter(tmp_path / "t.jsonl") as writer:
        writer.write_batch(trajectories)
    assert [t.tokens for t in load_trajectories(tmp_path / "t.jsonl")] == [t.tokens for t in trajectories]


def test_one_long_request_does_not_keep_every_slot_long(model_and_stops):
    model, tokenizer, stops = model_and_stops
    engine = Engine(model, stops, max_batch=16)
    long_prompt = encode(tokenizer, "the quick brown fox jumps over the lazy dog " * 150)
    assert len(long_prompt) > 1500
    engine.run([Request(long_prompt, 4, session="long")])
    assert engine.cache.capacity >= len(long_prompt)
    # Only a few slots exist yet: one long request does not make sixteen slots that long.
    assert engine.cache.keys[0].shape[:3] == (4, engine.cache.keys[0].shape[1], engine.cache.capacity)
    # Once the long conversation has ended and short ones took its slot, the buffers shrink to fit them.
    engine.release("long")
    short = [encode(tokenizer, f"hello {i}") for i in range(3)]
    results = engine.run([Request(p, 4) for p in short])
    assert engine.cache.capacity <= 1024 and engine.cache.keys[0].shape[2] == engine.cache.capacity
    assert [r.tokens for r in results] == [hf_greedy(model, p, 4, stops) for p in short]


def test_cpu_buffers_are_zeros_that_take_memory_only_where_written():
    from agentft.engine import _SlotCache, _zeros

    statm = "/proc/self/statm"
    if not os.path.exists(statm):
        pytest.skip("no /proc here to read the resident set from")
    resident = lambda: int(open(statm).read().split()[1])  # noqa: E731 (pages)
    before = resident()
    buffer = _zeros((64, 4, 4096, 64), torch.bfloat16, "cpu")  # 128 MiB of address space
    assert buffer.shape == (64, 4, 4096, 64) and buffer.is_contiguous() and not buffer[63, 3].any()
    buffer[0, 0, :16] = 1.0
    assert resident() - before < 2048  # a page or so (and Python's own), not the buffer's 32,768 pages
    assert buffer[0, 0, :16].eq(1).all() and not buffer[0, 1].any()

    cache = _SlotCache(2, 8)
    keys = torch.arange(2 * 1 * 3 * 2, dtype=torch.float32).reshape(2, 1, 3, 2)
    cache.bind(0, 2, torch.tensor([[0, 1, 2], [0, 1, 2]]), 3)
    cache.update(keys, -keys, 0)
    cache.resize(slots=3, capacity=16)  # longer and one more slot: what was stored stays, the rest is zeros
    assert cache.length == 3 and cache.keys[0].shape == (3, 1, 16, 2)
    assert torch.equal(cache.keys[0][:2, 0, :3], keys[:, 0])
    assert torch.equal(cache.values[0][:2, 0, :3], -keys[:, 0]) and not cache.keys[0][2].any()
    assert not cache.keys[0][:, :, 3:].any()
