"""Superset's accounts, after `superset db upgrade` and `superset init` (idempotent).

Run by hrdv/stack/superset.py with the Superset venv's python and Superset's environment:
- the administrator HRDV_SUPERSET_ADMIN_USER is created with HRDV_SUPERSET_ADMIN_PASSWORD, or, if it
  exists, given that password again, the Admin role and the active flag: $HRDV_HOME/secrets.env is
  the truth, whatever was changed in the UI;
- the Public role (anonymous visitors) may fetch the language pack, so the login page is Russian
  too: the page asks /superset/language_pack/ru/, which needs `can_language_pack on Superset`, and
  falls back to English when it is refused.
Prints one line per change.
"""
from __future__ import annotations

import os
import sys

from superset.app import create_app


def main() -> int:
    user_name = os.environ["HRDV_SUPERSET_ADMIN_USER"]
    password = os.environ["HRDV_SUPERSET_ADMIN_PASSWORD"]
    app = create_app()
    with app.app_context():
        from superset import security_manager as sm
        from superset.extensions import db

        admin_role = sm.find_role(sm.auth_role_admin)
        if admin_role is None:
            print("bootstrap: no Admin role; `superset init` has not run", file=sys.stderr)
            return 1
        user = sm.find_user(username=user_name)
        if user is None:
            created = sm.add_user(user_name, "Администратор", "HRDV", f"{user_name}@localhost",
                                  admin_role, password=password)
            if not created:
                print(f"bootstrap: could not create the user {user_name}", file=sys.stderr)
                return 1
            print(f"bootstrap: created the administrator {user_name}")
        else:
            sm.reset_password(user.id, password)  # commits
            user = sm.find_user(username=user_name)
            if admin_role not in user.roles or not user.active:
                if admin_role not in user.roles:
                    user.roles.append(admin_role)
                user.active = True
                sm.update_user(user)  # commits
            print(f"bootstrap: the administrator {user_name} has the password from the settings")

        public = sm.find_role(sm.auth_role_public) or sm.add_role(sm.auth_role_public)
        language_pack = sm.find_permission_view_menu("can_language_pack", "Superset")
        if language_pack is None:
            print("bootstrap: no permission can_language_pack on Superset; `superset init` has "
                  "not run", file=sys.stderr)
            return 1
        if language_pack not in public.permissions:
            sm.add_permission_role(public, language_pack)
            print(f"bootstrap: the {public.name} role may fetch the language pack (Russian login page)")
        db.session.commit()
    return 0


if __name__ == "__main__":
    sys.exit(main())
