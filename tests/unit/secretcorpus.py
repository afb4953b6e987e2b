"""A fake builder root with secrets planted where real builds leave them, and look-alikes that are no secret.

Every value is made at run time from pieces, so this file itself holds nothing a scanner would flag.
`PLANTED` maps a path under the root to the kind the scan must report; `DECOYS` are paths it must not report.
"""

from __future__ import annotations

import hashlib
import os
import random
from pathlib import Path

from vmlab.workflows.secretscan import CHUNK

_rng = random.Random(1234)
UPPER = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
ALNUM = UPPER + UPPER.lower() + "0123456789"
B64 = ALNUM + "+/"


def rand(n: int, alphabet: str = ALNUM) -> str:
    return "".join(_rng.choice(alphabet) for _ in range(n))


def token(prefix: str, n: int, alphabet: str = ALNUM) -> str:
    # a real token has digits and both cases; make sure, as a random draw of a short one might not
    return prefix + rand(n - 3, alphabet) + "a7Q"


AWS_ID = "AK" + "IA" + rand(16, UPPER + "0123456789")
AWS_SECRET = rand(40, B64)
BEGIN = "-----BEG" + "IN "
PEM_BODY = "\n".join(rand(64, B64) for _ in range(5))
GH = "gh" + "p_"
HF = "h" + "f_"
SK = "s" + "k-"


def pem(label: str, escaped: bool = False) -> str:
    nl = "\\n" if escaped else "\n"
    return f"{BEGIN}{label} KEY-----{nl}{PEM_BODY.replace(chr(10), nl)}{nl}-----END {label} KEY-----{nl}"


PRIV = "PRIV" + "ATE"

