"""Operations: the desired state of one thing on a host, one module per kind of thing.

    from vmlab.operations import apt, files, pip, shell, systemd, users

| module  | operations                                                  |
|---------|-------------------------------------------------------------|
| files   | Directory, File, Template, Line, Copy, Download             |
| apt     | Packages, UpdateCache, Repository                           |
| pip     | Packages                                                    |
| systemd | Unit, Service, DaemonReload                                 |
| users   | User, AuthorizedKey                                         |
| shell   | Shell, Run                                                  |
| nvidia  | CudaRepository (and the Machine, NvidiaGpus, Cloud facts)   |
| ownwheel| OwnWheel: vmlab's own wheel, packed in memory, uploaded     |

Each is a frozen dataclass that checks its arguments when built (BadInput says what is wrong and how to fix
it) and plans from facts: it yields nothing when the host is already as asked. The modules are not imported
here, so `import vmlab.operations` stays cheap.
"""
