"""`vmlab inventory`: show an inventory as vmlab reads it, in ansible-inventory's shapes, to diff the two."""

from __future__ import annotations

import click

from vmlab.cli.output import handle_errors, json_option
from vmlab.errors import BadInput


@click.command()
@click.option("-i", "--inventory", "inventory_file", required=True, metavar="INVENTORY",
              help="Ansible-style YAML inventory.")
@click.option("--list", "list_", is_flag=True, help="Every group and host with merged variables (JSON).")
@click.option("--host", metavar="NAME", help="One host's merged variables (JSON).")
@click.option("--graph", is_flag=True, help="The group tree (optionally from GROUP).")
@click.option("--list-hosts", "list_hosts", is_flag=True,
              help="The hosts --limit selects, one a line, after checking each can be reached as written.")
@click.option("--vault-password-file", metavar="FILE",
              help="Decrypt !vault values with the password in FILE (default: $ANSIBLE_VAULT_PASSWORD_FILE).")
@click.option("--limit", "-l", metavar="PATTERN", help="Hosts for --list-hosts: web,db  web:&prod  web:!db  "
                                                         "web*  ~regex  web[0:2]  @file.")
@click.argument("group", required=False)
@json_option
@handle_errors
def inventory(inventory_file: str, list_: bool, host: str | None, graph: bool, list_hosts: bool,
              vault_password_file: str | None, limit: str | None, group: str | None, json_mode: bool) -> None:
    """Print an inventory as vmlab reads it: the same output as `ansible-inventory`, so the two can be diffed.

    \b
    Example:
      vmlab inventory -i inventory.yaml --list
      vmlab inventory -i inventory.yaml --graph gpu
      vmlab inventory -i inventory.yaml --list-hosts --limit 'gpu:!g4dn-box' [--json]

    With --json, --list-hosts prints each selected host's resolved connection (host, port, user, key_file,
    proxy_jump, proxy_command, connection); --list and --host are JSON already.
    """
    from vmlab.inventory import load_inventory, select_hosts, show
    from vmlab.inventory.vault import read_password_file

    if sum((list_, host is not None, graph, list_hosts)) != 1:
        raise BadInput("vmlab inventory: give one of --list, --host NAME, --graph, --list-hosts",
                       "e.g. vmlab inventory -i inventory.yaml --list")
    if group and not graph:
        raise BadInput(f"vmlab inventory: unexpected argument {group!r}", "a GROUP goes with --graph only")
    inv = load_inventory(inventory_file)
    if list_:
        click.echo(show.dumps(show.as_list(inv)))
    elif host is not None:
        click.echo(show.dumps(show.host_vars(inv, host)))
    elif graph:
        click.echo(show.graph(inv, group or "all"))
    else:
        hosts = select_hosts(inv, limit, read_password_file(vault_password_file))
        if json_mode:
            click.echo(show.dumps([show.connection_json(h) for h in hosts]))
        else:
            click.echo("\n".join(h.name for h in hosts))
