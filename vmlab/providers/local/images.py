"""Local images: standalone qcow2 disks with their kernel, initrd and JSON metadata, under `ROOT/images/<id>/`.

The base image (`debian-12`, see `baseimage`) has the same layout, so launching from either works alike.

Example::

    shelf = ImageShelf(root)
    img = shelf.find("lab-image")            # by id, by name (refusing ambiguous names), or "debian-12"
    shelf.files(img.id).disk                  # Path to its qcow2
"""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path

from vmlab.errors import BadInput, VmlabError
from vmlab.providers.base import Image, Progress
from vmlab.providers.local import baseimage, qemu, store

IMAGE_ID_RE = re.compile(r"^limg-[0-9a-f]{6,32}$")
ACCOUNT_RE = re.compile(r"^[0-9]{12}$")


@dataclass(frozen=True)
class ImageFiles:
    """The files a VM boots from."""

    dir: Path

    @property
    def disk(self) -> Path:
        return self.dir / store.DISK

    @property
    def kernel(self) -> Path:
        return self.dir / "vmlinuz"

    @property
    def initrd(self) -> Path:
        return self.dir / "initrd.img"

    @property
    def ca_bundle(self) -> Path:
        return self.dir / "guest-ca-bundle.pem"


class ImageShelf:
    """Finds, creates and deletes local images below one cache root."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.dir = root / "images"

    def _dirs(self) -> list[Path]:
        if not self.dir.is_dir():
            return []
        return sorted(p for p in self.dir.iterdir()
                      if IMAGE_ID_RE.match(p.name) and (p / store.IMAGE_META).is_file())

    def all(self) -> list[Image]:
        """Every complete image made by create_image (the base image is not listed: it is a cache)."""
        return [store.read_image(p) for p in self._dirs()]

    def find(self, ref: str) -> Image | None:
        """An image by id, by exact name, or the base id `debian-12` (when built). Ambiguous names are refused."""
        if ref == baseimage.BASE_ID:
            base = baseimage.find_base(self.root)
            return store.read_image(base) if base else None
        if IMAGE_ID_RE.match(ref):
            path = self.dir / ref
            return store.read_image(path) if (path / store.IMAGE_META).is_file() else None
        base = baseimage.find_base(self.root)
        if base is not None and store.read_image(base).name == ref:
            return store.read_image(base)
        hits = [img for img in self.all() if img.name == ref]
        if len(hits) > 1:
            raise BadInput(f"image name {ref!r} is ambiguous: {', '.join(i.id for i in hits)}",
                           "use the image id")
        return hits[0] if hits else None

    def files(self, image_id: str) -> ImageFiles:
        """Where an image's files are (the base id maps to the base directory)."""
        if image_id == baseimage.BASE_ID:
            return ImageFiles(baseimage.base_files(self.root)["dir"])
        return ImageFiles(self.dir / image_id)

    def require(self, ref: str) -> Image:
        """Like `find`, but BadInput when there is no such image."""
        image = self.find(ref)
        if image is None:
            raise BadInput(f"no local image {ref!r}", "list them with `vmlab images ls --provider local`")
        return image

    def verify(self, image_id: str) -> ImageFiles:
        """Check an image's disk is a sound qcow2 and its kernel is there before booting from it."""
        files = self.files(image_id)
        for path in (files.disk, files.kernel, files.initrd):
            if not path.is_file():
                raise VmlabError(f"image {image_id} is incomplete: {path.name} missing",
                                 "delete the image and create it again")
        info = qemu.img_info(files.disk)
        if info.get("format") != "qcow2":
            raise BadInput(f"image {image_id} disk is {info.get('format')}, not qcow2",
                           "delete the image and create it again")
        qemu.img_check(files.disk)
        return files

    def create(self, source: ImageFiles, disk: Path, name: str, tags: Mapping[str, str], source_id: str,
               progress: Progress, compress: bool = True) -> Image:
        """Flatten `disk` (a VM overlay) into a new standalone image; built in a temp dir, renamed at the end."""
        if not name.strip():
            raise BadInput("image name is empty", "pass --name")
        clash = [img.id for img in self.all() if img.name == name]
        if clash:
            raise BadInput(f"an image named {name!r} already exists ({clash[0]})",
                           "choose another name or delete that image")
        image_id = store.new_id("limg")
        self.dir.mkdir(parents=True, exist_ok=True)
        work = self.dir / f".tmp-{image_id}"
        work.mkdir(mode=0o755)
        try:
            progress(f"writing {'compressed ' if compress else ''}disk of {image_id}", 0.2)
            target = ImageFiles(work)
            qemu.convert(disk, target.disk, compress=compress)
            # the kernel travels with the image so it never depends on the base it came from
            for src, dst in ((source.kernel, target.kernel), (source.initrd, target.initrd),
                             (source.ca_bundle, target.ca_bundle)):
                if src.is_file():
                    shutil.copy2(src, dst)
            image = Image(id=image_id, name=name, state="available", provider="local", created=store.now(),
                          tags=dict(tags), size_bytes=target.disk.stat().st_size, source=source_id)
            store.write_image(work, image)
            os.rename(work, self.dir / image_id)
        except BaseException:
            shutil.rmtree(work, ignore_errors=True)
            raise
        progress(f"image {image_id} ready", 1.0)
        return image

    def delete(self, ref: str, in_use_by: list[str]) -> None:
        """Remove an image directory; refused for the base image and for images VMs still boot from."""
        if ref == baseimage.BASE_ID:
            raise BadInput("the base image is a cache, not an image to delete",
                           f"remove {self.root / 'base'} to rebuild it")
        image = self.require(ref)
        if image.id == baseimage.BASE_ID:
            raise BadInput("the base image is a cache, not an image to delete",
                           f"remove {self.root / 'base'} to rebuild it")
        if in_use_by:
            raise BadInput(f"image {image.id} is the disk of VMs {', '.join(in_use_by)}",
                           "terminate them first")
        path = self.dir / image.id
        # rename first so a concurrent launch never sees a half-removed image
        doomed = self.dir / f".del-{image.id}"
        os.rename(path, doomed)
        shutil.rmtree(doomed, ignore_errors=True)

    def share(self, ref: str, accounts: tuple[str, ...], remove: bool = False) -> Image:
        """Record (or remove) account ids an image is shared with; ids are 12 digits as on AWS."""
        bad = [a for a in accounts if not ACCOUNT_RE.match(a)]
        if bad:
            raise BadInput(f"not an account id: {', '.join(bad)}", "account ids are 12 digits")
        image = self.require(ref)
        if image.id == baseimage.BASE_ID:
            raise BadInput("the base image cannot be shared", "bake an image from it first")
        current = set(image.shared_with)
        updated = current - set(accounts) if remove else current | set(accounts)
        image = replace(image, shared_with=tuple(sorted(updated)))
        path = self.dir / image.id
        extra = {k: v for k, v in store.read_json(path / store.IMAGE_META).items()
                 if k not in store.image_to_dict(image)}
        store.write_image(path, image, **extra)
        return image
