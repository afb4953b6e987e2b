"""The agent that runs on a lab VM from the same wheel (`vmlab-agent restore | sync | idle`, see docs/agent.md).

Modules: `config` (settings from the environment, i.e. /etc/vmlab/agent.env), `manifest` (what was last synced,
and the diff of a folder against it), `stores` (object stores by URL:
S3, Azure Blob, GCS), `sync` (restore and push), `queue` (the
journal of pending paths that survives a crash), `daemon` (watch, debounce, reconcile, flush on SIGTERM and on a
spot notice), `imds` (EC2 interruption notices), `status` (the file `vmlab ls` reads), `idle` (power off when
unused or out of time), `cli` (the command).
"""
