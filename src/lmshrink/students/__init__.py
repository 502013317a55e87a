"""Student model families: one module per family, each registering its builder and its
settings dataclass in `STUDENTS` (see `lmshrink.students.common`).

Every module of this package is imported here, so a new family is one new module (and its
test): it appears in `STUDENTS`, and its settings in the `student:` config block
(`StudentConfig`) and the flags of `lmshrink distill`. Importing this package imports no
torch; a family imports what it needs when it builds.
"""

from __future__ import annotations

import importlib
import pkgutil

from lmshrink.students.common import (
    STUDENTS,
    Student,
    StudentFamily,
    layer_groups_of,
    register_student,
    student_config_class,
    student_settings,
    transformer_layer_groups,
)

for _module in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_module.name}")

# The `student:` block of `lmshrink distill`'s config, made from every family's settings.
StudentConfig = student_config_class(STUDENTS)

__all__ = [
    "STUDENTS",
    "Student",
    "StudentConfig",
    "StudentFamily",
    "layer_groups_of",
    "register_student",
    "student_settings",
    "transformer_layer_groups",
]
