"""The admin panel: a Flask-Admin app over the CRM's models (see admin.app.create_app and admin.app.serve).

admin.app wires everything; views live in admin/views/ and reach the shared state through admin.context.

Importing the package applies the Flask-Admin compatibility shims (admin._compat) before any view module
loads Flask-Admin's SQLAlchemy backend.
"""

from admin import _compat as _compat
