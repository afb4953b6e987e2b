"""`vmlab provision`: the Ansible-like mode, a recipe applied to the SSH hosts of an inventory."""

from __future__ import annotations

from typing import Any

import click

from vmlab.cli.output import Output, handle_errors, json_option, recap_table, step_reporter
from vmlab.errors import BadInput


def parse_extra_vars(pairs: tuple[str, ...]) -> dict[str, Any]:
    """`-e key=value` pairs; values are read as YAML scalars, so `gpu=false` is a boolean and `n=2` a number."""
    import yaml

    out: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip().isidentifier():
            raise BadInput(f"-e {pair}: expected NAME=VALUE", "write e.g. -e jupyter_port=8889")
        try:
            out[key.strip()] = yaml.safe_load(value) if value.strip() else ""
        except yaml.YAMLError:
            out[key.strip()] = value
    return out


@click.command()
@click.argument("recipe_file", metavar="RECIPE")
@click.option("-i", "--inventory", "inventory_file", required=True, metavar="INVENTORY",
              help="Ansible-style YAML inventory of SSH hosts.")
@click.option("--vault-password-file", metavar="FILE",
              help="Decrypt !vault values with the password in FILE (default: $ANSIBLE_VAULT_PASSWORD_FILE).")
@click.option("--limit", "-l", metavar="PATTERN",
              help="Only these hosts, as Ansible's --limit: web,db  web:&prod  web:!db  web*  ~re  web[0:2]  @file.")
@click.option("--check", is_flag=True, help="Plan and print what would change; change nothing.")
@click.option("--diff", is_flag=True, help="Show content changes of files and templates.")
@click.option("-e", "--extra-var", "extra", multiple=True, metavar="NAME=VALUE",
              help="Set a recipe variable (overrides the recipe and the inventory).")
@click.option("--forks", default=10, show_default=True, type=click.IntRange(1, 100),
              help="How many hosts to provision at once.")
@json_option
@handle_errors
def provision(recipe_file: str, inventory_file: str, vault_password_file: str | None, limit: str | None,
              check: bool, diff: bool, extra: tuple[str, ...], forks: int, json_mode: bool) -> None:
    """Apply RECIPE to the hosts of an inventory over SSH, in parallel.

    \b
    Example:
      vmlab provision recipes/example.py -i inventory.example.yaml --limit gpu --check --diff
    """
    from vmlab.engine.loader import load_recipe
    from vmlab.inventory import load_inventory, select_hosts
    from vmlab.inventory.vault import read_password_file
    from vmlab.workflows.provision import provision as apply_to_hosts

    out = Output(json_mode)
    recipe = load_recipe(recipe_file)
    hosts = select_hosts(load_inventory(inventory_file), limit, read_password_file(vault_password_file))
    if not hosts:
        raise BadInput(f"{inventory_file}: no hosts to provision", "add hosts, or check --limit")
    extra_vars = parse_extra_vars(extra)
    if check:
        out.say("check mode: planning only, nothing will be changed", style="bold")
    recaps = apply_to_hosts(recipe, hosts, extra_vars=extra_vars, check=check, diff=diff, forks=forks,
                 report=step_reporter(out, check))
    recap_table(out, recaps)
    failed = [r for r in recaps if not r.success]
    out.emit({"recipe": recipe.name, "check": check, "hosts": [r.to_json() for r in recaps],
              "failed": [r.host for r in failed]})
    if failed:  # 2 when every failed host was refused by a recipe check before anything ran on it
        raise SystemExit(2 if all(r.refused for r in failed) else 1)
