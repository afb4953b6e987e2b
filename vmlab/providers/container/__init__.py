"""The container provider: podman containers with systemd as PID 1, in vmlab's own engine storage.

Modules: engine (podman with vmlab's settings), baseimage (the debootstrap base, imported), exechost (the engine's
Host over `podman exec`), provider (the Provider verbs). docs/containers.md describes the choices.
"""
