"""The agent that runs on a lab VM from the same wheel: `vmlab-agent sync` keeps a folder and a bucket prefix in step.

Modules: `manifest` (what was last synced, and the diff of a folder against it), `stores` (object stores by URL:
S3, Azure Blob, GCS), `sync` (restore and push), `daemon` (watch, debounce, reconcile, flush on SIGTERM), `cli`
(the command).
"""
