"""`vmlab bake`: launch a builder, apply a recipe over SSH, scrub, scan, snapshot to an image; always clean up.

The image is tagged with the recipe's digest and base, so baking an unchanged recipe again finds it instead of
paying for a new builder (`force` rebuilds).
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from vmlab import keys, paths
from vmlab.engine.recipe import Recipe
from vmlab.engine.runner import HostRecap, Reporter, apply, prepare
from vmlab.errors import HostError
from vmlab.interrupts import deferred_signals
from vmlab.providers.base import Image, LaunchOptions, LaunchSpec, Provider
from vmlab.safetext import check_user
from vmlab.workflows import packages
from vmlab.workflows.cleanup import Cleanup
from vmlab.workflows.connect import reach_launched
from vmlab.workflows.preflight import check_image_name, check_launch
from vmlab.workflows.scrub import scan, scrub

Say = Callable[[str], None]


@dataclass
class BakeResult:
    image: Image
    reused: bool
    recipe: str
    digest: str
    timings: dict[str, float] = field(default_factory=dict)
    recaps: list[HostRecap] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {"image": self.image.id, "name": self.image.name, "reused": self.reused, "recipe": self.recipe,
                "recipe_hash": self.digest, "timings": {k: round(v, 2) for k, v in self.timings.items()},
                "runs": [r.to_json() for r in self.recaps], "removed": self.removed,
                "size_bytes": self.image.size_bytes}


class Laps:
    """Seconds per phase: `lap("apply")` records the time since the previous lap (or since it was made)."""

    def __init__(self) -> None:
        self.timings: dict[str, float] = {}
        self._t = time.perf_counter()

    def __call__(self, phase: str) -> None:
        now = time.perf_counter()
        self.timings[phase], self._t = now - self._t, now


def find_baked(provider: Provider, digest: str, base: str) -> Image | None:
    """The newest available image baked from this recipe digest on this base, if any."""
    found = [i for i in provider.list_images({"vmlab:recipe-hash": digest, "vmlab:base": base})
             if i.state == "available"]
    return max(found, key=lambda i: i.created or "", default=None)


@dataclass
class BakeChecks:
    """`bake`'s first phase: everything checked, nothing made. `reuse` is an image of this recipe to reuse; else
    `spec` is the builder's launch and `image_name` the checked name of the image to make."""

    recipe: Recipe
    digest: str
    base: str
    env: dict[str, Any]
    reuse: Image | None = None
    image_name: str = ""
    tags: dict[str, str] = field(default_factory=dict)
    spec: LaunchSpec | None = None
    client: keys.KeyPair | None = None
    host_key: keys.KeyPair | None = None


def check_bake(recipe: Recipe, provider: Provider, *, base: str, name: str | None = None,
               variables: Mapping[str, Any] | None = None, force: bool = False, instance_type: str | None = None,
               options: LaunchOptions | None = None) -> BakeChecks:
    """Every check of a bake (recipe variables and checks, the image name, the builder's launch) before anything
    is made."""
    digest = recipe.digest()
    env = {**recipe.vars, **(variables or {})}
    if "user" in env:
        check_user(env["user"], "-e user")
    prepare(recipe, {**env, "user": env.get("user", "admin"), "inventory_hostname": "builder"})
    if not force:
        existing = find_baked(provider, digest, base)
        if existing is not None:
            return BakeChecks(recipe, digest, base, env, reuse=existing)
    run_id = "bake-" + secrets.token_hex(4)
    tags = {"vmlab:run": run_id, "vmlab:recipe": recipe.name, "vmlab:recipe-hash": digest, "vmlab:base": base}
    image_name = name if name is not None else f"vmlab-{recipe.name}-{digest[:8]}-{time.strftime('%Y%m%d%H%M%S')}"
    check_image_name(provider, image_name)
    client, host_key = keys.generate(f"vmlab-{run_id}"), keys.generate("host")
    spec = (options or LaunchOptions()).apply(LaunchSpec(
        name=f"vmlab-builder-{run_id}", image=base, ssh_public_key=client.public, instance_type=instance_type,
        tags=tags, host_key=host_key.private))
    check_launch(provider, spec)
    return BakeChecks(recipe, digest, base, env, None, image_name, tags, spec, client, host_key)


