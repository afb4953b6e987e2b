"""Values from outside are data: the checks every writer of ssh_config, known_hosts, agent.env, unit files and
command lines uses (vmlab/safetext.py), and the writers that must use them (inventory, provision variables,
agent.env, the lab record)."""

from __future__ import annotations

from pathlib import Path

import pytest

from vmlab import keys
from vmlab.engine.recipe import Recipe
from vmlab.errors import BadInput
from vmlab.inventory import load_inventory, resolve
from vmlab.safetext import check_host, check_public_key, check_record, check_text, check_user, check_word
from vmlab.state import LabRecord
from vmlab.workflows.labagent import AgentSettings, check_sync_url
from vmlab.workflows.provision import host_variables

HOSTILE = "ubuntu\n ProxyCommand touch /tmp/pwned"


@pytest.mark.parametrize("name", ["ubuntu", "admin", "ec2-user", "_svc", "a1_b-2", "root", "u" * 32])
def test_user_names_accepted(name: str) -> None:
    assert check_user(name, "user") == name


@pytest.mark.parametrize("name", [HOSTILE, "ubuntu ", " ubuntu", "Ubuntu", "1user", "-oProxyCommand=x", "",
                                  "al\tice", "john.doe", "u" * 33, "ubuntu\r", "bob\u2028x", "bob\x00"])
def test_user_names_refused_in_one_line(name: str) -> None:
    with pytest.raises(BadInput) as exc:
        check_user(name, "the vmlab:user tag of image ami-1")
    text = str(exc.value)
    assert "\n" not in text and "the vmlab:user tag of image ami-1" in text and "user name" in text


@pytest.mark.parametrize(("value", "why"), [
    ("a b", "a space"), ("a\nb", "a line break"), ("a\tb", "a tab"), ("", "is empty"), ("-x", "starts with '-'"),
    ("a\u200bb", "U+200B"), ("a\x1bb", "U+001B"),
])
def test_words_refuse_whitespace_control_and_options(value: str, why: str) -> None:
    with pytest.raises(BadInput, match=why.replace("+", r"\+")):
        check_word(value, "instance id")


def test_text_allows_spaces_but_no_line_breaks() -> None:
    assert check_text("/home/me/Library/Application Support/vmlab/key", "key file").endswith("/key")
    with pytest.raises(BadInput, match="line break"):
        check_text("/tmp/key\nProxyCommand x", "key file")
    with pytest.raises(BadInput, match="not text"):
        check_text(7, "key file")


@pytest.mark.parametrize("host", ["127.0.0.1", "::1", "fe80::1%eth0", "lab-1.example.org", "203.0.113.7"])
def test_hosts(host: str) -> None:
    assert check_host(host, "address") == host


@pytest.mark.parametrize("host", ["-oProxyCommand=x", "a b", "h\nProxyCommand x", "h;id", "h$(id)", "[::1]"])
def test_hosts_refused(host: str) -> None:
    with pytest.raises(BadInput):
        check_host(host, "address")


def test_public_key_drops_the_comment_and_refuses_line_breaks() -> None:
    line = keys.generate("host").public
    typ, blob, _comment = line.split()
    assert check_public_key(line, "host key") == f"{typ} {blob}"
    with pytest.raises(BadInput, match="line break"):
        check_public_key(f"{typ} {blob} x\n@revoked * {typ} {blob}", "host key")


def record(**overrides: object) -> LabRecord:
    fields: dict[str, object] = dict(name="lab", provider="ec2", instance_id="i-0123456789abcdef0", image="ami-1",
                                     user="ubuntu", key_file="/state/keys/lab_ed25519",
                                     host_key=keys.generate("host").public, token="t", host="203.0.113.7",
                                     port=22, region="eu-west-1")
    fields.update(overrides)
    return LabRecord(**fields)  # type: ignore[arg-type]


def test_a_sound_record_passes() -> None:
    rec = record()
    assert check_record(rec) is rec
    assert check_record(record(host=None, region=None)).host is None


