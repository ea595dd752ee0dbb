"""Find persistence adapters by name through the ``pybrokerd.stores`` entry point group."""

from importlib.metadata import entry_points

BUILTIN = {
    "memory": "stores.memory:MemoryPersistenceAdapter",
    "kahadb": "stores.journal:JournalAdapter",
    "lmdb": "stores.lmdb_store:LmdbAdapter",
    "leveldb": "stores.leveldb_store:LevelDbAdapter",
}
DEFAULT = "kahadb"


class UnknownStore(LookupError):
    pass


def available() -> dict:
    found = dict(BUILTIN)
    for ep in entry_points(group="pybrokerd.stores"):
        found.setdefault(ep.name, ep.value)
    return found


def load(name: str):
    """The adapter class registered under `name`."""
    target = available().get(name)
    if target is None:
        raise UnknownStore("unknown store %r (available: %s)" % (name, ", ".join(sorted(available()))))
    module_name, _, attr = target.partition(":")
    module = __import__(module_name, fromlist=[attr])
    return getattr(module, attr)
