"""Your own setup, without a fork: named by an import path or a TOML file wherever a setup name goes.

- ``"mypkg.kd:my_setup"``: a function ``my_setup(profile) -> Setup`` (or without the profile, or a :class:`Setup`
  itself) in your module;
- ``"path/to/setup.toml"``: a file naming factories by import path (:func:`from_toml`).

Either works in ``kdlib run/study/report/...`` (also ``--setup-from``), ``run_all.sh``'s ``SUITE`` and the
notebooks' ``setup`` parameter. Its runs carry the name you gave (``source``), and every process that trains them
(a launcher's workers, slurm and Ray tasks) imports it again, so datasets and architectures your module registers
reach them too. Installed plugins register setups through the ``kdlib.setups`` entry point instead.

A TOML file (keys of :data:`KEYS`; the top level or a ``[setup]`` table; ``[smoke]``, ``[cpu]`` and ``[paper]``
tables override keys at that profile)::

    name = "my-kd"
    modality = "vision"
    dataset = "imagefolder"                     # or "mypkg.data:load", or a built-in dataset's name
    dataset_kwargs = { path = "my_images", image_size = 32 }
    teacher = { arch = "torchvision:resnet18", checkpoint = "teacher.pt" }   # a checkpoint: used as loaded
    student = "torchvision:mobilenet_v3_small"  # omitted: self-distillation from the teacher's architecture
    recipe = { optimizer = "sgd", lr = 0.01, momentum = 0.9, batch_size = 32, steps = 200 }
    alphas = [0.1, 0.5, 0.9]
    teacher_seeds = [0]
    student_seeds = [10, 11, 12, 13, 14, 15]
"""
from __future__ import annotations

import difflib
import hashlib
import inspect
import tomllib
from dataclasses import fields, replace
from pathlib import Path

from ..engine.recipe import Recipe
from ..registry import resolve
from .base import ALPHAS, PROFILES, Model, Setup

#: What a TOML setup may say, with what each key takes.
KEYS = {
    "name": "the setup's name (its results folder)", "modality": "language, vision or audio",
    "description": "one line", "dataset": "a registered dataset, 'imagefolder', or 'module:factory'",
    "dataset_kwargs": "a table of the dataset's arguments", "teacher": "an architecture, or a table {arch, kwargs, "
    "checkpoint}", "student": "an architecture, or a table {arch, kwargs} (omitted: self-distillation)",
    "recipe": "a table of kdlib.engine.recipe.Recipe's fields, for teacher and students",
    "teacher_recipe": "the teacher's own recipe (omitted with a checkpoint: the teacher is used as loaded)",
    "student_recipe": "the students' own recipe", "teacher_seeds": "a list of integers",
    "student_seeds": "a list of integers", "alphas": "a list of KD/RCD weights in [0, 1]", "temperature": "T > 0",
    "conditions": "student conditions (kdlib.conditions)", "feature_layer": "a module name for feature-map KD",
    "eval_batch_size": "an integer", "smoke": "a table of keys at the smoke profile", "cpu": "the same at cpu",
    "paper": "the same at paper",
}


class SetupFileError(ValueError):
    """A setup file or factory that cannot make a setup: one line naming what and where."""


def from_path(ref: str):
    """``make(profile) -> Setup`` for a reference that is a TOML file or an import path; None for a plain name."""
    if ref.endswith(".toml"):
        path = Path(ref)
        if not path.is_file():
            raise SetupFileError(f"setup file {ref} does not exist")
        return lambda profile: replace(from_toml(path, profile), source=ref)
    if ":" not in ref:
        return None
    made = resolve(ref)

    def make(profile: str) -> Setup:
        try:
            takes_profile = callable(made) and bool(inspect.signature(made).parameters)
            setup = made(profile) if takes_profile else made() if callable(made) else made
        except SetupFileError:
            raise
        except Exception as e:  # noqa: BLE001  (your factory's own error, as one line)
            raise SetupFileError(f"setup factory {ref} failed: {type(e).__name__}: {e}") from None
        if not isinstance(setup, Setup):
            raise SetupFileError(f"setup factory {ref} returned {type(setup).__name__}: return a kdlib.setups.Setup")
        return replace(setup, source=ref)
    return make


