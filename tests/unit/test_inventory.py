"""Inventory reading without a peer: ranges, precedence, connection settings, ssh args, --limit patterns and
one-line refusals. (tests/integration/test_inventory_ansible.py checks the same rules against ansible-core.)"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from vmlab.errors import BadInput
from vmlab.inventory import load_inventory, resolve, select, select_hosts, show
from vmlab.inventory.ranges import MAX_HOSTS, RangeError, expand_host_key


def write(tmp_path: Path, text: str, name: str = "inv.yml") -> Path:
    p = tmp_path / name
    p.write_text(text)
    return p


@pytest.mark.parametrize("key, names, port", [
    ("www[01:07:3].example.com", ["www01.example.com", "www04.example.com", "www07.example.com"], None),
    ("db-[a:c]", ["db-a", "db-b", "db-c"], None),
    ("rack[1:2]-node[1:2]", ["rack1-node1", "rack1-node2", "rack2-node1", "rack2-node2"], None),
    ("web[8:10]", ["web8", "web9", "web10"], None),
    ("badwolf.example.com:5309", ["badwolf.example.com"], 5309),
    ("[2001:db8::1]:2222", ["2001:db8::1"], 2222),
    ("fe80::1", ["fe80::1"], None),
    ("node[1:2]:2200", ["node1", "node2"], 2200),
    ("not a host:22", ["not a host:22"], None),  # not an address: a literal name, as in Ansible
])
def test_host_keys_expand_as_ansible_does(key: str, names: list[str], port: int | None) -> None:
    assert expand_host_key(key) == (names, port)


@pytest.mark.parametrize("key, message", [
    ("web[01:5]", "same width"),
    ("web[5:1]", "ends before it starts"),
    ("web[1:3:0]", "above 0"),
    ("web[a:3]", "not a host name"),
    ("web[1-3]", "not a host name"),
    ("web[Z:a]", "begin <= end"),
    ("web[0:99999999]", re.escape(f"more than vmlab expands from one key ({MAX_HOSTS})")),
    ("r[0:999]-n[0:99]", "100000 hosts is more than"),
])
def test_ranges_ansible_refuses_or_too_big_are_refused(key: str, message: str) -> None:
    with pytest.raises(RangeError, match=message):
        expand_host_key(key)


def test_a_huge_range_is_a_one_line_error_not_a_memory_error(tmp_path: Path) -> None:
    p = write(tmp_path, "all:\n  hosts:\n    web[0:99999999]:\n")
    with pytest.raises(BadInput, match=r"all.hosts.web\[0:99999999\]: 100000000 hosts is more") as e:
        load_inventory(p)
    assert "\n" not in str(e.value)


INVENTORY = """
all:
  vars: {x: all, port: 8080, user: www-data, key_file: /etc/app.key, host: 0.0.0.0}
  hosts:
    solo: {ansible_host: 127.0.0.1, ansible_port: 2200, ansible_user: ubuntu}
  children:
    gpu:
      vars: {x: gpu, ansible_ssh_private_key_file: ~/.ssh/lab}
      hosts:
        g[01:03]:
        box: {x: host}
      children:
        big:
          vars: {x: big}
          hosts: g03
    cpu:
      vars: {x: cpu, ansible_group_priority: 7}
      hosts:
        box:
    edge:
      vars:
        ansible_ssh_common_args: "-o ProxyJump=jump@bastion:2222 -o ServerAliveInterval=5"
      hosts:
        e1: {ansible_connection: local}
        jinja:
          ansible_host: "{{ inventory_hostname }}.{{ x }}.example.org"
          ansible_port: "{{ 2200 + 2 }}"
          ansible_user: "{{ group_names[0] }}"
        win: {ansible_connection: winrm}
gpu:
  vars: {y: second body}
  hosts:
    g04:
