"""Ubuntu releases, built with Debian's debootstrap (`vmlab.providers.debian`).

Debian 12's debootstrap has no script named `noble`; Ubuntu's releases since gutsy share one script, which it
does have. Debian has no package of Ubuntu's archive keyring either: the keyring comes from Ubuntu's own
`ubuntu-keyring` package on the mirror, accepted only when it matches the sha256 pinned here
(`vmlab.providers.keyrings`). `$VMLAB_UBUNTU_MIRROR` names another mirror (the package is fetched from it and
still has to match the pin); `$VMLAB_UBUNTU_KEYRING` a keyring file to use instead.

Example::

    keys = UBUNTU_24_04.keyring(cache)          # fetched and checked on first use
    debian.bootstrap(UBUNTU_24_04, work / "rootfs", ("systemd-sysv",), keys, progress)
"""

from __future__ import annotations

from vmlab.providers.debian import Distribution
from vmlab.providers.keyrings import PinnedKeyring

#: ubuntu-keyring 2023.11.28.1 (noble's). Pinned after checking it three ways: its archive keyring holds the
#: "Ubuntu Archive Automatic Signing Key (2018)", F6EC B376 2474 EDA9 D21B 7022 8719 20D1 991B C93C, the
#: fingerprint Ubuntu publishes; that key signs noble's Release file (gpgv), whose Packages.xz lists this sha256
#: for the package; and the keyring file inside has the sha256 a public pin of it lists
#: (80a36b0a6de2f69f49d2df75ef473ccde121e9e190b9ea01d20a4f63778d5c31). To move to a new version, check it
#: the same way before changing the pin.
UBUNTU_KEYRING = PinnedKeyring(
    pool_path="pool/main/u/ubuntu-keyring/ubuntu-keyring_2023.11.28.1_all.deb",
    sha256="36de43b15853ccae0028e9a767613770c704833f82586f28eb262f0311adb8a8",
    member="usr/share/keyrings/ubuntu-archive-keyring.gpg")

UBUNTU_24_04 = Distribution(
    name="Ubuntu", suite="noble", default_mirror="http://archive.ubuntu.com/ubuntu", env="VMLAB_UBUNTU",
    # universe: python3-venv (and most of what recipes install) is there, not in main
    components=("main", "universe"), keyring_package=UBUNTU_KEYRING,
    script="/usr/share/debootstrap/scripts/gutsy")
