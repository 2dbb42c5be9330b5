import subprocess
import sys
import types

import agentft


def test_all_names_exist_and_are_sorted():
    assert agentft.__all__ == sorted(agentft.__all__)
    for name in agentft.__all__:
        assert hasattr(agentft, name), name
    public = {
        n for n in dir(agentft) if not n.startswith("_") and not isinstance(getattr(agentft, n), types.ModuleType)
    }
    assert public == set(agentft.__all__)


def test_import_agentft_does_not_load_heavy_stacks():
    code = (
        "import agentft, agentft.cli, agentft.policies, sys; "
        "heavy = {'torch','transformers','trl','chromadb','fastapi','peft','openai','ray'} & set(sys.modules); "
        "assert not heavy, heavy"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
