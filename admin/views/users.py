"""Users (admins only): creating and changing them through models.users.

A new password, a new role or deactivation ends that user's login sessions (models.users.update_user); an
admin who changes their own password stays logged in in the browser they did it from. Password hashes are
never shown, and an admin cannot take away their own admin role, deactivate or delete themselves.
"""

from __future__ import annotations

from typing import Any

from flask import flash
from flask_admin.contrib.sqla.filters import BooleanEqualFilter
from sqlalchemy.orm import Session
from wtforms import fields

from admin import auth, permissions
from admin.context import now
from admin.views.base import AdminModelView, commit
from admin.views.filters import EnumValueFilter, choices
from admin.words import label
from models.schema import Role, User
from models.users import create_user, update_user


class UserView(AdminModelView):
    column_list = ("email", "name", "role", "active", "alerts_enabled", "created_at")
    column_searchable_list = ("email", "name")
    column_exclude_list = ("password_hash", "session_version")
    column_filters = (EnumValueFilter(User.role, "Role", Role), BooleanEqualFilter(User.active, "Active"))
    column_formatters = {"role": lambda v, c, m, n: label(m.role)}
    form_columns = ("email", "name", "role", "new_password", "active", "alerts_enabled")
    form_overrides = {"role": fields.SelectField}
    form_args = {"role": {"choices": choices([(r.value, label(r)) for r in Role]), "coerce": str}}
    form_extra_fields = {
        "new_password": fields.PasswordField(
            "Password", description="at least 8 characters; leave empty to keep the current one"
        )
    }

    def is_action_allowed(self, name: str) -> bool:
        return name != "reassign" and bool(super().is_action_allowed(name))

    def create_model(self, form: Any) -> Any:
        def create(session: Session) -> User:
            user = create_user(
                session,
                form.email.data or "",
                name=form.name.data or "",
                role=form.role.data,
                password=form.new_password.data or "",
                now=now(),
            )
            user.active = bool(form.active.data)
            user.alerts_enabled = bool(form.alerts_enabled.data)
            return user

        return commit(create) or False

    def update_model(self, form: Any, model: User) -> bool:
        me = permissions.user()
        if model.id == me.id and (form.role.data != Role.ADMIN.value or not form.active.data):
            flash("You cannot take away your own admin role or deactivate yourself.", "error")
            return False

        def update(session: Session) -> bool:
            update_user(
                session,
                model,
                email=form.email.data or "",
                name=form.name.data or "",
                role=form.role.data,
                active=bool(form.active.data),
                alerts_enabled=bool(form.alerts_enabled.data),
                password=form.new_password.data or None,
            )
            return True

        if commit(update) is None:
            return False
        if model.id == me.id:
            auth.remember_session_version(model)
        return True

    def delete_model(self, model: User) -> bool:
        if model.id == permissions.user().id:
            flash("You cannot delete yourself.", "error")
            return False
        return bool(super().delete_model(model))