def bake(recipe: Recipe, provider: Provider, *, base: str, name: str | None = None,
         variables: Mapping[str, Any] | None = None, force: bool = False, verify: bool = False,
         instance_type: str | None = None, connect_timeout: float = 900.0,
         say: Say = lambda _m: None, report: Reporter | None = None,
         options: LaunchOptions | None = None) -> BakeResult:
    """Bake `recipe` on `base` into an image. `verify` applies the recipe a second time and fails the bake
    unless that run changes nothing (proof the recipe is idempotent). `options` are the builder's launch flags
    (spot, volume_size_gb, ssh_cidr). Every check (`check_bake`) runs first."""
    checks = check_bake(recipe, provider, base=base, name=name, variables=variables, force=force,
                        instance_type=instance_type, options=options)
    digest, env = checks.digest, checks.env
    if checks.reuse is not None:
        existing = checks.reuse
        say(f"image {existing.name} ({existing.id}) already has recipe {recipe.name} {digest}: reusing it "
            "(--force rebuilds)")
        return BakeResult(existing, True, recipe.name, digest)
    assert checks.spec is not None and checks.client is not None and checks.host_key is not None
    client, host_key, tags, image_name = checks.client, checks.host_key, checks.tags, checks.image_name
    run_id = tags["vmlab:run"]
    lap = Laps()
    with Cleanup(say) as cleanup:
        key_file = client.save(paths.state_dir() / "tmp" / f"{run_id}_ed25519")
        cleanup.always(f"temporary key {key_file.name}", lambda: keys.remove(key_file))
        say(f"launching builder from {base} ({run_id})")
        with deferred_signals():  # a signal right after the launch waits until the builder's removal is set
            builder = provider.launch(checks.spec)
            cleanup.always(f"builder {builder.id}", lambda: _terminate(provider, builder.id))
        lap("launch")
        say(f"connecting to {builder.name}")
        # over SSH, the launch host key travelled in the user data: the builder gets its own before the recipe runs
        conn = reach_launched(provider, builder, key_file, host_key.public, timeout=connect_timeout)
        cleanup.always("connection to the builder", conn.close)
        lap("boot_to_ssh")
        host_env = {**env, "user": check_user(env.get("user", builder.user), "the builder's user")}
        say(f"applying recipe {recipe.name}")
        result_recaps = _apply(recipe, conn, host_env, verify, report)
        lap("apply")
        # the listing runs every /opt/*/bin/python as root: before the scrub and the scan, which then see
        # anything those programs wrote
        manifest = packages.take(conn)
        tags = {**tags, **packages.summary_tags(manifest)}
        say("scrubbing the builder")
        scrub(conn, client.public)
        _scan(conn, say)
        lap("scrub")
        conn.close()
        say(f"creating image {image_name}")
        with deferred_signals():
            image = provider.create_image(builder.id, image_name, tags, progress=lambda msg, frac: say(
                msg if frac is None else f"{msg} {frac:.0%}"))
            cleanup.on_failure(f"image {image.id}", lambda: provider.delete_image(image.id))
        packages.save_local(image.id, manifest)
        lap("image")
    if cleanup.errors:  # the image is made, but a paid builder (or its key pair, group) may be left: say so loudly
        raise HostError(f"image {image.name} ({image.id}) is ready, but cleaning up failed: "
                        f"{'; '.join(cleanup.errors)}", f"`vmlab gc` removes what is left (tagged vmlab:run={run_id})")
    lap.timings["total"] = sum(lap.timings.values())
    return BakeResult(image, False, recipe.name, digest, lap.timings, result_recaps, cleanup.removed)


def _apply(recipe: Recipe, conn: Any, variables: Mapping[str, Any], verify: bool,
           report: Reporter | None) -> list[HostRecap]:
    """Apply the recipe on the builder (twice with `verify`: the second run must change nothing)."""
    recaps: list[HostRecap] = []
    for attempt in range(2 if verify else 1):
        # the builder is thrown away on failure and synced (scrub) and stopped before its disk becomes the image
        recap = apply(recipe, conn, variables=variables, report=report, throwaway=True)
        recaps.append(recap)
        if not recap.success:
            failed = next((r for r in recap.results if r.status == "failed"), None)
            raise HostError(f"recipe {recipe.name} failed on the builder at step "
                            f"{failed.name if failed else '?'}: {failed.error if failed else recap.error}")
        if attempt == 1 and recap.changed:
            raise HostError(f"recipe {recipe.name} is not idempotent: its second run changed "
                            f"{recap.changed} step(s)", "make every step converge (use guards on shell steps)")
    return recaps


def _scan(conn: Any, say: Say) -> None:
    hits = scan(conn, say)
    if hits:
        listed = ", ".join(f"{h.path} ({h.what})" for h in hits[:10])
        raise HostError(f"secrets found on the builder, no image made: {listed}",
                        "remove them in the recipe (or stop it from writing them) and bake again")


def _terminate(provider: Provider, instance_id: str) -> None:
    from vmlab.transport.hostkeys import forget

    provider.terminate(instance_id)
    forget(f"vmlab-{instance_id}")