def _model(value, key: str, where: str) -> tuple[Model, str | None]:
    """A model key: an architecture name, or a table {arch, kwargs, checkpoint}; (model, checkpoint path)."""
    if isinstance(value, str):
        return Model(value), None
    if not isinstance(value, dict) or "arch" not in value:
        raise SetupFileError(f"{where}: {key} = {value!r}: give an architecture or a table with 'arch'")
    _check_keys(value, {"arch", "kwargs", "checkpoint"}, f"{where} [{key}]")
    return Model(value["arch"], dict(value.get("kwargs", {}))), value.get("checkpoint")


def _recipe(value, key: str, where: str) -> Recipe:
    if not isinstance(value, dict):
        raise SetupFileError(f"{where}: {key} must be a table of Recipe fields, got {value!r}")
    allowed = {f.name for f in fields(Recipe)}
    _check_keys(value, allowed, f"{where} [{key}]")
    try:
        return Recipe(**{**value, "milestones": tuple(value.get("milestones", ()))})
    except (TypeError, ValueError) as e:
        raise SetupFileError(f"{where} [{key}]: {e}") from None


def _check_keys(table: dict, allowed, where: str) -> None:
    for key in table:
        if key not in allowed:
            close = difflib.get_close_matches(key, list(allowed), n=1)
            hint = f"did you mean {close[0]!r}? " if close else ""
            raise SetupFileError(f"{where}: unknown key {key!r}: {hint}allowed are {sorted(allowed)}")


def from_toml(path: Path, profile: str = "paper") -> Setup:
    """The setup a TOML file describes, at ``profile`` (its profile table's keys over the others). Relative paths
    in it (a teacher checkpoint) are relative to the file."""
    where = str(path)
    try:
        table = tomllib.loads(Path(path).read_text())
    except tomllib.TOMLDecodeError as e:
        raise SetupFileError(f"{where}: not valid TOML ({e})") from None
    table = table.get("setup", table)
    _check_keys(table, KEYS, where)
    for other in PROFILES:
        if other in table and not isinstance(table[other], dict):
            raise SetupFileError(f"{where}: [{other}] must be a table of keys")
    overrides = table.get(profile, {})
    _check_keys(overrides, set(KEYS) - set(PROFILES), f"{where} [{profile}]")
    values = {k: v for k, v in {**table, **overrides}.items() if k not in PROFILES}
    missing = [k for k in ("name", "modality", "dataset", "teacher") if k not in values]
    if missing:
        raise SetupFileError(f"{where}: missing keys {missing} ({', '.join(KEYS[k] for k in missing)})")
    teacher, checkpoint = _model(values["teacher"], "teacher", where)
    student = _model(values["student"], "student", where)[0] if "student" in values else None
    shared = _recipe(values["recipe"], "recipe", where) if "recipe" in values else None
    student_recipe = _recipe(values["student_recipe"], "student_recipe", where) if "student_recipe" in values \
        else shared
    if student_recipe is None:
        raise SetupFileError(f"{where}: missing key 'recipe' (or 'student_recipe'): how the students train")
    teacher_recipe = _recipe(values["teacher_recipe"], "teacher_recipe", where) if "teacher_recipe" in values \
        else None if checkpoint else shared
    if checkpoint is not None and not Path(checkpoint).is_absolute():
        checkpoint = str((Path(path).parent / checkpoint).resolve())
    try:
        return Setup(
            name=values["name"], modality=values["modality"], description=values.get("description", f"from {where}"),
            dataset=values["dataset"], dataset_kwargs=dict(values.get("dataset_kwargs", {})), teacher=teacher,
            student=student, teacher_recipe=teacher_recipe, student_recipe=student_recipe,
            teacher_seeds=tuple(values.get("teacher_seeds", (0,))),
            student_seeds=tuple(values.get("student_seeds", range(10, 16))),
            alphas=tuple(values.get("alphas", ALPHAS)), temperature=float(values.get("temperature", 1.0)),
            conditions=tuple(values.get("conditions", ("siddo", "kd", "rcd"))),
            feature_layer=values.get("feature_layer"), eval_batch_size=int(values.get("eval_batch_size", 256)),
            teacher_checkpoint=checkpoint, profile=profile)
    except (TypeError, ValueError) as e:
        raise SetupFileError(f"{where}: {e}") from None


_SHA: dict = {}


def sha256(path: str) -> str:
    """The SHA-256 of a file, remembered per path, size and modification time (a checkpoint's identity)."""
    stat = Path(path).stat()
    key = (str(Path(path).resolve()), stat.st_size, stat.st_mtime_ns)
    if key not in _SHA:
        digest = hashlib.sha256()
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
        _SHA[key] = digest.hexdigest()
    return _SHA[key]
