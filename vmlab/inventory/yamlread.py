"""Read an inventory file as Ansible's YAML loader reads it: `!unsafe` and `!vault` tags, no duplicate keys.

`!unsafe` marks a string that is never rendered as a template; `!vault` holds ansible-vault ciphertext,
kept as it is until a selected host needs it (then `vault.decrypt` opens it with the user's vault password).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from vmlab.errors import BadInput

FIX = "see docs/inventory.md for the shape (all: {hosts, children, vars})"


class Unsafe(str):
    """A `!unsafe` string: used as it is written, never rendered as a Jinja template."""


class VaultValue(str):
    """An `!vault` value: ansible-vault ciphertext (shown as is by --list, decrypted for selected hosts)."""


def _loader_class() -> Any:
    import yaml

    class Loader(yaml.SafeLoader):
        """safe_load plus Ansible's tags; a key written twice in one mapping is an error, not last-one-wins."""

        def construct_mapping(self, node: Any, deep: bool = False) -> Any:
            seen: set[Any] = set()
            for key_node, _ in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge":  # `<<:` keys may be overridden, not duplicates
                    continue
                key = self.construct_object(key_node, deep=True)
                if not isinstance(key, (str, int, float, bool)):
                    continue
                if key in seen:
                    raise yaml.constructor.ConstructorError(
                        None, None, f"{key!r} is written twice in one mapping (Ansible keeps only the last)",
                        key_node.start_mark)
                seen.add(key)
            return super().construct_mapping(node, deep=deep)

    def unsafe(loader: Any, node: Any) -> Unsafe:
        if not isinstance(node, yaml.ScalarNode):
            raise yaml.constructor.ConstructorError(None, None, "!unsafe applies to a string", node.start_mark)
        return Unsafe(loader.construct_scalar(node))

    def vault(loader: Any, node: Any) -> VaultValue:
        if not isinstance(node, yaml.ScalarNode):
            raise yaml.constructor.ConstructorError(None, None, "!vault applies to a string", node.start_mark)
        return VaultValue(loader.construct_scalar(node))

    def timestamp(loader: Any, node: Any) -> str:  # Ansible hands dates on as ISO text in its JSON
        return str(yaml.SafeLoader.construct_yaml_timestamp(loader, node).isoformat())

    def refuse(loader: Any, node: Any) -> None:
        raise yaml.constructor.ConstructorError(None, None, f"{node.tag.rsplit(':', 1)[-1]} values are not read "
                                                "(write a list, mapping or string)", node.start_mark)

    for tag in ("set", "binary", "omap", "pairs"):
        Loader.add_constructor(f"tag:yaml.org,2002:{tag}", refuse)
    Loader.add_constructor("!unsafe", unsafe)
    Loader.add_constructor("!vault", vault)
    Loader.add_constructor("tag:yaml.org,2002:timestamp", timestamp)
    return Loader


def read_yaml(path: str | Path) -> Any:
    """The document in `path`; every problem is one BadInput line naming the file (and line)."""
    import yaml

    try:
        text = Path(path).read_bytes().decode("utf-8")
    except OSError as exc:
        raise BadInput(f"{path}: cannot read inventory ({exc.strerror})", "give the path of a YAML inventory") \
            from None
    except UnicodeDecodeError as exc:
        raise BadInput(f"{path}: not UTF-8 text (byte {exc.start})", "save the inventory as UTF-8") from None
    try:
        return yaml.load(text, Loader=_loader_class())  # noqa: S506 - reviewed: a SafeLoader subclass (only !vault/!unsafe added)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f":{mark.line + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        if "!vault" in problem or "!" in problem and "tag" in problem:
            problem = f"{problem} (vmlab reads the !unsafe and !vault tags only)"
        raise BadInput(f"{path}{where}: not valid YAML: {problem}", FIX) from None