# path under the root -> (content, kind the scan reports)
PLANTED: dict[str, tuple[str | bytes, str]] = {
    "root/.aws/credentials": (f"[default]\naws_access_key_id = {AWS_ID}\naws_secret_access_key = {AWS_SECRET}\n",
                              "AWS access key id"),
    "home/admin/.aws/config": (f"[profile ci]\naws_secret_access_key=\"{rand(40, B64)}\"\n", "AWS secret access key"),
    "opt/app/settings.py": (f'DEBUG = False\nAWS_SECRET = "{rand(40, B64)}"\n', "AWS secret access key"),
    "srv/app/creds.json": (f'{{"Credentials": {{"SecretAccessKey": "{rand(40, B64)}"}}}}\n', "AWS secret access key"),
    "home/admin/.ssh/id_ed25519": (pem(f"OPENSSH {PRIV}"), "private key"),
    "etc/ssl/private/lab.key": (pem(f"RSA {PRIV}"), "private key"),
    "home/admin/.gnupg/secret.asc": (f"{BEGIN}PGP {PRIV} KEY BLOCK-----\n\n{PEM_BODY}\n", "private key"),
    "opt/app/gcp-service-account.json": ('{"type": "service_account", "private_key": "' + pem(f"{PRIV}", True)
                                         + '"}\n', "private key"),
    "home/admin/keys/deploy.ppk": ("PuTTY-User-Key-File-" + f"3: ssh-ed25519\nEncryption: none\n{PEM_BODY}\n",
                                   "PuTTY private key"),
    "home/admin/.git-credentials": (f"https://admin:{token(GH, 36)}@github.com\n", "git credentials file"),
    "home/admin/src/tool/.git/config": ("[remote \"origin\"]\n\turl = https://oauth2:" + token("gl" + "pat-", 20)
                                        + "@gitlab.com/team/tool.git\n", "GitLab token"),
    "home/admin/src/lib/.git/config": ('[http "https://git.corp/"]\n\textraheader = AUTHORIZATION: basic '
                                       + rand(32, B64) + "\n", "git HTTP auth header"),
    "home/admin/.cache/huggingface/token": (token(HF, 34), "Hugging Face token file"),
    "opt/app/.env": (f"MODEL=llama\nHF_TOKEN={token(HF, 34)}\n", "Hugging Face token"),
    "home/admin/.kaggle/kaggle.json": ('{"username":"admin","key":"' + rand(32, "0123456789abcdef") + '"}',
                                       "Kaggle credentials"),
    "home/admin/.pgpass": ("db.corp:5432:*:admin:" + rand(16) + "\n", "PostgreSQL password file"),
    "home/admin/.npmrc": (f"//registry.npmjs.org/:_authToken={token('np' + 'm_', 36)}\n", "npm token"),
    "srv/web/.npmrc": (f"registry=https://npm.corp/\n_authToken={rand(8, 'abcdef0123')}-{rand(4, 'abcdef01')}\n",
                       "npm auth token"),
    "home/admin/.pypirc": ("[pypi]\nusername = __token__\npassword = " + "py" + "pi-AgE" + rand(60) + "\n",
                           "PyPI token"),
    "root/.vault-token": (token("hv" + "s.", 90), "Vault token file"),
    "etc/vault/agent.hcl": (f'auto_auth {{}}\ntoken = "{token("hv" + "s.", 90)}"\n', "Vault token"),
    "home/admin/.docker/config.json": ('{"auths": {"ghcr.io": {"auth": "' + rand(40, B64) + '="}}}\n',
                                       "Docker registry auth"),
    "home/admin/.netrc": (f"machine api.wandb.ai\n  login user\n  password {rand(40, 'abcdef0123456789')}\n",
                          "netrc file"),
    "etc/apt/auth.conf.d/private.conf": (f"machine apt.corp.example login ci password {rand(20)}\n",
                                         "netrc password"),
    "home/admin/.local/share/jupyter/runtime/jpserver-4242.json": (
        '{"port": 8888, "token": "' + rand(48, "0123456789abcdef") + '"}\n', "Jupyter runtime file"),
    "opt/jupyter/etc/jupyter/jupyter_server_config.py": (f"c.IdentityProvider.token = '{rand(48)}'\n",
                                                         "Jupyter token"),
    "home/admin/.jupyter/jupyter_server_config.json": ('{"IdentityProvider": {"token": "' + rand(32) + '"}}\n',
                                                       "Jupyter token"),
    "etc/vmlab/jupyter.env": (f"JUPYTER_TOKEN={rand(43)}\n", "Jupyter token"),
    "home/admin/.config/slack/config": (f"bot: {token('xo' + 'xb-', 40, ALNUM + '-')}\n", "Slack token"),
    "opt/bot/config.yaml": ("webhook: https://hooks.slack.com/" + f"services/T{rand(8, UPPER)}/B{rand(8, UPPER)}/"
                            + rand(24) + "\n", "Slack webhook"),
    "home/admin/.config/openai/env": (f"OPENAI_API_KEY={token(SK + 'proj-', 120, ALNUM + '_-')}\n",
                                      "OpenAI/Anthropic API key"),
    "home/admin/data/claude.ipynb": ('{"cells": [{"source": ["client = Anthropic(api_key=\\"'
                                     + token(SK + "ant-api03-", 95, ALNUM + "_-") + '\\")"]}]}\n',
                                     "OpenAI/Anthropic API key"),
    "etc/billing.conf": (f"stripe_key = {token('sk' + '_live_', 24)}\n", "Stripe key"),
    "var/www/html/maps.js": (f"const key = '{'AI' + 'za' + rand(35, ALNUM + '_-')}';\n", "Google API key"),
    "opt/app/google-oauth.json": ('{"installed": {"client_secret": "GOC' + 'SPX-' + rand(28) + '"}}\n',
                                  "Google OAuth client secret"),
    "opt/app/azure.env": ("CONN=DefaultEndpointsProtocol=https;AccountName=labdata;Account" + "Key="
                          + rand(86, B64) + "==;EndpointSuffix=core.windows.net\n", "Azure storage account key"),
    "etc/vmlab/agent.env": ("VMLAB_SYNC_URL=https://acct.blob.core.windows.net/c/alice?sv=2022-11-02&s" + "ig="
                            + rand(44, B64) + "\n", "Azure SAS signature"),
    "home/admin/.bashrc": ("alias ll='ls -l'\nexport AZURE_STORAGE_SAS_TOKEN='sv=2022-11-02&ss=b&sp=rl&"
                           + "s" + "e=2027-01-01'\n", "Azure SAS token"),
    "etc/environment": ("PATH=/usr/bin:/bin\nhttp_proxy=http://alice:" + rand(12) + "@10.0.2.2:3128\n",
                        "password in a URL"),
    "etc/apt/apt.conf.d/90cloud-init-aptproxy": ('Acquire::http::Proxy "http://alice:' + rand(12)
                                                 + '@10.0.2.2:3128";\n', "password in a URL"),
    "etc/pip.conf": ("[global]\nindex-url = https://ci:" + rand(20) + "@pypi.corp.example/simple\n",
                     "password in a URL"),
    "opt/app/db.ini": ("[db]\nurl = postgresql://app:" + rand(14) + "@db.internal:5432/app\n", "password in a URL"),
    "home/admin/.condarc": ("channels:\n  - https://conda.anaconda.org/t/" + rand(34, ALNUM + "-")
                            + "/private\n", "conda channel token"),
    "opt/conda/conda-meta/history": ("==> 2026-01-01 <==\n# cmd: conda install -c https://conda.anaconda.org/t/"
                                     + rand(30) + "/corp torch\n", "conda channel token"),
    "home/admin/.config/gh/hosts.yml": (f"github.com:\n    oauth_token: {token('gh' + 'o_', 36)}\n", "GitHub token"),
    "opt/actions-runner/.credentials": ('{"refresh": "' + token("gh" + "r_", 36) + '"}\n', "GitHub token"),
    "srv/ci/repo/.git/credentials": ("https://ci:" + rand(20) + "@git.corp.example\n", "git credentials file"),
    "srv/shop/.env": (f"STRIPE_RESTRICTED={token('rk' + '_live_', 24)}\n", "Stripe key"),
    "var/lib/app/state.json": ('{"installation_token": "' + token("gh" + "s_", 36) + '"}\n', "GitHub token"),
    "var/spool/cron/crontabs/root": ('0 * * * * curl -H "Authorization: token ' + token(GH, 36)
                                     + '" https://api.github.com/\n', "GitHub token"),
    "var/tmp/.build/ci.log": (f"using {'github' + '_pat_' + rand(82, ALNUM + '_')}\n", "GitHub token"),
    "tmp/.env": ("GITLAB=" + token("gl" + "pat-", 20) + "\r\n", "GitLab token"),
    "usr/local/bin/deploy.sh": ("#!/bin/sh\nexport API_TOKEN=" + rand(24) + "\ncurl https://x/\n",
                                "secret in an environment variable"),
    "usr/lib/systemd/system/app.service": ('[Service]\nEnvironment="DB_PASSWORD=' + rand(16) + '"\n',
                                           "secret in an environment variable"),
    "etc/systemd/system/lab.service.d/override.conf": (f"[Service]\nEnvironment=HF_TOKEN={token(HF, 34)}\n",
                                                       "Hugging Face token"),
    "home/admin/.config/sendgrid.env": (f"KEY={'S' + 'G.' + rand(22, ALNUM + '_-')}.{rand(43, ALNUM + '_-')}\n",
                                        "SendGrid key"),
    "opt/venv/lib/python3.11/site-packages/.env": (f"DATABRICKS={'da' + 'pi' + rand(32, '0123456789abcdef')}\n",
                                                   "Databricks token"),
    "etc/owned.conf": (f"# edited after install\ntoken = {token('gh' + 'u_', 36)}\n", "GitHub token"),
}
#: written separately: a non-UTF-8 file name, a big file with a key across a chunk border, a sparse file
NON_UTF8_NAME = b"home/admin/caf\xe9-notes.txt"
BIG = "home/admin/data/big.bin"
SPARSE = "var/lib/app/disk.img"

