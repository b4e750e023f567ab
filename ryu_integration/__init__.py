"""Ryu / os-ken integration: per-switch mastership from coordination elections, `coord-manager`.

Modules: `compat` (the only one importing ryu/os_ken), `frameworks` (which one, without importing
it), `mastership` (its ryu.conf `[coordination]` options, pure state
machines and store records, the app and its guard), `manager` (`coord-manager`), `lifecycle` (shutdown hooks), `apps/`.
Nothing here is imported by `import ryu_integration`, so the framework is chosen only when an app
module is imported.
"""
