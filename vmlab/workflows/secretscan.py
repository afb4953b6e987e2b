"""The secret scan that runs ON a builder (as root, `python3 - ARGS < this file`): standard library only, Python 3.8+.

    python3 - [--root DIR] [PATH ...]

It walks the whole filesystem (or PATHs) and prints JSON `[[path, kind], ...]`, one entry per file, never the
secret itself. `--root DIR` makes DIR stand for / (tests scan a fake builder tree); reported paths are then
relative to it ("/etc/..."). Not read, because no secret a build leaves can be there:

- what is not on the disk: /proc, /sys, /dev, /run and any pseudo or memory file system mounted elsewhere;
- files a package manager installed and owns: dpkg's (/var/lib/dpkg/info/*.list), pip's (RECORD), conda's
  (conda-meta); their own state (/var/lib/dpkg, /var/lib/apt/lists, /var/cache/apt, snaps), node_modules,
  unpacked conda packages and git's object store. Files under /etc are read even when a package owns them (an
  admin or a recipe edits them); a hit there is dropped only when the file is byte for byte what dpkg installed;
- what the image's /etc/vmlab/scan-ignore lists (one absolute path a line): a recipe's way out of a false
  positive it has checked.

Every other regular file is read whole, in chunks (patterns match across chunk borders), sparse files by their
data extents only. Besides the patterns, a few files are findings by name alone when not empty (.pgpass,
.vault-token, .git-credentials, a Jupyter runtime file, a Hugging Face token file, kaggle.json, .netrc).
Timing and counts go to stderr as one JSON line.
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
import re
import stat
import sys
import time

CHUNK = 1 << 20
#: a match is at most this long (every variable part of a pattern is bounded below it), so keeping this much of
#: the previous chunk in front of the next one finds every match that crosses a border
OVERLAP = 4096

# Character classes are printable ASCII (`[!-~]`; `[!#-&(-~]` leaves out the quotes), never "anything but a
# space": binary files (an initrd, a model) must not match by chance.
_UPPER = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
_WORD = _UPPER + b"abcdefghijklmnopqrstuvwxyz_"


def _p(kind: str, anchors: tuple[bytes, ...], rx: bytes,
       before: bytes = b"") -> tuple[str, tuple[bytes, ...], bytes, bytes]:
    return kind, anchors, rx, before


# (kind, literal anchors: a chunk holding none of them cannot match, regex, bytes that must not come just before
# a match). The last is checked here rather than by a look-behind, which would keep the regex engine from
# jumping to the literal a pattern starts with (several times slower). Most specific first: a file is reported
# once, with the first kind that matched. Literals are split where this file would otherwise match itself.
PATTERNS: list[tuple[str, tuple[bytes, ...], bytes, bytes]] = [
    _p("private key", (b"PRIVATE KEY",), rb"-----BEGIN (?:[A-Z0-9]{1,20} ){0,3}PRIVATE KEY(?: BLOCK)?-----"),
    _p("PuTTY private key", (b"PuTTY-User-Key-File-",), rb"PuTTY-User-Key-File-[0-9]{1,3}: "),
    _p("AWS access key id", (b"AKIA", b"ASIA"), rb"A(?:KIA|SIA)[A-Z0-9]{16}(?![A-Z0-9])", _UPPER),
    _p("AWS secret access key", (b"ecret", b"ECRET"),
     rb"(?:[Ss]ecret_?[Aa]ccess_?[Kk]ey|SECRET_?ACCESS_?KEY)[\"']?\s{0,8}[:=]\s{0,8}[\"']?[A-Za-z0-9/+]{40}"
     rb"(?![A-Za-z0-9/+])"),
    _p("AWS secret access key", (b"aws", b"AWS", b"Aws"),
     rb"(?:aws|AWS|Aws)[A-Za-z0-9_.\-]{0,30}[\"']?\s{0,8}[:=]\s{0,8}[\"'][A-Za-z0-9/+]{40}[\"']"),
    _p("GitHub token", (b"ghp_", b"gho_", b"ghs_", b"ghu_", b"ghr_"),
     rb"gh[pousr]_[A-Za-z0-9]{36,255}(?![A-Za-z0-9_])", _WORD),
    _p("GitHub token", (b"github_pat_",), rb"github_pat_[A-Za-z0-9_]{50,255}"),
    _p("Hugging Face token", (b"hf_",), rb"hf_[A-Za-z0-9]{30,64}(?![A-Za-z0-9_])", _WORD),
    _p("GitLab token", (b"glpat-", b"gldt-", b"glrt-", b"glptt-"), rb"gl(?:pat|dt|rt|ptt)-[A-Za-z0-9_\-]{20,255}"),
    _p("Slack token", (b"xox",), rb"xox[abprs]-[A-Za-z0-9\-]{10,255}"),
    _p("Slack webhook", (b"hooks.slack.com/",), rb"hooks\.slack\.com/services/T[A-Z0-9]{4,20}/B[A-Z0-9]{4,20}/\w{16,}"),
    _p("OpenAI/Anthropic API key", (b"sk-",),
     rb"sk-(?=[\w\-]{0,255}[0-9])(?=[\w\-]{0,255}[A-Z])(?=[\w\-]{0,255}[a-z])[\w\-]{32,255}", _WORD + b"-"),
    _p("npm token", (b"npm_",), rb"npm_[A-Za-z0-9]{36,64}(?![A-Za-z0-9])", _WORD),
    _p("npm auth token", (b"_auth",), rb"(?m)_auth(?:Token)?\s{0,8}=\s{0,8}(?![\"']?\$\{)[!#-&(-~]{8,}"),
    _p("PyPI token", (b"pypi-",), rb"pypi-AgE[A-Za-z0-9_\-]{50,255}"),
    _p("Vault token", (b"hvs.", b"hvb.", b"hvr."), rb"hv[sbr]\.[A-Za-z0-9_\-]{24,255}", _WORD),
    _p("Stripe key", (b"_live_",), rb"(?:sk|rk)_live_[A-Za-z0-9]{20,255}"),
    _p("Google API key", (b"AIza",), rb"AIza[0-9A-Za-z_\-]{35}"),
    _p("Google OAuth client secret", (b"GOCSPX-",), rb"GOCSPX-[A-Za-z0-9_\-]{20,64}"),
    _p("Azure storage account key", (b"AccountKey=",), rb"AccountKey=[A-Za-z0-9+/]{40,120}={0,2}"),
    _p("Azure SAS signature", (b"sig=",), rb"(?:^|[?&\s\"'=])sig=[A-Za-z0-9%/+]{30,255}"),
    _p("Azure SAS token", (b"SAS",),
     rb"(?m)^[ \t]{0,64}(?:export[ \t]{1,8})?AZURE_[A-Z_]{0,64}SAS[A-Z_]{0,64}[ \t]{0,8}=[ \t]{0,8}['\"]?"
     rb"[!#-&(-~]{16,}"),
    _p("SendGrid key", (b"SG.",), rb"SG\.[A-Za-z0-9_\-]{22}\.[A-Za-z0-9_\-]{43}"),
    _p("Databricks token", (b"dapi",), rb"dapi[0-9a-f]{32}(?![0-9a-f])", _WORD),
    _p("conda channel token", (b"/t/",), rb"anaconda\.(?:org|com)/t/[A-Za-z0-9_\-]{8,255}/"),
    _p("Jupyter token", (b"JUPYTER_TOKEN",), rb"JUPYTER_TOKEN\s{0,8}=\s{0,8}[\"']?[A-Za-z0-9_\-]{16,}"),
    _p("Jupyter token", (b"\"token\"",), rb"\"token\"\s{0,8}:\s{0,8}\"[A-Za-z0-9_\-]{16,255}\""),
    _p("Jupyter token", (b".token",), rb"\.token\s{0,8}=\s{0,8}[\"'][A-Za-z0-9_\-]{16,255}[\"']"),
    _p("Kaggle API key", (b"\"key\"",), rb"\"key\"\s{0,8}:\s{0,8}\"[0-9a-f]{32}\""),
    _p("Docker registry auth", (b"\"auth\"",), rb"\"auth\"\s{0,8}:\s{0,8}\"[A-Za-z0-9+/]{8,1024}={0,2}\""),
    _p("git HTTP auth header", (b"xtraheader", b"xtraHeader", b"XTRAHEADER"),
     rb"(?:[Ee]xtra[Hh]eader|EXTRAHEADER)\s{0,8}=\s{0,8}[\"']?(?:[Aa]uthorization|AUTHORIZATION):\s{0,8}\w{1,20}"
     rb"\s{1,8}[!#-&(-~]{8,}"),
    _p("netrc password", (b"machine",),
     rb"(?m)^\s{0,64}machine\s{1,64}[!-~]{1,255}\s{1,64}(?:login\s{1,64}[!-~]{1,255}\s{1,64})?password\s{1,64}"
     rb"[!-~]"),
    _p("password in a URL", (b"://",),
     rb"://[A-Za-z0-9._~%!$&()*+,;=\-]{0,255}:(?![$%*])[A-Za-z0-9._~%!$&()*+,;=:\-]{1,255}@[A-Za-z0-9\[]"),
    _p("secret in an environment variable", (b"KEY", b"TOKEN", b"SECRET", b"PASSWORD", b"PASSWD"),
     rb"(?m)^[ \t]{0,64}(?:export[ \t]{1,8}|Environment=\"?)?[A-Z0-9_]{0,64}"
     rb"(?:API_KEY|ACCESS_KEY|SECRET_KEY|TOKEN|SECRET|PASSWORD|PASSWD)[ \t]{0,8}=[ \t]{0,8}[\"']?"
     rb"(?![/$.~<{])(?!(?i:your|example|changeme|placeholder|dummy|sample|xxxx))[!#%&(-~]{12,}"),
]
COMPILED: list[tuple[str, tuple[bytes, ...], re.Pattern[bytes], frozenset[int]]] = [
    (kind, anchors, re.compile(rx), frozenset(before)) for kind, anchors, rx, before in PATTERNS]


def _trie(words: list[bytes]) -> bytes:
    """A regex matching any of `words`, factored by leading bytes: one pass finds every anchor present (about
    twice as fast as testing each anchor with `in`)."""
    if b"" in words:
        return b""  # a shorter anchor is enough
    groups: dict[bytes, list[bytes]] = {}
    for word in words:
        groups.setdefault(word[:1], []).append(word[1:])
    alts = [re.escape(first) + _trie(rest) for first, rest in sorted(groups.items())]
    return alts[0] if len(alts) == 1 else b"(?:" + b"|".join(alts) + b")"


ANCHORS = sorted({a for _kind, anchors, _rx, _before in PATTERNS for a in anchors})
FIND_ANCHORS = re.compile(_trie(ANCHORS))
# The search reports the shorter anchor where one begins another, and it cannot see an anchor that begins inside
# one it found ("SASIA": SAS, then not ASIA): for each anchor, the ones it may stand for and the ones to look for
# separately when it was found.
_PREFIXED = {a: [b for b in ANCHORS if b.startswith(a)] for a in ANCHORS}
_OVERLAPPING = {a: [b for b in ANCHORS if b != a and any(a[i:].startswith(b) or b.startswith(a[i:])
                                                          for i in range(1, len(a)))] for a in ANCHORS}


def anchors_in(buf: bytes) -> set[bytes]:
    """Every anchor that occurs in `buf`, possibly with a few that do not (never fewer)."""
    found = set(FIND_ANCHORS.findall(buf))
    present = {b for a in found for b in _PREFIXED[a]}
    for a in found:
        present.update(b for b in _OVERLAPPING[a] if b not in present and b in buf)
    return present


def matches(rx: re.Pattern[bytes], before: frozenset[int], buf: bytes) -> bool:
    """Whether `rx` matches `buf` at a place not preceded by a byte in `before`."""
    if not before:
        return rx.search(buf) is not None
    for m in rx.finditer(buf):
        if m.start() == 0 or buf[m.start() - 1] not in before:
            return True
    return False


#: files that are a finding when they exist and are not empty: (kind, test on the path)
NAMED = [
    ("PostgreSQL password file", lambda p: p.endswith("/.pgpass")),
    ("Vault token file", lambda p: p.endswith("/.vault-token")),
    ("git credentials file", lambda p: p.endswith(("/.git-credentials", "/git/credentials", "/.git/credentials"))),
    ("netrc file", lambda p: p.endswith(("/.netrc", "/_netrc"))),
    ("Jupyter runtime file", lambda p: "/jupyter/runtime/" in p and p.endswith(".json")),
    ("Hugging Face token file", lambda p: p.endswith(("/huggingface/token", "/huggingface/stored_tokens"))),
    ("Kaggle credentials", lambda p: p.endswith("/kaggle.json")),
]

#: never on the disk an image is made from
PSEUDO_TREES = ("/proc", "/sys", "/dev", "/run", "/var/run", "/var/lock")
#: a package manager's own state, rebuilt from signed indexes
PACKAGE_TREES = ("/var/lib/dpkg", "/var/lib/apt/lists", "/var/cache/apt", "/var/lib/snapd/snaps", "/snap")
PSEUDO_FS = {"proc", "sysfs", "devtmpfs", "devpts", "tmpfs", "ramfs", "cgroup", "cgroup2", "securityfs", "debugfs",
             "tracefs", "configfs", "fusectl", "mqueue", "hugetlbfs", "pstore", "bpf", "autofs", "binfmt_misc",
             "efivarfs", "nsfs", "squashfs", "overlay", "rpc_pipefs", "nfsd"}
PRUNED_DIRS = {"node_modules"}
#: what a recipe lists here is not scanned (a false positive it has checked); the bake says so
IGNORE_FILE = "/etc/vmlab/scan-ignore"
MERGED = ("bin", "sbin", "lib", "lib32", "lib64", "libx32")


class Owned:
    """Files package managers installed, as paths under the scanned root ("/usr/bin/x")."""

    def __init__(self, root: str) -> None:
        self.root = root
        self.paths: set[str] = set()
        self.seen_dirs: set[str] = set()
        self._md5: dict[str, str] | None = None
        self._load_dpkg()

    def _load_dpkg(self) -> None:
        info = self.root + "/var/lib/dpkg/info"
        merged = [d for d in MERGED if os.path.islink(f"{self.root}/{d}")]
        try:
            names = os.listdir(info)
        except OSError:
            return
        for name in names:
            if not name.endswith(".list"):
                continue
            try:
                with open(os.path.join(info, name), "rb") as f:
                    lines = f.read().split(b"\n")
            except OSError:
                continue
            for raw in lines:
                path = os.fsdecode(raw)
                if not path:
                    continue
                self.paths.add(path)
                top = path.split("/", 2)[1] if path.count("/") >= 2 else ""
                if top in merged:  # merged /usr: dpkg recorded /bin/x, the disk has it at /usr/bin/x
                    self.paths.add("/usr" + path)

    def learn_dir(self, real: str, virtual: str, names: list[str]) -> bool:
        """Record what pip or conda installed from folder `real`; False when the whole folder is a package."""
        if virtual in self.seen_dirs:
            return True
        self.seen_dirs.add(virtual)
        base = os.path.basename(virtual)
        if base in ("site-packages", "dist-packages"):
            for name in names:
                if name.endswith(".dist-info"):
                    self._pip_record(real, virtual, os.path.join(name, "RECORD"))
                elif name.endswith(".egg-info"):
                    self._egg_files(real, virtual, name)
        if "conda-meta" in names:
            self._conda_meta(real, virtual)
        if "info" in names and os.path.isfile(os.path.join(real, "info", "paths.json")) \
                and os.path.isfile(os.path.join(real, "info", "index.json")):
            return False  # an unpacked conda package in a package cache
        return True

    def _pip_record(self, real: str, virtual: str, record: str) -> None:
        try:
            with open(os.path.join(real, record), newline="", encoding="utf-8", errors="surrogateescape") as f:
                for row in csv.reader(f):
                    if row and not row[0].endswith("direct_url.json"):
                        self.paths.add(os.path.normpath(os.path.join(virtual, row[0])))
        except (OSError, csv.Error):
            pass

    def _egg_files(self, real: str, virtual: str, egg: str) -> None:
        try:
            with open(os.path.join(real, egg, "installed-files.txt"), encoding="utf-8",
                      errors="surrogateescape") as f:
                for line in f.read().splitlines():
                    if line:
                        self.paths.add(os.path.normpath(os.path.join(virtual, egg, line)))
        except OSError:
            pass

    def _conda_meta(self, real: str, virtual: str) -> None:
        meta = os.path.join(real, "conda-meta")
        try:
            names = os.listdir(meta)
        except OSError:
            return
        for name in names:
            if not name.endswith(".json"):
                continue
            try:
                with open(os.path.join(meta, name), encoding="utf-8", errors="surrogateescape") as f:
                    files = json.load(f).get("files") or []
            except (OSError, ValueError, AttributeError):
                continue
            for rel in files:
                if isinstance(rel, str):
                    self.paths.add(os.path.normpath(os.path.join(virtual, rel)))

    def owns(self, virtual: str) -> bool:
        """Installed by a package, or bytecode compiled from a source file that was (Debian's py3compile)."""
        if virtual in self.paths:
            return True
        folder, _, name = virtual.rpartition("/")
        if name.endswith(".pyc") and folder.endswith("/__pycache__"):
            source = folder[: -len("/__pycache__")] + "/" + name.split(".", 1)[0] + ".py"
            return source in self.paths
        return False

    def pristine(self, real: str, virtual: str) -> bool:
        """True when `virtual` is a dpkg file (a conffile too) exactly as its package shipped it."""
        if self._md5 is None:
            self._md5 = self._load_md5()
        want = self._md5.get(virtual)
        if want is None:
            return False
        try:  # what dpkg records; used to compare, not to protect anything (FIPS hosts want that said)
            digest = hashlib.md5(usedforsecurity=False)  # type: ignore[call-arg,unused-ignore]
        except TypeError:  # Python 3.8
            digest = hashlib.md5()
        except ValueError:  # md5 refused altogether
            return False
        try:
            with open(real, "rb") as f:
                for block in iter(lambda: f.read(CHUNK), b""):
                    digest.update(block)
        except OSError:
            return False
        return digest.hexdigest() == want

    def _load_md5(self) -> dict[str, str]:
        sums: dict[str, str] = {}
        try:
            with open(self.root + "/var/lib/dpkg/status", "rb") as f:
                status = f.read().split(b"\n")
        except OSError:
            status = []
        for raw in status:
            parts = raw.split()
            if raw.startswith(b" /") and len(parts) >= 2 and len(parts[1]) == 32:
                sums[os.fsdecode(parts[0])] = parts[1].decode("ascii", "replace")
        info = self.root + "/var/lib/dpkg/info"
        try:
            names = [n for n in os.listdir(info) if n.endswith(".md5sums")]
        except OSError:
            names = []
        for name in names:
            try:
                with open(os.path.join(info, name), "rb") as f:
                    for raw in f.read().split(b"\n"):
                        digest, _, rel = raw.partition(b"  ")
                        if rel.startswith(b"etc/"):
                            sums.setdefault("/" + os.fsdecode(rel), digest.decode("ascii", "replace"))
            except OSError:
                continue
        return sums


def pseudo_mounts(root: str) -> set[str]:
    """Mount points of file systems that are not on a disk (only when scanning the running system)."""
    if root:
        return set()
    out = set()
    try:
        with open("/proc/self/mounts", "rb") as f:
            for line in f.read().split(b"\n"):
                fields = line.split()
                if len(fields) >= 3 and fields[2].decode("ascii", "replace") in PSEUDO_FS:
                    mnt = os.fsdecode(fields[1]).replace("\\040", " ")
                    if mnt != "/":
                        out.add(mnt)
    except OSError:
        pass
    return out


def data_extents(fd: int, size: int, sparse: bool):
    """(offset, length) of the parts of a file that hold data; a sparse file's holes are skipped."""
    if not sparse or not hasattr(os, "SEEK_DATA"):
        yield 0, size
        return
    pos = 0
    while pos < size:
        try:
            start = os.lseek(fd, pos, os.SEEK_DATA)
            end = os.lseek(fd, start, os.SEEK_HOLE)
        except OSError:  # ENXIO: no data after pos
            return
        yield start, end - start
        pos = end


def scan_fd(fd: int, st: os.stat_result, stats: dict[str, int]) -> int | None:
    """Index into COMPILED of the first pattern the file matches, or None; counts what it read in `stats`."""
    best: int | None = None
    sparse = st.st_blocks * 512 < st.st_size
    for offset, length in data_extents(fd, st.st_size, sparse):
        os.lseek(fd, offset, os.SEEK_SET)
        tail = b""
        left = length
        while left > 0:
            data = os.read(fd, min(CHUNK, left))
            if not data:
                break
            left -= len(data)
            stats["read"] += len(data)
            buf = tail + data if tail else data
            present = anchors_in(buf)
            for index, (_kind, anchors, rx, before) in enumerate(COMPILED):
                if best is not None and index >= best:
                    break
                if not present.isdisjoint(anchors) and matches(rx, before, buf):
                    best = index
            if best == 0:
                return best
            tail = buf[-OVERLAP:]
    return best


def ignore_list(root: str) -> list[str]:
    """Paths the image's own /etc/vmlab/scan-ignore asks not to scan (one absolute path a line, # comments)."""
    try:
        with open(root + IGNORE_FILE, "rb") as f:
            lines = [os.fsdecode(line.strip()) for line in f.read().split(b"\n")]
    except OSError:
        return []
    return [os.path.normpath(line) for line in lines if line.startswith("/")]


class Scan:
    def __init__(self, root: str) -> None:
        self.root = root
        self.owned = Owned(root)
        self.ignored = ignore_list(root)
        self.skip = ({root + p for p in PSEUDO_TREES + PACKAGE_TREES + tuple(self.ignored)}
                     | pseudo_mounts(root))
        self.hits: list[list[str]] = []
        self.stats = {"files": 0, "bytes": 0, "read": 0}
        self.seen_inodes: set[tuple[int, int]] = set()

    def virtual(self, real: str) -> str:
        return real[len(self.root):] or "/" if self.root else real

    def walk(self, top: str) -> None:
        for dirpath, dirs, names in os.walk(top):
            vdir = self.virtual(dirpath)
            if not self.owned.learn_dir(dirpath, vdir, dirs + names):
                dirs[:] = []
                continue
            keep = []
            for d in dirs:
                real = os.path.join(dirpath, d)
                if real in self.skip or d in PRUNED_DIRS or (d == "objects" and vdir.endswith("/.git")):
                    continue
                keep.append(d)
            dirs[:] = keep
            for name in names:
                self.file(os.path.join(dirpath, name))

    def file(self, real: str) -> None:
        if real in self.skip:
            return
        virtual = self.virtual(real)
        under_etc = virtual.startswith("/etc/")
        if not under_etc and self.owned.owns(virtual):
            return
        try:
            fd = os.open(real, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | getattr(os, "O_NOATIME", 0))
        except OSError:
            try:  # O_NOATIME needs ownership on some kernels
                fd = os.open(real, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
            except OSError:
                return
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode) or st.st_size == 0:
                return
            if st.st_nlink > 1:
                key = (st.st_dev, st.st_ino)
                if key in self.seen_inodes:
                    return
                self.seen_inodes.add(key)
            self.stats["files"] += 1
            self.stats["bytes"] += st.st_size
            kind = next((k for k, test in NAMED if test(virtual)), None)
            if kind is None:
                index = scan_fd(fd, st, self.stats)
                kind = None if index is None else COMPILED[index][0]
        except OSError:
            return
        finally:
            os.close(fd)
        if kind is not None and not (under_etc and self.owned.pristine(real, virtual)):
            self.hits.append([virtual, kind])


def main(argv: list[str]) -> int:
    root = ""
    if argv[:1] == ["--root"]:
        root = os.path.abspath(argv[1]).rstrip("/")
        argv = argv[2:]
    started = time.monotonic()
    scan = Scan(root)
    for top in argv or ["/"]:
        scan.walk(root + top if root and top.startswith("/") else top)
    json.dump(scan.hits, sys.stdout)
    sys.stdout.write("\n")
    sys.stderr.write(json.dumps({**scan.stats, "owned": len(scan.owned.paths), "ignored": scan.ignored,
                                 "seconds": round(time.monotonic() - started, 2)}) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
