"""vmlab.hub's pure parts: which hub user names can name a lab, the environment file the lab's
jupyterhub-singleuser reads, the class budget and the price it counts with."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest

from vmlab.errors import BadInput
from vmlab.hub.budget import Ledger, Spend, check_can_spawn, lab_price, running_cost
from vmlab.hub.names import LabNames, check_class
from vmlab.hub.singleuser import SingleUserServer, check_command, env_text, through_tunnel

NOON = dt.datetime(2026, 12, 5, 12, 0, tzinfo=dt.timezone.utc)


def test_a_plain_user_gets_a_lab_a_prefix_and_tags() -> None:
    names = LabNames.of("intro-ml", "ana-b")
    assert names.lab == "intro-ml-ana-b"
    assert names.sync_url("s3://bucket/intro-ml/") == "s3://bucket/intro-ml/ana-b/"
    assert names.sync_url("") is None
    assert names.tags == {"vmlab:class": "intro-ml", "vmlab:hub-user": "ana-b"}


@pytest.mark.parametrize("user", ["Ana", "ana.b", "ana b", "ana/../ben", "-ana", "ana-", "ana--b", "ana\nb", "ana\n",
                                  "ana'", "анна", "a" * 33, "", "ana@example.org", "ana_b"])
def test_a_user_name_that_cannot_name_a_lab_is_refused(user: str) -> None:
    with pytest.raises(BadInput) as caught:
        LabNames.of("intro-ml", user)
    assert "lowercase letters, digits and dashes" in caught.value.hint


def test_a_lab_name_over_forty_characters_is_refused_not_cut() -> None:
    with pytest.raises(BadInput, match="longer than 40"):
        LabNames.of("a" * 20, "b" * 20)


@pytest.mark.parametrize("name", ["", "Intro", "a" * 21, "x y", "x/y"])
def test_a_bad_class_name_is_refused(name: str) -> None:
    with pytest.raises(BadInput, match="class name"):
        check_class(name)


def test_a_sync_root_that_is_no_bucket_url_is_refused() -> None:
    with pytest.raises(BadInput):
        LabNames.of("c", "ana").sync_url("/home/ana")


def test_the_environment_is_written_quoted_and_anything_that_could_escape_is_refused() -> None:
    text = env_text({"JUPYTERHUB_OAUTH_SCOPES": '["access:servers!server=ana/"]', "JUPYTERHUB_USER": "ana"})
    assert text == "JUPYTERHUB_OAUTH_SCOPES='[\"access:servers!server=ana/\"]'\nJUPYTERHUB_USER='ana'\n"
    for bad in ("a'b", "a\\b", "a\nB=c", "a\x1bb"):
        with pytest.raises(BadInput):
            env_text({"X": bad})
    with pytest.raises(BadInput, match="not a plain name"):
        env_text({"X Y": "1"})


def test_the_hub_urls_point_at_the_labs_end_of_the_tunnel() -> None:
    server = SingleUserServer({"JUPYTERHUB_API_URL": "http://127.0.0.1:8081/hub/api",
                               "JUPYTERHUB_ACTIVITY_URL": "http://hub.internal:8081/hub/api/users/ana/activity",
                               "JUPYTERHUB_SERVICE_PREFIX": "/user/ana/", "JUPYTERHUB_API_TOKEN": "t"},
                              "/opt/jupyter/bin/jupyterhub-singleuser", port=8890, hub_port=18081,
                              before_start=lambda _r: None)
    assert server.env["JUPYTERHUB_API_URL"] == "http://127.0.0.1:18081/hub/api"
    assert server.env["JUPYTERHUB_ACTIVITY_URL"] == "http://127.0.0.1:18081/hub/api/users/ana/activity"
    assert server.env["JUPYTERHUB_SERVICE_URL"] == "http://127.0.0.1:8890/user/ana/"
    unit, root = server.unit("ubuntu")
    assert root == "/home/ubuntu/data" and "User=ubuntu" in unit and "--allow-root" not in unit
    assert "--ip=127.0.0.1 --port=8890" in unit and "EnvironmentFile=/etc/vmlab/singleuser.env" in unit
    assert "--allow-root" in server.unit("root")[0]
    with pytest.raises(BadInput):
        server.unit("ubuntu; rm")
    assert through_tunnel("https://hub.example.org/hub/api?x=1", 9) == "http://127.0.0.1:9/hub/api?x=1"


@pytest.mark.parametrize("path", ["jupyterhub-singleuser", "/opt/x y/bin/s", "/opt/../bin/s", "/opt/$(x)"])
def test_the_singleuser_command_is_a_plain_absolute_path(path: str) -> None:
    with pytest.raises(BadInput):
        check_command(path)


def test_cost_today_counts_from_midnight_or_the_last_start() -> None:
    assert running_cost(2.0, NOON - dt.timedelta(hours=1), NOON) == pytest.approx(2.0)
    assert running_cost(2.0, NOON - dt.timedelta(days=2), NOON) == pytest.approx(24.0)  # since midnight UTC
    spend = Spend.of([(1.0, NOON - dt.timedelta(minutes=30)), (3.0, NOON)], ledger_usd=1.0, now=NOON)
    assert (spend.spent, spend.hourly) == (pytest.approx(1.5), 4.0)


def test_a_spawn_must_fit_spent_plus_an_hour_of_every_lab() -> None:
    spend = Spend(spent=1.0, hourly=2.0)
    check_can_spawn(spend, hourly=1.0, budget=4.0)  # 1 + 2 + 1 = 4 fits
    check_can_spawn(spend, hourly=100.0, budget=0.0)  # no budget
    with pytest.raises(BadInput, match=r"budget of \$3.99 a day is reached"):
        check_can_spawn(spend, hourly=1.0, budget=3.99)
    assert spend.reached(1.0) and not spend.reached(1.01) and not spend.reached(0.0)


def test_the_ledger_keeps_today_only(tmp_path: Path) -> None:
    ledger = Ledger("cls", tmp_path / "hub")
    assert ledger.spent(NOON) == 0.0
    ledger.add(0.5, NOON)
    ledger.add(0.25, NOON)
    assert ledger.spent(NOON) == pytest.approx(0.75)
    tomorrow = NOON + dt.timedelta(days=1)
    ledger.add(1.0, tomorrow)
    assert ledger.spent(tomorrow) == 1.0 and ledger.spent(NOON) == 0.0
    assert (tmp_path / "hub" / "cls-spend.json").stat().st_mode & 0o777 == 0o600


class _Quoting:
    name = "ec2"

    def offer(self, instance_type: str | None, image: str | None = None, spot: bool = False) -> None:
        raise NotImplementedError

    def list_price(self, instance_type: str) -> float | None:
        return {"g4dn.xlarge": 0.526}.get(instance_type)


class _Unpriced:
    name = "container"


def test_a_labs_price_is_the_instructors_figure_else_the_providers() -> None:
    quoting, unpriced = _Quoting(), _Unpriced()
    assert lab_price(quoting, "g4dn.xlarge", 0.0, 20.0) == 0.526  # type: ignore[arg-type]
    assert lab_price(quoting, "g4dn.xlarge", 0.9, 20.0) == 0.9  # type: ignore[arg-type]
    assert lab_price(unpriced, None, 0.25, 20.0) == 0.25  # type: ignore[arg-type]
    assert lab_price(unpriced, None, 0.0, 0.0) is None  # type: ignore[arg-type]  # no budget: no price needed


@pytest.mark.parametrize("provider, instance_type, says", [
    (_Unpriced(), None, "the container provider quotes none"),
    (_Quoting(), "p5.48xlarge", "ec2 has none for p5.48xlarge"),
    (_Quoting(), None, "the ec2 provider quotes none without an instance type"),
])
def test_a_budget_without_a_price_is_refused_in_one_line(provider: object, instance_type: str | None,
                                                         says: str) -> None:
    with pytest.raises(BadInput, match=f"a class budget needs prices: {says}") as caught:
        lab_price(provider, instance_type, 0.0, 20.0)  # type: ignore[arg-type]
    assert "c.LabSpawner.hourly_usd" in (caught.value.hint or "") and "\n" not in str(caught.value)
