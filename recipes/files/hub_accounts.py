"""Give every listed hub user a NativeAuthenticator account with a random password, before JupyterHub starts.

Run by recipes/jupyterhub.py's unit as root, with the hub's own Python (it imports nativeauthenticator)::

    /opt/jupyterhub/bin/python hub_accounts.py /var/lib/jupyterhub/jupyterhub.sqlite \
        /etc/vmlab/hub-passwords.env ana ben

A user with no account in the hub database, or no line in the passwords file, gets a new random password: its
bcrypt hash goes into the database (authorized, so no sign-up and no approval is ever needed) and `name=password`
into the root-only (0600) passwords file, which the admin reads over SSH and hands out. Nobody can claim a
listed name by signing up first: sign-up is off. A user who changed their password at /hub/change-password keeps
it (both the account and the line are there). Baked images hold neither file (the scrub removes the database
and /etc/vmlab/*.env), so each VM made from an image gets its own passwords at its first start.
"""

import os
import re
import secrets
import sys


def read_passwords(path):
    try:
        with open(path, encoding="utf-8") as f:
            return dict(line.rstrip("\n").split("=", 1) for line in f if "=" in line)
    except FileNotFoundError:
        return {}


def write_passwords(path, passwords):
    tmp = f"{path}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.writelines(f"{name}={password}\n" for name, password in sorted(passwords.items()))
    os.chmod(tmp, 0o600)
    os.replace(tmp, path)


def main(db_path, passwords_path, names):
    import bcrypt
    from jupyterhub.orm import new_session_factory
    from nativeauthenticator.orm import UserInfo  # registers its table with JupyterHub's, before they are made

    for name in names:
        if not re.fullmatch(r"[a-z_][a-z0-9_-]{0,31}", name):
            sys.exit(f"hub_accounts: {name!r} is not a user name")
    # JupyterHub's own set-up of its database (tables, schema version), as the hub does at start
    session = new_session_factory(f"sqlite:///{db_path}")
    passwords = read_passwords(passwords_path)
    with session() as db:
        for name in names:
            account = UserInfo.find(db, name)
            if account is not None and name in passwords:
                continue
            passwords[name] = secrets.token_urlsafe(12)
            hashed = bcrypt.hashpw(passwords[name].encode(), bcrypt.gensalt())
            if account is None:
                db.add(UserInfo(username=name, password=hashed, is_authorized=True))
            else:
                account.password, account.is_authorized = hashed, True
            # the file first: a crash between the two leaves a password the admin can read, never a lost one
            write_passwords(passwords_path, passwords)
            db.commit()
    os.chmod(db_path, 0o600)


if __name__ == "__main__":
    if len(sys.argv) < 4:
        sys.exit("usage: hub_accounts.py DATABASE PASSWORDS_FILE USER...")
    main(sys.argv[1], sys.argv[2], sys.argv[3:])