"""


@pytest.fixture()
def inv(tmp_path: Path):
    return load_inventory(write(tmp_path, INVENTORY))


def test_only_ansible_names_set_the_connection(inv) -> None:
    solo = resolve(inv, "solo")
    assert (solo.host, solo.port, solo.user, solo.key_file) == ("127.0.0.1", 2200, "ubuntu", None)
    g01 = resolve(inv, "g01")  # plain port/user/host/key_file are variables only
    assert (g01.host, g01.port, g01.user, g01.key_file) == ("g01", 22, None, "~/.ssh/lab")
    assert g01.vars["port"] == 8080 and g01.vars["user"] == "www-data"


def test_jinja_in_connection_fields_is_rendered_with_the_hosts_variables(inv) -> None:
    h = resolve(inv, "jinja")
    assert (h.host, h.port, h.user) == ("jinja.all.example.org", 2202, "edge")
    assert h.proxy_jump == "jump@bastion:2222"


def test_depth_then_priority_then_name(inv) -> None:
    assert inv.vars_of("solo")["x"] == "all"
    assert inv.vars_of("g01")["x"] == "gpu"
    assert inv.vars_of("g03")["x"] == "big"  # deeper group wins
    assert inv.vars_of("box")["x"] == "host"  # host vars win over every group
    del inv.hosts["box"]["x"]
    assert inv.vars_of("box")["x"] == "cpu"  # same depth: priority 7 beats gpu's 1 despite the name order
    assert "ansible_group_priority" not in inv.vars_of("box")


def test_a_group_with_two_bodies_keeps_both(inv) -> None:
    assert inv.groups["gpu"].hosts == ["g01", "g02", "g03", "box", "g04"]
    assert inv.vars_of("g01")["y"] == "second body" and inv.vars_of("g01")["x"] == "gpu"


def test_non_ssh_hosts_are_refused_only_when_selected(inv) -> None:
    assert [h.name for h in select_hosts(inv, "edge:!win")] == ["e1", "jinja"]
    assert resolve(inv, "e1").connection == "local"
    with pytest.raises(BadInput, match="host win: ansible_connection 'winrm' is not supported"):
        select_hosts(inv, "edge")


@pytest.mark.parametrize("pattern, hosts", [
    ("gpu", ["g01", "g02", "g03", "box", "g04"]),
    ("gpu:&cpu", ["box"]),
    ("gpu:!big", ["g01", "g02", "box", "g04"]),
    ("g0*", ["g01", "g02", "g03", "g04"]),
    ("~g0[12]", ["g01", "g02"]),
    ("gpu[0]", ["g01"]),
    ("gpu[1:3]", ["g02", "g03", "box"]),
    ("gpu[-1]", ["g04"]),
    ("big,solo", ["solo", "g03"]),
    ("!gpu", ["solo", "e1", "jinja", "win"]),
])
def test_limit_patterns(inv, pattern: str, hosts: list[str]) -> None:
    assert select(inv, pattern) == hosts


def test_limit_from_a_retry_file(inv, tmp_path: Path) -> None:
    retry = write(tmp_path, "g02\nbox\n", "site.retry")
    assert select(inv, f"@{retry}") == ["g02", "box"]
    with pytest.raises(BadInput, match="cannot read"):
        select(inv, f"@{tmp_path / 'none.retry'}")


@pytest.mark.parametrize("pattern, message", [
    ("nope", "--limit nope: no host or group matches"),
    ("localhost", "Ansible would add an implicit local host"),
    ("gpu[9]", "no host 9"),
    ("~web(", "not a valid regular expression"),
])
def test_limit_refusals_are_one_line(inv, pattern: str, message: str) -> None:
    with pytest.raises(BadInput, match=message) as e:
        select(inv, pattern)
    assert "\n" not in str(e.value)


def test_ungrouped_and_string_hosts_shorthand(tmp_path: Path) -> None:
    inv = load_inventory(write(tmp_path, "all:\n  hosts: a\nweb:\n  hosts: b\nungrouped:\n  hosts: {c: , b: }\n"))
    assert inv.groups["ungrouped"].hosts == ["c", "a"]  # b is in web, so not ungrouped
    assert select(inv, "ungrouped") == ["a", "c"]


@pytest.mark.parametrize("args, field, value", [
    ("-i ~/.ssh/aws.pem", "key_file", "~/.ssh/aws.pem"),
    ("-o IdentityFile=/k -o Port=2022 -l ops", "port", 2022),
    ("-o 'ProxyCommand ssh -W %h:%p bastion'", "proxy_command", "ssh -W %h:%p bastion"),
    ("-J ops@bastion -C -o ControlMaster=auto", "proxy_jump", "ops@bastion"),
    ("-o StrictHostKeyChecking=accept-new", "port", 22),
])
def test_ssh_args_vmlab_honours(tmp_path: Path, args: str, field: str, value: object) -> None:
    inv = load_inventory(write(tmp_path, f"all:\n  hosts:\n    h:\n      ansible_ssh_extra_args: \"{args}\"\n"))
    assert getattr(resolve(inv, "h"), field) == value


@pytest.mark.parametrize("args, jump, command", [
    ("-o 'ProxyCommand ssh -W %h:%p b' -J ops@bastion", None, "ssh -W %h:%p b"),
    ("-J ops@bastion -o 'ProxyCommand ssh -W %h:%p b'", "ops@bastion", None),
    ("-o ProxyJump=none -J ops@bastion", None, None),
])
def test_first_of_proxy_jump_and_proxy_command_wins_like_openssh(tmp_path: Path, args: str, jump: str | None,
                                                                 command: str | None) -> None:
    inv = load_inventory(write(tmp_path, f"all:\n  hosts:\n    h:\n      ansible_ssh_extra_args: \"{args}\"\n"))
    host = resolve(inv, "h")
    assert (host.proxy_jump, host.proxy_command) == (jump, command)


def test_an_ssh_address_with_a_comma_is_refused_not_misread() -> None:
    from vmlab.transport.target import split_spec

    with pytest.raises(BadInput, match="cannot read SSH address 'alice@b1,bob@b2'"):
        split_spec("alice@b1,bob@b2")


@pytest.mark.parametrize("args, message", [
    ("-o StrictHostKeyChecking=no", "StrictHostKeyChecking=no is refused"),
    ("-o UserKnownHostsFile=/dev/null", "UserKnownHostsFile=/dev/null is refused"),
    ("-F ~/.ssh/other_config", "does not read ssh config files"),
    ("-o ForwardAgent=yes", "ForwardAgent is not supported"),
    ("-o Ciphers=aes128-ctr", "-o ciphers=aes128-ctr is not supported"),
    ("-R 8080:localhost:80", "'-R' is not supported"),
    ("-p 2200", "two different ports"),
    ("-J alice@bastion1,bob@bastion2", "ProxyJump chains are not supported; use one jump host"),
    ("-o ProxyJump=a@b1,c@b2", "ProxyJump chains are not supported; use one jump host"),
])
def test_ssh_args_vmlab_cannot_honour_are_refused_naming_the_host(tmp_path: Path, args: str, message: str) -> None:
    inv = load_inventory(write(tmp_path, f"all:\n  hosts:\n    h7:\n      ansible_port: 22\n"
                                         f"      ansible_ssh_common_args: \"{args}\"\n"))
    with pytest.raises(BadInput, match=message) as e:
        resolve(inv, "h7")
    assert str(e.value).startswith("host h7: ") and "\n" not in str(e.value)


@pytest.mark.parametrize("hostvars, message", [
    ("{ansible_host: a, ansible_ssh_host: b}", "ansible_host='a' and ansible_ssh_host='b' disagree"),
    ("{ansible_port: abc}", "port 'abc' is not a number"),
    ("{ansible_port: 70000}", "out of range"),
    ("{ansible_password: secret}", "SSH keys only"),
    ("{ansible_host_key_checking: false}", "always checks host keys"),
    ("{ansible_host_key_checking: '{{ false }}'}", "always checks host keys"),
    ("{ansible_ssh_host_key_checking: '{{ \"no\" }}'}", "always checks host keys"),
    ("{ansible_host: '{{ nope }}'}", "'nope' is undefined"),
    ("{ansible_host: '{{ a }}', a: '{{ ansible_host }}'}", "refers to itself"),
    ("{ansible_host: \"{{ ''.__class__ }}\"}", "sandbox"),
])
def test_connection_refusals_name_the_host(tmp_path: Path, hostvars: str, message: str) -> None:
    inv = load_inventory(write(tmp_path, f"all:\n  hosts:\n    h1: {hostvars}\n"))
    with pytest.raises(BadInput, match=message) as e:
        resolve(inv, "h1")
    assert "host h1" in str(e.value) and "\n" not in str(e.value)


def test_known_hosts_files_in_ssh_args_pin_the_key(tmp_path: Path) -> None:
    key = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl"
    other = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHNUTqwvQ5vMPCdxsM4ObMN3XSTdB8ORXfRYzdbFhmtH"
    known = write(tmp_path, f"[192.0.2.9]:2222 {key}\n", "known_hosts")
    args = f"-o UserKnownHostsFile={known} -o StrictHostKeyChecking=yes -o GlobalKnownHostsFile=/dev/null"
    text = f"all:\n  hosts:\n    h:\n      ansible_host: 192.0.2.9\n      ansible_port: 2222\n" \
           f"      ansible_ssh_common_args: '{args}'\n"
    assert resolve(load_inventory(write(tmp_path, text)), "h").host_key == key
    pinned_other = load_inventory(write(tmp_path, text + f"      vmlab_host_key: {other}\n"))
    with pytest.raises(BadInput, match="vmlab_host_key differs from the key for \\[192.0.2.9\\]:2222"):
        resolve(pinned_other, "h")
    unknown = load_inventory(write(tmp_path, text.replace("2222", "2200")))
    with pytest.raises(BadInput, match="StrictHostKeyChecking=yes, but no key for \\[192.0.2.9\\]:2200"):
        resolve(unknown, "h")


def test_matching_aliases_are_fine_and_ssh_user_alias_works(tmp_path: Path) -> None:
    inv = load_inventory(write(tmp_path, "all:\n  hosts:\n    h: {ansible_host: a, ansible_ssh_host: a, "
                                         "ansible_ssh_user: root, ansible_ssh_port: 2022}\n"))
    h = resolve(inv, "h")
    assert (h.host, h.user, h.port) == ("a", "root", 2022)


VAULT = """all:
  hosts:
    h:
      secret: !vault |
          $ANSIBLE_VAULT;1.1;AES256
          6231
      motd: !unsafe "{{ literally }}"
      ansible_host: !unsafe "{{ not_rendered }}"
