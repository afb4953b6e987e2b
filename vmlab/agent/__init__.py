"""The agent that runs on a lab VM from the same wheel: `vmlab-agent sync` keeps a folder and a bucket prefix in step.

Modules: `manifest` (what was last synced, and the diff of a folder against it), `store` (object stores by URL),
`sync` (restore and push), `daemon` (watch, debounce, reconcile, flush on SIGTERM), `cli` (the command).
"""
