import os
from pathlib import Path

import pytest

# Never reach a hub; keep model caches inside the checkout so test runs reuse them and never touch ~/.cache.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ.setdefault("AGENTFT_HOME", str(Path(__file__).resolve().parent.parent / ".pytest_cache" / "agentft-home"))
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def tiny():
    """The tiny-test model and tokenizer (built once per cache)."""
    from agentft.testing import tiny_model

    return tiny_model()


@pytest.fixture
def tools():
    return [
        {
            "type": "function",
            "effect": "read",
            "function": {
                "name": "get_claim",
                "description": "Look up a claim.",
                "parameters": {
                    "type": "object",
                    "properties": {"claim_id": {"type": "string", "description": "Claim id"}},
                    "required": ["claim_id"],
                },
            },
        },
        {
            "type": "function",
            "effect": "write",
            "function": {
                "name": "file_claim",
                "description": "File a claim.",
                "parameters": {
                    "type": "object",
                    "properties": {
                        "policy_id": {"type": "string"},
                        "amount": {"type": "number"},
                        "incident": {"type": "string", "enum": ["theft", "fire", "water"]},
                        "notes": {"type": "array", "items": {"type": "string"}},
                    },
                    "required": ["policy_id", "amount", "incident"],
                },
            },
        },
    ]
