"""Load a recipe from a Python file, turning every way it can be wrong into one line that names the file."""

from __future__ import annotations

import hashlib
import importlib.util
import sys
import traceback
from pathlib import Path

from vmlab.engine.recipe import Recipe
from vmlab.errors import BadInput

HOW = "a recipe file assigns a vmlab.engine.Recipe to a module variable named `recipe`"


def load_recipe(path: str | Path) -> Recipe:
    """Import `path` and return its `recipe` (or its only Recipe). Siblings of the file can be imported from it,
    so `recipes/lab.py` can `from base import recipe as base`."""
    file = Path(path)
    if not file.is_file():
        raise BadInput(f"{path}: no such recipe file", "give the path of a .py file; " + HOW)
    if file.suffix != ".py":
        raise BadInput(f"{path}: a recipe is a Python file", "name it *.py; " + HOW)
    resolved = file.resolve()
    mod_name = "vmlab_recipe_" + hashlib.sha1(str(resolved).encode()).hexdigest()[:12]
    spec = importlib.util.spec_from_file_location(mod_name, resolved)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    folder = str(resolved.parent)
    added = folder not in sys.path
    if added:
        sys.path.insert(0, folder)
    # a sibling's name may be a module this process already has (recipes/jupyterlab.py vs the jupyterlab
    # package): the recipe (and the recipes it imports from another folder on sys.path, as tests/e2e's does)
    # gets the recipe file, and the process gets its own module back afterwards
    siblings = _recipe_module_names(resolved.parent)
    saved = {name: sys.modules.pop(name) for name in siblings if name in sys.modules}
    try:
        spec.loader.exec_module(module)
    except SyntaxError as exc:
        raise BadInput(f"{path}:{exc.lineno}: syntax error: {exc.msg}", "fix the recipe file") from None
    except BadInput as exc:
        raise BadInput(f"{path}:{_line_in(resolved, exc)}: {exc.message}", exc.hint) from None
    except SystemExit as exc:  # not an Exception: it would end vmlab with the recipe's exit code, silently
        raise BadInput(f"{path}:{_line_in(resolved, exc)}: the recipe called exit({exc.code!r}) while loading",
                       "a recipe file only defines `recipe`; remove the exit") from None
    except Exception as exc:
        raise BadInput(f"{path}:{_line_in(resolved, exc)}: {type(exc).__name__}: {exc}",
                       "fix the recipe file") from None
    finally:
        if added:
            sys.path.remove(folder)
        for name in siblings:
            sys.modules.pop(name, None)
        sys.modules.update(saved)
    recipe = getattr(module, "recipe", None)
    if recipe is None:
        found = [v for v in vars(module).values() if isinstance(v, Recipe)]
        if len(found) != 1:
            raise BadInput(f"{path}: defines no `recipe`", HOW)
        recipe = found[0]
    if not isinstance(recipe, Recipe):
        raise BadInput(f"{path}: `recipe` is a {type(recipe).__name__}, not a Recipe", HOW)
    try:
        recipe.validate()
    except BadInput as exc:
        raise BadInput(f"{path}: {exc.message}", exc.hint) from None
    return recipe


def _line_in(file: Path, exc: BaseException) -> str:
    """The line of `file` where `exc` was raised (the innermost frame in that file), or '?'."""
    line = "?"
    for frame in traceback.extract_tb(exc.__traceback__):
        if Path(frame.filename).resolve() == file:
            line = str(frame.lineno)
    return line


def _recipe_module_names(folder: Path) -> set[str]:
    """Module names a recipe's imports may mean as recipe files: the files and packages next to it, and the .py
    files of folders on sys.path outside Python's own (a recipes folder a caller put there); never vmlab nor a
    standard module (a stray json.py in the working folder must not replace the real one while a recipe loads)."""
    names = _names_in(folder, packages=True)
    python = tuple(str(Path(p).resolve()) for p in {sys.prefix, sys.base_prefix, sys.exec_prefix})
    for entry in sys.path:
        path = Path(entry or ".")
        if path.is_dir() and not str(path.resolve()).startswith(python):
            names |= _names_in(path, packages=False)
    return names - {"vmlab"} - set(sys.stdlib_module_names)


def _names_in(folder: Path, packages: bool) -> set[str]:
    try:
        entries = list(folder.iterdir())
    except OSError:
        return set()
    return {e.stem for e in entries if e.suffix == ".py" and e.is_file()} | {
        e.name for e in entries if packages and e.is_dir() and (e / "__init__.py").is_file()}
