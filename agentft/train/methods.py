"""Training methods by name: each is one config dataclass and one function that trains from it.

``agentft train NAME`` is generated from the registered config: one flag per field, its ``help``
metadata the flag's help, the dataclass default the flag's default; the recipe's ``NAME`` section
fills the same fields. A new method is a config, a function and one call::

    @dataclass
    class GRPOTrainConfig(TrainConfig):
        group_size: int = field(default=8, metadata={"help": "completions sampled per prompt"})

    register_method("grpo", GRPOTrainConfig, train_grpo, help="Group relative policy optimization.")
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from agentft.errors import UserError

__all__ = ["Method", "METHODS", "register_method", "method_for"]


@dataclass(frozen=True)
class Method:
    name: str
    config: type
    train: Callable[[Any], dict]
    help: str


METHODS: dict[str, Method] = {}


def register_method(name: str, config: type, train: Callable[[Any], dict], *, help: str) -> Method:
    """Make ``train(config(...)) -> metrics`` the method ``name`` (``agentft train NAME``, recipe section ``NAME``).

    The config must be a dataclass with an ``out`` field (the output directory) and ``help`` metadata on
    every field; ``metadata={"required": True}`` makes the command line ask for a field.
    """
    if name in METHODS:
        raise UserError(f"training method {name!r} is already registered (by {METHODS[name].config.__name__})")
    if not dataclasses.is_dataclass(config) or not isinstance(config, type):
        raise UserError(f"training method {name!r}: {config!r} is not a dataclass")
    taken = next((m.name for m in METHODS.values() if m.config is config), None)
    if taken:
        raise UserError(
            f"training method {name!r}: {config.__name__} is already the config of {taken!r}; "
            "each method has its own config class (subclass it)"
        )
    fields = {f.name: f for f in dataclasses.fields(config)}
    if "out" not in fields:
        raise UserError(f"training method {name!r}: {config.__name__} needs an `out` field (the output directory)")
    if "recipe" in fields:
        raise UserError(f"training method {name!r}: {config.__name__}.recipe clashes with --recipe; rename it")
    undocumented = [n for n, f in fields.items() if not f.metadata.get("help")]
    if undocumented:
        raise UserError(
            f"training method {name!r}: {config.__name__} field(s) {undocumented} have no help; "
            "write field(default=..., metadata={'help': '...'})"
        )
    METHODS[name] = method = Method(name, config, train, help)
    return method


def method_for(config: type) -> Method:
    """The method whose config class is ``config``."""
    for method in METHODS.values():
        if method.config is config:
            return method
    raise UserError(
        f"{config.__name__} is not the config of a registered training method; "
        f"register_method(name, {config.__name__}, train, help=...) first"
    )
