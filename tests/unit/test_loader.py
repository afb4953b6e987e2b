"""Loading recipe files: every way a recipe file can be wrong is one line naming the file (and line)."""

from __future__ import annotations

from pathlib import Path

import pytest

from vmlab.engine.loader import load_recipe
from vmlab.errors import BadInput

GOOD = """
from vmlab.engine import Recipe
from vmlab.engine.facts import Facts
from base_part import part

recipe = Recipe("good")
recipe.include(part)
"""

PART = """
from dataclasses import dataclass
from vmlab.engine import Command, Operation, Recipe

@dataclass(frozen=True)
class Echo(Operation):
    text: str
    def plan(self, facts):
        yield Command("echo", self.text)

part = Recipe("part")
part.step("echo", Echo("hi"))
"""


def write(tmp_path: Path, text: str, name: str = "r.py") -> Path:
    p = tmp_path / name
    p.write_text(text)
    return p


def test_loads_recipe_that_imports_a_sibling(tmp_path: Path) -> None:
    write(tmp_path, PART, "base_part.py")
    recipe = load_recipe(write(tmp_path, GOOD))
    assert recipe.name == "good" and [s.name for s in recipe.steps] == ["part: echo"]


@pytest.mark.parametrize("text, message", [
    ("x = 1\n", "defines no `recipe`"),
    ("recipe = 5\n", "`recipe` is a int, not a Recipe"),
    ("def broken(:\n", ":1: syntax error"),
    ("import nonexistent_module_xyz\n", ":1: ModuleNotFoundError"),
    ("from vmlab.engine import Recipe\nrecipe = Recipe('r')\n", "has no steps"),
    ("from vmlab.engine import Recipe\n\nrecipe = Recipe('r')\nrecipe.step('a', 3)\n", ":4: step 'a'"),
    ("import sys\nsys.exit(3)\n", r":2: the recipe called exit\(3\) while loading"),
    ("raise SystemExit\n", r":1: the recipe called exit\(None\)"),
    ("raise RuntimeError('boom')\n", ":1: RuntimeError: boom"),
])
def test_bad_recipe_files(tmp_path: Path, text: str, message: str) -> None:
    p = write(tmp_path, text)
    with pytest.raises(BadInput, match=message) as e:
        load_recipe(p)
    assert str(p) in str(e.value) and "\n" not in str(e.value)


def test_unknown_operation_argument_names_the_line(tmp_path: Path) -> None:
    write(tmp_path, PART, "base_part.py")
    text = "from base_part import Echo\nfrom vmlab.engine import Recipe\nrecipe = Recipe('r')\n" \
           "recipe.step('a', Echo(txt='x'))\n"
    with pytest.raises(BadInput, match=r"r\.py:4: TypeError: .*unexpected keyword argument 'txt'"):
        load_recipe(write(tmp_path, text))


def test_missing_or_non_python_file(tmp_path: Path) -> None:
    with pytest.raises(BadInput, match="no such recipe file"):
        load_recipe(tmp_path / "nope.py")
    with pytest.raises(BadInput, match="a recipe is a Python file"):
        load_recipe(write(tmp_path, "x", "r.txt"))


def test_a_recipe_file_named_like_a_loaded_package_is_the_recipe_and_the_package_comes_back(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """recipes/jupyterlab.py, imported by a recipe next to it and by one in another folder that has recipes/ on
    sys.path (tests/e2e's), in a process that imported the jupyterlab package (a hub, a test session): each gets
    the recipe file; afterwards the process has the package again."""
    import sys

    import jupyterlab

    recipes, other = tmp_path / "recipes", tmp_path / "other"
    recipes.mkdir()
    other.mkdir()
    write(recipes, "from vmlab.engine import Recipe\nfrom vmlab.operations import shell\n"
          "recipe = Recipe('jl-part')\nrecipe.step('a', shell.Run(('true',)))\n", "jupyterlab.py")
    text = "from jupyterlab import recipe as part\nfrom vmlab.engine import Recipe\nrecipe = Recipe('r')\n" \
           "recipe.include(part)\n"
    assert load_recipe(write(recipes, text)).name == "r"
    monkeypatch.syspath_prepend(str(recipes))
    assert load_recipe(write(other, text)).name == "r"
    assert sys.modules["jupyterlab"] is jupyterlab and hasattr(jupyterlab, "__version__")
