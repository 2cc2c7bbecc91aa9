"""Named setups of the study and the profiles that scale them (see :mod:`kdlib.setups.base`).

``get(name, profile, readings)`` returns a registered setup at a profile's scale under the paper's readings
(:mod:`kdlib.setups.readings`: defaults, except those ``readings`` chooses); ``names()`` lists them. ``name`` may
also be your own setup's import path or TOML file (:mod:`kdlib.setups.yours`). Each family
module (language, vision, audio, experiments) registers its setups when imported.
"""
from __future__ import annotations

from dataclasses import replace

from . import audio, experiments, language, vision  # noqa: F401  (importing registers them)
from . import readings as _readings
from .base import (ALPHAS, MODALITIES, PROFILES, SETUPS, Model, Setup, UnknownSetup, epoch_steps,  # noqa: F401
                   register)
from .readings import READINGS, UnknownReading  # noqa: F401


def names() -> list[str]:
    return sorted(SETUPS)


def get(name: str, profile: str = "cpu", readings=None) -> Setup:
    """The setup ``name`` scaled by ``profile`` under the default readings, except those ``readings`` chooses
    (``{id: choice}`` or ``["id=choice", ...]``); unknown names raise with the allowed values. ``name`` may be a
    label (``name+id=choice``), whose readings are then chosen."""
    if "+" in name:
        name, chosen = _readings.split_label(name)
        readings = {**chosen, **_readings.parse(readings or {})}
    make = SETUPS[name]  # an unknown name raises with the closest ones; a path is your own (kdlib.setups.yours)
    if profile not in PROFILES:
        raise UnknownSetup(f"unknown profile {profile!r}: allowed profiles are {list(PROFILES)}")
    setup = make(profile)
    if setup.name != name and setup.source != name:
        raise ValueError(f"setup function for {name!r} returned a setup named {setup.name!r}")
    return _readings.apply(replace(setup, profile=profile), readings)
