"""``agentft env new NAME``: a working environment package to rename and reshape into your own.

The package is written from plain files under ``agentft/templates/env/`` (Python files end in ``.tmpl``
there, so nothing imports, lints or collects them as agentft's own): ``{{name}}`` becomes NAME and
``{{Name}}`` its CamelCase form, nothing else is interpreted. It holds a requests desk: a tool pack with
reads, a write and a guide search (``tools.py``), seed data (``data.py``), ``policy.md``, three rules
(``rules.py``), three task kinds in train / validation / test splits (``tasks.py``, ``phrasings.json``), a
knowledge document (``guide.md``) and tests (``tests/``). It passes ``agentft env check`` untouched.
"""

from __future__ import annotations

import importlib.util
import keyword
import sys
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING

from agentft.errors import UserError

if TYPE_CHECKING:
    from importlib.resources.abc import Traversable

__all__ = ["scaffold_environment", "class_name"]

TEMPLATES = "templates/env"
SUFFIX = ".tmpl"


def class_name(name: str) -> str:
    """``my_desk`` -> ``MyDesk`` (the environment class is ``MyDeskEnvironment``)."""
    return "".join(part[:1].upper() + part[1:] for part in name.split("_") if part) or name


def _check_name(name: str) -> None:
    if not name.isidentifier() or keyword.iskeyword(name):
        raise UserError(f"{name!r} is not a Python package name: use letters, digits and _ (e.g. expense_desk)")
    taken = name in sys.stdlib_module_names or name in ("agentft", "tests")
    if not taken:
        try:
            taken = importlib.util.find_spec(name) is not None
        except (ImportError, ValueError):
            taken = True
    if taken:
        raise UserError(f"{name!r} is already an importable module; choose another name so neither hides the other")


def _files(folder: Traversable, prefix: str = "") -> list[tuple[str, Traversable]]:
    """(relative path, template) of every template file, in a stable order."""
    found = []
    for entry in sorted(folder.iterdir(), key=lambda e: e.name):
        if entry.name == "__pycache__":
            continue
        if entry.is_dir():
            found += _files(entry, f"{prefix}{entry.name}/")
        else:
            found.append((f"{prefix}{entry.name}", entry))
    return found


def scaffold_environment(name: str, directory: str | Path = ".") -> Path:
    """Write the environment package ``directory/name/`` and return its path.

    Refuses a name that is not an identifier or would shadow (or be shadowed by) an importable module, and a
    target that already exists (nothing is overwritten).
    """
    _check_name(name)
    target = Path(directory) / name
    if target.exists():
        raise UserError(f"{target} already exists; choose another name or --dir (nothing was overwritten)")
    templates = resources.files("agentft").joinpath(TEMPLATES)
    files = _files(templates)
    if not files:
        raise UserError(f"no environment templates found in {templates} (a broken agentft install?)")
    target.mkdir(parents=True)
    for relative, template in files:
        text = template.read_text(encoding="utf-8").replace("{{Name}}", class_name(name)).replace("{{name}}", name)
        path = target / relative.removesuffix(SUFFIX)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    return target
