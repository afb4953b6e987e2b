"""The scan would catch an Azure SAS token left in agent.env (that the scrub removes agent.env and the agent's
state is proven on a fake root in test_scrub.py)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from vmlab.workflows.scrub import SCAN_SCRIPT

SIG = "sig=" + "AbCdEfGh1234%2B5678ijklMNOPqrstUVWXyz0123%3D"  # split so this file itself is no finding


def scan(root: Path) -> dict[str, str]:
    out = subprocess.run([sys.executable, "-", str(root)], input=SCAN_SCRIPT, text=True, capture_output=True,
                         check=True).stdout
    return {Path(p).name: what for p, what in json.loads(out)}


@pytest.mark.parametrize(("line", "what"), [
    (f"AZURE_BLOB_SAS_TOKEN=sv=2022-11-02&ss=b&srt=co&sp=rwdlac&se=2026-12-01T00:00:00Z&{SIG}", "signature"),
    (f"AZURE_BLOB_SAS_TOKEN={SIG}&sv=2022-11-02&sp=rwdl", "signature"),  # the signature first
    (f"VMLAB_SYNC_URL=https://acct.blob.core.windows.net/c/alice?sv=2022-11-02&{SIG}", "signature"),
    ("AZURE_STORAGE_SAS_TOKEN='" + "x" * 40 + "'", "token"),  # no sig= at all, but named as one
])
def test_scan_catches_a_sas_token_in_agent_env(tmp_path: Path, line: str, what: str) -> None:
    (tmp_path / "agent.env").write_text(f"VMLAB_IDLE_MINUTES=30\n{line}\n")
    assert scan(tmp_path) == {"agent.env": f"Azure SAS {what}"}


def test_plain_agent_env_is_no_finding(tmp_path: Path) -> None:
    (tmp_path / "agent.env").write_text("VMLAB_SYNC_URL=s3://b/alice\nVMLAB_IDLE_MINUTES=30\nVMLAB_DEADLINE=0\n"
                                        "AZURE_BLOB_SAS_TOKEN=\n")
    assert scan(tmp_path) == {}
