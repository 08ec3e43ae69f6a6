"""The tamper-evident audit trail.

One record per request (``record``), sealed into a per-process hash chain (``chain``) over a canonical
serialization, appended to a local write-ahead spool (``spool``) with Ed25519-signed checkpoints
(``keys``), shipped to Elasticsearch at least once without duplicates (``shipper``, ``es``) and
checked end to end by ``verify``. Nothing here imports ``sidecar.config`` (it imports us).
"""
