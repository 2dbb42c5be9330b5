"""The real embedded model: pulled from the installed wheel, converted once, answers offline."""

import pytest

from agentft.models import is_pulled, pull
from agentft.policies.hf import HFPolicy

pytestmark = pytest.mark.slow


def test_smollm2_pulls_offline_and_knows_the_capital_of_france():
    pull("smollm2-135m")
    assert is_pulled("smollm2-135m")
    policy = HFPolicy("smollm2-135m", max_new_tokens=24)
    reply = policy.act([[{"role": "user", "content": "What is the capital of France?"}]])[0]
    assert "Paris" in reply.text
    assert reply.completion_tokens <= 24
