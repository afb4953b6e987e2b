"""pip.Locked for real: pip installs a locked wheel from PyPI into a venv under tmp_path with --require-hashes, and
refuses it when one hash in the lock is wrong."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "unit"))
from planning import apply_locally  # noqa: E402
from test_op_pip_lock import SIX  # noqa: E402

from vmlab.operations.pip import Locked  # noqa: E402

pytestmark = pytest.mark.timeout(300)


def test_real_install_from_pypi_and_a_wrong_hash_is_refused(tmp_path: Path) -> None:
    """Real pip against PyPI into a venv under tmp_path: the locked wheel installs; one changed hash stops pip."""
    venv = tmp_path / "venv"
    lock = tmp_path / "lock.txt"
    lock.write_text(SIX)
    op = Locked(str(lock), dest=str(tmp_path / "requirements.lock"), venv=str(venv), python=sys.executable)
    commands = apply_locally(op)
    assert commands[-1].argv[3:6] == ("install", "--require-hashes", "--no-deps")
    assert subprocess.run([venv / "bin" / "python", "-c", "import six; assert six.__version__ == '1.17.0'"],
                          timeout=60).returncode == 0
    assert apply_locally(op) == []  # installed and the same lock: nothing to do

    subprocess.run([venv / "bin" / "python", "-m", "pip", "uninstall", "-qy", "six"], check=True, timeout=120)
    lock.write_text(SIX.replace("4721f391", "0000f391").replace("ff70335d", "0000335d"))
    tampered = Locked(str(lock), dest=str(tmp_path / "requirements.lock"), venv=str(venv), python=sys.executable)
    with pytest.raises(AssertionError, match="DO NOT MATCH THE HASHES"):
        apply_locally(tampered)