OWNED_PRISTINE_CONF = "etc/owned-pristine.conf"
# look-alikes and package-owned or pruned copies: never reported
DECOYS: dict[str, str] = {
    "usr/share/doc/owned-pkg/example.conf": pem(f"RSA {PRIV}") + f"id = {AWS_ID}\n",  # dpkg owns it
    OWNED_PRISTINE_CONF: "# example: url = postgresql://user:" + "hunter2secret@db/app\n",  # conffile, unmodified
    "opt/venv/lib/python3.11/site-packages/tornado/test/test.key": pem(f"{PRIV}"),  # in RECORD
    "opt/venv/lib/python3.11/site-packages/tornado/test/__pycache__/x.cpython-311.pyc": pem(f"{PRIV}"),  # in RECORD
    "usr/lib/python3/dist-packages/owned/__pycache__/ssl.cpython-311.pyc": pem(f"{PRIV}"),  # compiled from owned
    "opt/conda/lib/python3.11/site-packages/certifi/test.pem": pem(f"{PRIV}"),  # in conda-meta
    "opt/conda/pkgs/openssl-3.0.0-0/ssl/test.key": pem(f"{PRIV}"),  # an unpacked conda package
    "opt/app/node_modules/ssh2/test/fixtures/id_rsa": pem(f"RSA {PRIV}"),
    "home/admin/src/tool/.git/objects/pack/pack-1.pack": f"{AWS_ID} {token(GH, 36)}\n",
    "proc/1/environ": f"HF_TOKEN={token(HF, 34)}",  # not on the disk
    "run/secrets/token": token(GH, 36),
    "var/lib/dpkg/info/owned-pkg.postinst": pem(f"RSA {PRIV}"),
    "etc/ssl/certs/corp-ca.pem": "-----BEGIN CERTIFICATE-----\n" + PEM_BODY + "\n-----END CERTIFICATE-----\n",
    "home/admin/.ssh/id_ed25519.pub": "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAI" + rand(43) + " admin@lab\n",
    "home/admin/.ssh/authorized_keys": "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAI" + rand(43) + " admin@laptop\n",
    "opt/app/.env.example": ("GITHUB_TOKEN=${GITHUB_TOKEN}\nAPI_KEY=<your key here>\nSECRET=changeme\n"
                             "OPENAI_API_KEY=your-openai-api-key-here\nDB_PASSWORD_FILE=/run/secrets/db\n"
                             "PROXY=http://proxy.corp:3128/\nREPO=https://${USER}:${PASS}@git.corp/x.git\n"
                             "DSN=postgres://user:@db/app\nLOGIN=https://user@host/\n"),
    "home/admin/notes.md": ("AKIA is how AWS key ids start; use scikit-learn (sk-learn) and the risk-"
                            "free rate; hf_hub_download() and npm_config_cache; ghp_ tokens are GitHub's.\n"
                            "c.PasswordIdentityProvider.hashed_password = 'argon2:$argon2id$v=19$m=10240'\n"),
    "etc/systemd/system/app.service": "[Service]\nEnvironment=PYTHONPATH=/opt/app\nExecStart=/opt/app/run\n",
}


