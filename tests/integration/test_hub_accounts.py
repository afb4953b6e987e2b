"""recipes/jupyterhub.py against a real JupyterHub on 127.0.0.1: nobody can take a listed account, an admin's
included, by signing up first; the accounts the unit's ExecStartPre makes let their owners in with the passwords
from the root-only file, and a second start keeps them."""

from __future__ import annotations

import shlex
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from harness.emulators.jupyterhub import Hub

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "unit"))
from test_recipe_jupyterhub import hub as hub_recap  # noqa: E402
from test_recipe_jupyterhub import written  # noqa: E402

RECIPES = Path(__file__).resolve().parents[2] / "recipes"
pytestmark = pytest.mark.timeout(240)


def make_accounts(recap, tmp_path: Path) -> Path:
    """Run the accounts script as the unit's ExecStartPre would: same users, paths moved under tmp_path."""
    unit = written(recap, "jupyterhub unit")
    (pre,) = [line.split("=", 1)[1] for line in unit.splitlines() if line.startswith("ExecStartPre=")]
    python, script, database, passwords, *users = shlex.split(pre)
    assert (script, database, passwords) == ("/etc/jupyterhub/hub_accounts.py", "/var/lib/jupyterhub/jupyterhub.sqlite",
                                             "/etc/vmlab/hub-passwords.env")
    out = tmp_path / "hub-passwords.env"
    subprocess.run([sys.executable, str(RECIPES / "files" / "hub_accounts.py"), str(tmp_path / "jupyterhub.sqlite"),
                    str(out), *users], check=True, timeout=60)
    return out


def passwords(path: Path) -> dict[str, str]:
    return dict(line.split("=", 1) for line in path.read_text().splitlines())


def test_listed_names_cannot_be_claimed_by_signing_up(tmp_path: Path) -> None:
    recap = hub_recap({"hub_users": ["ana", "ben"], "hub_admins": ["ana"]})
    secret_file = make_accounts(recap, tmp_path)
    assert stat.S_IMODE(secret_file.stat().st_mode) == 0o600
    given = passwords(secret_file)
    assert set(given) == {"ana", "ben"} and len(set(given.values())) == 2

    hub = Hub(tmp_path, written(recap, "hub settings"))
    try:
        for name in ("ana", "ben", "mallory"):  # an admin, a user, a name nobody listed
            assert hub.signup(name, "attacker-pass-1") == 404
            assert not hub.login(name, "attacker-pass-1")
        assert hub.login("ana", given["ana"]) and hub.login("ben", given["ben"])
        assert not hub.login("ana", given["ben"])
    finally:
        hub.stop()

    # the next start (ExecStartPre again) keeps every password: both the account and its line are there
    make_accounts(recap, tmp_path)
    assert passwords(secret_file) == given


def test_with_sign_up_on_the_first_comer_takes_a_listed_admin(tmp_path: Path) -> None:
    """The control: the same settings with NativeAuthenticator's sign-up on (what the recipe used to write) hand
    the admin account to whoever signs up first, so the test above would catch that default coming back."""
    recap = hub_recap({"hub_users": ["ana", "ben"], "hub_admins": ["ana"]})
    config = written(recap, "hub settings")
    assert "c.NativeAuthenticator.enable_signup = False\n" in config
    hub = Hub(tmp_path, config.replace("c.NativeAuthenticator.enable_signup = False\n", ""))
    try:
        assert hub.signup("ana", "attacker-pass-1") == 200
        assert hub.login("ana", "attacker-pass-1")
    finally:
        hub.stop()