"""


def test_vault_values_are_data_and_refused_when_used(tmp_path: Path) -> None:
    inv = load_inventory(write(tmp_path, VAULT))
    listed = show.as_list(inv)["_meta"]["hostvars"]["h"]
    assert listed["secret"] == {"__ansible_vault": "$ANSIBLE_VAULT;1.1;AES256\n6231\n"}
    assert listed["motd"] == {"__ansible_unsafe": "{{ literally }}"}
    with pytest.raises(BadInput, match="variable secret is an !vault value, and vault values need a password"):
        resolve(inv, "h")
    with pytest.raises(BadInput, match="cannot decrypt variable secret: the vault value is damaged"):
        resolve(inv, "h", b"pw")
    del inv.hosts["h"]["secret"]
    # !unsafe is never rendered: the literal text reaches the host check, which refuses it as an address
    with pytest.raises(BadInput, match=r"ansible_host '\{\{ not_rendered \}\}' contains a space"):
        resolve(inv, "h")


@pytest.mark.parametrize("text, message", [
    ("all:\n  hosts: [a, b]\n", "hosts must be a mapping"),
    ("all:\n  hsts: {}\n", "unknown key 'hsts'"),
    ("all:\n  hosts:\n    a: {x: [1\n", "inv.yml:4: not valid YAML"),
    ("- a\n- b\n", "a mapping of groups"),
    ("all:\n  hosts:\n    a:\n    a:\n", "'a' is written twice"),
    ("all:\n  hosts:\n    10:\n", "host name 10 must be a non-empty string"),
    ("all:\n  hosts:\n    a: x\n", "host variables must be a mapping"),
    ("a:\n  children:\n    b:\n      children:\n        a:\n", "contain each other in a loop"),
    ("a:\n  vars:\n    ansible_group_priority: high\n", "'high' is not a whole number"),
    ("plugin: aws_ec2\n", "inventory plugin configuration"),
    ("all:\n  hosts:\n    h: {s: !!set {a, b}}\n", "set values are not read"),
    ("web:\n  children:\n    ungrouped:\n", "`ungrouped` is Ansible's implicit group and cannot be a child"),
    ("all:\n  hosts:\n    a: !include x\n", "vmlab reads the !unsafe and !vault tags only"),
])
def test_malformed_inventories_are_one_line_errors(tmp_path: Path, text: str, message: str) -> None:
    p = write(tmp_path, text)
    with pytest.raises(BadInput, match=message) as e:
        load_inventory(p)
    assert "\n" not in str(e.value) and str(p) in str(e.value)


def test_vault_password_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from vmlab.inventory.vault import read_password_file

    pw = write(tmp_path, "hunter2\n", "pw")
    assert read_password_file(str(pw)) == b"hunter2"
    monkeypatch.setenv("ANSIBLE_VAULT_PASSWORD_FILE", str(pw))
    assert read_password_file(None) == b"hunter2"
    pw.chmod(0o700)
    with pytest.raises(BadInput, match="vault password scripts are not run"):
        read_password_file(str(pw))
    with pytest.raises(BadInput, match="cannot read the vault password file"):
        read_password_file(str(tmp_path / "none"))


def test_merge_keys_may_be_overridden(tmp_path: Path) -> None:
    inv = load_inventory(write(tmp_path, "all:\n  hosts:\n    h: {m: {<<: {a: 1, b: 1}, a: 2}}\n"))
    assert inv.vars_of("h")["m"] == {"a": 2, "b": 1}


def test_group_vars_folder_next_to_the_inventory_is_refused(tmp_path: Path) -> None:
    (tmp_path / "group_vars").mkdir()
    with pytest.raises(BadInput, match="does not read the group_vars/ folder"):
        load_inventory(write(tmp_path, "all:\n  hosts: {a: }\n"))


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(BadInput, match="cannot read inventory"):
        load_inventory(tmp_path / "none.yaml")


def test_graph_draws_the_tree(inv) -> None:
    lines = show.graph(inv, "gpu").splitlines()
    assert lines[:3] == ["@gpu:", "  |--@big:", "  |  |--g03"]
    assert "  |--g04" in lines


def test_example_inventory_parses_and_resolves() -> None:
    example = Path(__file__).resolve().parents[2] / "inventory.example.yaml"
    hosts = select_hosts(load_inventory(example), None)
    assert hosts and all(h.connection in ("ssh", "local") for h in hosts)
