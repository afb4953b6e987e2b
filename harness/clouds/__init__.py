"""See harness/__init__.py for what each module holds."""
