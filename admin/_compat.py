"""Shims for Flask-Admin 2.2.x on the libraries Threadline pins, applied before its SQLAlchemy backend loads.

1. flask_admin/contrib/sqla/_compat.py imports `T_SESSION` from `_types`, which defines it only when
   Flask-SQLAlchemy is installed; Threadline uses plain SQLAlchemy sessions. `_types` is loaded here on its
   own (without running the package's __init__, which is what fails) and the missing alias, used only for
   typing there, is supplied.
2. Its select fields yield raw tuples from iter_choices(), which WTForms 3.3 deprecates (a warning on every
   form render, an error under the test suite's filterwarnings=error); they yield `Choice` objects instead.
"""

from __future__ import annotations

import importlib.util
import sys
from typing import Any

from sqlalchemy.orm import Session
from wtforms.fields.choices import Choice

_TYPES = "flask_admin.contrib.sqla._types"


def patch_flask_admin_sqla_types() -> None:
    module = sys.modules.get(_TYPES)
    if module is None:
        import flask_admin.contrib

        spec = importlib.util.find_spec(".sqla", "flask_admin.contrib")
        assert spec is not None and spec.submodule_search_locations, "flask_admin.contrib.sqla not found"
        types_spec = importlib.util.spec_from_file_location(
            _TYPES, f"{next(iter(spec.submodule_search_locations))}/_types.py"
        )
        assert types_spec is not None and types_spec.loader is not None
        module = importlib.util.module_from_spec(types_spec)
        sys.modules[_TYPES] = module
        types_spec.loader.exec_module(module)
        _ = flask_admin.contrib
    if not hasattr(module, "T_SESSION"):
        module.T_SESSION = Session  # type: ignore[attr-defined]


def _choice(val: str, label: Any, selected: bool) -> Choice:
    return Choice(val, label, selected, {})


def patch_flask_admin_choices() -> None:
    from flask_admin.contrib.sqla import fields as sqla_fields
    from flask_admin.form import fields as form_fields

    for module in (sqla_fields, form_fields):
        if hasattr(module, "_iter_choices_wtforms_compat"):
            module._iter_choices_wtforms_compat = _choice


patch_flask_admin_sqla_types()
patch_flask_admin_choices()