def plant(root: Path) -> None:
    """Write the corpus, the decoys and the package managers' records of what they own under `root`."""
    for rel, (content, _kind) in PLANTED.items():
        _write(root / rel, content)
    for rel, text in DECOYS.items():
        _write(root / rel, text)
    (root / "home/admin").mkdir(parents=True, exist_ok=True)
    with open(os.path.join(os.fsencode(root), NON_UTF8_NAME), "wb") as f:
        f.write(b"slack " + ("xo" + "xp-" + rand(40, ALNUM + "-")).encode() + b"\n")
    _big(root / BIG)
    _sparse(root / SPARSE)
    _records(root)


def all_planted() -> dict[str, str]:
    """Every planted path as the scan reports it (relative to the root, "/..."), with its kind."""
    out = {"/" + rel: kind for rel, (_c, kind) in PLANTED.items()}
    out["/" + os.fsdecode(NON_UTF8_NAME)] = "Slack token"
    out["/" + BIG] = "private key"
    out["/" + SPARSE] = "Vault token"
    return out


def _write(path: Path, content: str | bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content.encode() if isinstance(content, str) else content)


def _big(path: Path) -> None:
    """6 MiB of data whose only secret is a key header split by the first chunk border."""
    path.parent.mkdir(parents=True, exist_ok=True)
    header = (BEGIN + f"OPENSSH {PRIV} KEY-----\n").encode()
    filler = bytes(_rng.getrandbits(8) & 0x7F | 0x80 for _ in range(4096))  # high bytes: matches nothing
    with open(path, "wb") as f:
        written = 0
        while written < CHUNK - 10:
            part = filler[: min(len(filler), CHUNK - 10 - written)]
            f.write(part)
            written += len(part)
        f.write(header)
        while written < 6 * CHUNK:
            f.write(filler)
            written += len(filler)


def _sparse(path: Path) -> None:
    """A 1 GiB file that is a hole but for a token at 512 MiB (read by its data extents, not byte by byte)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as f:
        f.seek(512 << 20)
        f.write(("vault " + token("hv" + "s.", 90) + "\n").encode())
        f.truncate(1 << 30)


def _records(root: Path) -> None:
    """What dpkg, pip and conda record: owned files, the conffile's md5, a RECORD, conda-meta, a pkgs entry."""
    info = root / "var/lib/dpkg/info"
    info.mkdir(parents=True, exist_ok=True)
    original = b"# the conffile as shipped\n"
    (info / "owned-pkg.list").write_text("/.\n/usr\n/usr/share/doc/owned-pkg/example.conf\n/etc/owned.conf\n"
                                         f"/{OWNED_PRISTINE_CONF}\n/usr/lib/python3/dist-packages/owned/ssl.py\n")
    pristine = hashlib.md5((root / OWNED_PRISTINE_CONF).read_bytes()).hexdigest()
    (root / "var/lib/dpkg/status").write_text(
        "Package: owned-pkg\nStatus: install ok installed\nConffiles:\n"
        f" /etc/owned.conf {hashlib.md5(original).hexdigest()}\n /{OWNED_PRISTINE_CONF} {pristine}\n\n")
    _write(root / "usr/lib/python3/dist-packages/owned/ssl.py", "# owned source\n")
    site = root / "opt/venv/lib/python3.11/site-packages"
    record = site / "tornado-6.4.dist-info/RECORD"
    _write(record, "tornado/test/test.key,sha256=x,10\ntornado/test/__pycache__/x.cpython-311.pyc,,\n"
                   "tornado-6.4.dist-info/RECORD,,\n")
    conda = root / "opt/conda"
    _write(conda / "conda-meta/certifi-2024.1.json", '{"name": "certifi", "files": '
                                                      '["lib/python3.11/site-packages/certifi/test.pem"]}\n')
    _write(conda / "pkgs/openssl-3.0.0-0/info/index.json", '{"name": "openssl"}\n')
    _write(conda / "pkgs/openssl-3.0.0-0/info/paths.json", '{"paths": []}\n')
