"""One registry helper for every named thing a user picks by name: architectures, datasets, setups, launchers, probes.

An entry is an object, or a lazy ``"module:name"`` string imported on first use (so ``kdlib list`` and planning
import no torch, and a process that trains only GPTs never imports torchvision). An unknown name raises the same
error everywhere: ``unknown <kind> 'x': did you mean 'y'? <the allowed names>``. ``register`` works alike for
built-in entries and a user's own, as a call or a decorator.

Your own entries reach every process (a launcher's workers, slurm and Ray tasks) in two ways that need no
registration call there: installed plugins declare them as entry points (groups ``kdlib.setups``,
``kdlib.models``, ``kdlib.data``, ``kdlib.launchers``, ``kdlib.probes``; e.g. ``mynet = "mypkg.nets:build"`` in
``kdlib.models``), loaded when a name is first missing; and where a registry takes
them, a name that is itself an import path (``"mypkg.nets:build"``) is its own entry.
"""
from __future__ import annotations

import difflib
import importlib
from collections.abc import Callable, Iterator, Mapping


def resolve(path: str):
    """The object a ``"module:name"`` (or ``"module:name.attr"``) path names, importing the module."""
    module, sep, attribute = path.partition(":")
    if not sep or not module or not attribute:
        raise ValueError(f"{path!r} is not an import path: write it as 'module:name'")
    obj = importlib.import_module(module)
    for part in attribute.split("."):
        obj = getattr(obj, part)
    return obj


def _same(old, new) -> bool:
    """Whether two registrations name one thing: equal, or the same function or class by module and name."""
    if old is new or old == new:
        return True
    key = lambda o: (getattr(o, "__module__", None), getattr(o, "__qualname__", None))
    return callable(old) and callable(new) and key(old) == key(new) and key(old)[1] is not None


class Registry(Mapping):
    """Named entries of one ``kind`` (``registry[name]`` resolves a lazy entry; ``name in registry`` imports
    nothing). ``error``: the exception an unknown name raises; ``listing(names)``: what that error says of the
    allowed names (default: the list). ``meta(name)``: what an entry declared at registration, without importing it."""

    def __init__(self, kind: str, plural: str | None = None, error: type[Exception] = ValueError,
                 listing: Callable[[list[str]], str] | None = None, entry_type: type | None = None,
                 from_path: Callable[[str], object] | None = None, group: str | None = None):
        self.kind, self.plural, self.error = kind, plural or f"{kind}s", error
        self.listing = listing or (lambda names: f"allowed {self.plural} are {names}")
        self.entry_type = entry_type  # what an entry must be, where it cannot be a lazy path
        self.from_path = from_path  # the entry a name that is a path stands for (None from it: not a path)
        self.group = group or f"kdlib.{self.plural}"  # installed plugins' entry points
        self._plugins_loaded = False
        self._entries: dict[str, object] = {}
        self._given: dict[str, object] = {}  # each entry as registered (a lazy path stays a path here)
        self._meta: dict[str, dict] = {}
        self._paths: set[str] = set()  # names that are paths, found on the way: entries, but not listed

    def register(self, name: str, entry=None, **meta):
        """Register ``entry`` (an object or a ``"module:name"`` string) under ``name`` with ``meta``; without
        ``entry``, a decorator. The same entry again is fine (a module imported twice, a notebook cell run again:
        the same function by module and name); another entry under a registered name is an error."""
        if entry is None:
            def wrap(obj):
                self.register(name, obj, **meta)
                return obj
            return wrap
        if self.entry_type is not None and not isinstance(entry, self.entry_type):
            raise TypeError(f"{self.kind} {name!r}: register a {self.entry_type.__name__}, not {entry!r}")
        if name in self._given and not _same(self._given[name], entry):
            raise ValueError(f"{self.kind} {name!r} is registered twice")
        self._entries[name] = self._given[name] = entry
        self._meta[name] = dict(meta)
        return entry

    def unregister(self, name: str) -> None:
        """Remove ``name`` (a test's or a notebook's own entry)."""
        del self._entries[self.check(name)], self._given[name], self._meta[name]
        self._paths.discard(name)

    def entry(self, name: str):
        """What ``name`` holds now: its lazy ``"module:name"`` path until first used, then the object."""
        return self._entries[self.check(name)]

    def unknown(self, name) -> Exception:
        """The error for an unknown ``name``: the closest names, then the allowed ones."""
        named = list(self)
        close = difflib.get_close_matches(str(name), named, n=3, cutoff=0.6)
        hint = f"did you mean {' or '.join(map(repr, close))}? " if close else ""
        return self.error(f"unknown {self.kind} {name!r}: {hint}{self.listing(named)}")

    def check(self, name: str) -> str:
        """``name`` if registered (found among installed plugins, or an import path that is its own entry), else
        the error (nothing imported)."""
        if name not in self._entries:
            self._discover(name)
        if name not in self._entries:
            raise self.unknown(name)
        return name

    def _discover(self, name: str) -> None:
        """Register the installed plugins' entries (once), then ``name`` itself where it is an import path."""
        if not self._plugins_loaded:
            self._plugins_loaded = True
            from importlib.metadata import entry_points
            for point in entry_points(group=self.group):
                if point.name not in self._given:
                    self.register(point.name, point.value if self.entry_type is None else point.load(),
                                  plugin=point.value)
        if name not in self._entries and self.from_path is not None:
            try:
                entry = self.from_path(str(name))
            except (ImportError, AttributeError, ValueError, OSError) as e:
                raise self.error(f"{self.kind} {name!r}: cannot import it ({type(e).__name__}: {e})") from None
            if entry is not None:
                self.register(name, entry)
                self._paths.add(name)

    def meta(self, name: str) -> dict:
        return self._meta[self.check(name)]

    def __getitem__(self, name: str):
        entry = self._entries[self.check(name)]
        if isinstance(entry, str):
            try:
                entry = self._entries[name] = resolve(entry)
            except (ImportError, AttributeError) as e:
                raise self.error(f"{self.kind} {name!r}: cannot import {entry!r} ({type(e).__name__}: {e})") from None
        return entry

    def __contains__(self, name) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        """The registered names (a path that named an entry on the way is not one of them)."""
        return (n for n in self._entries if n not in self._paths)

    def __len__(self) -> int:
        return len(self._entries) - len(self._paths)

    def names(self) -> list[str]:
        return list(self)