@pytest.mark.parametrize(("field", "value", "words"), [
    ("user", HOSTILE, "lab lab's user"),
    ("host", "h\n ProxyCommand x", "lab lab's address"),
    ("host", "-oProxyCommand=x", "lab lab's address"),
    ("instance_id", "i-1\n Host *", "lab lab's instance id"),
    ("key_file", "/k\n ProxyCommand x", "lab lab's key file"),
    ("host_key", "ssh-ed25519 AAAA\nevil", "lab lab's pinned host key"),
    ("port", "22\n", "lab lab's SSH port"),
    ("region", "eu-west-1 x", "lab lab's region"),
    ("name", "lab\nHost *", "lab name"),
])
def test_a_record_with_a_hostile_field_is_refused(field: str, value: object, words: str) -> None:
    with pytest.raises(BadInput) as exc:
        check_record(record(**{field: value}))
    text = str(exc.value)
    assert "\n" not in text and words in text


def test_inventory_user_and_host_are_data(tmp_path: Path) -> None:
    inv = tmp_path / "inv.yaml"
    inv.write_text('all:\n  hosts:\n    box: {ansible_user: "ubuntu\\n ProxyCommand touch /tmp/pwned"}\n')
    with pytest.raises(BadInput, match=r"host box: ansible_user 'ubuntu\\n ProxyCommand.*' contains a line break: use"):
        resolve(load_inventory(inv), "box")
    inv.write_text('all:\n  hosts:\n    box: {ansible_host: "10.0.0.1 -oProxyCommand=x"}\n')
    with pytest.raises(BadInput, match="host box: ansible_host .* contains a space"):
        resolve(load_inventory(inv), "box")


def test_the_user_variable_of_a_recipe_is_a_user_name(tmp_path: Path) -> None:
    inv = tmp_path / "inv.yaml"
    inv.write_text("all:\n  hosts:\n    box: {ansible_host: 10.0.0.1, ansible_user: ubuntu}\n")
    host = resolve(load_inventory(inv), "box")
    recipe = Recipe("r")
    assert host_variables(recipe, host, {})["user"] == "ubuntu"
    with pytest.raises(BadInput, match="the user of host box 'root\\\\nExecStartPre=/bin/sh' contains a line break"):
        host_variables(recipe, host, {"user": "root\nExecStartPre=/bin/sh"})


def test_agent_env_never_gets_a_second_line_from_a_sync_url() -> None:
    for url in ("s3://bucket/alice\nVMLAB_IDLE_MINUTES=0", "s3://bucket/al ice"):
        with pytest.raises(BadInput, match="--sync"):
            check_sync_url(url)
    # a record of an older vmlab holds it unchecked: the writer refuses it, without showing the SAS
    settings = AgentSettings(sync_url="https://a.blob.core.windows.net/c/p?sig=SECRET\nVMLAB_MAX_HOURS=0")
    with pytest.raises(BadInput) as exc:
        settings.env_text(0)
    assert "line break" in str(exc.value) and "SECRET" not in str(exc.value)
    assert AgentSettings(sync_url="s3://bucket/alice").env_text(0).count("\n") == 5


@pytest.mark.parametrize("login", ["first.last", "Administrator", "svc.ci", "alice@corp"])
def test_an_inventory_logs_in_as_users_ansible_accepts_but_recipes_need_a_unit_file_name(
        tmp_path: Path, login: str) -> None:
    inv = tmp_path / "inv.yaml"
    inv.write_text(f"all:\n  hosts:\n    box: {{ansible_host: 10.0.0.1, ansible_user: {login}}}\n")
    host = resolve(load_inventory(inv), "box")
    assert host.user == login
    with pytest.raises(BadInput) as refused:
        host_variables(Recipe("r"), host, {})
    assert "\n" not in str(refused.value) and "-e user=NAME" in str(refused.value)
    assert host_variables(Recipe("r"), host, {"user": "ubuntu"})["user"] == "ubuntu"
