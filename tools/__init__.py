"""Tool packs of the built-in environments, installed as ``agentft.builtin_tools`` (never as a top-level
``tools``, which is the user's name to take)."""
