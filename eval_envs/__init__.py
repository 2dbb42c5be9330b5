"""The built-in evaluation environments, installed as ``agentft.builtin_envs``: ``load_environment("claims")``
imports ``agentft.builtin_envs.claims``."""
