"""Apache Superset's configuration in the HRDV stack (Superset imports it via SUPERSET_CONFIG_PATH).

Everything that differs between stacks (ports, passwords, paths) comes from environment variables
that hrdv/stack/superset.py sets when it runs Superset (`superset db upgrade`, `superset init`,
stack/superset/bootstrap.py and gunicorn); nothing secret is written here. What is not set here
keeps Superset 6.1.0's default (superset/config.py in its package).
"""
from __future__ import annotations

import os


def _required(name: str) -> str:
    value = os.environ.get(name, "")
    if not value:
        # Without it Superset would fall back to a sqlite file or a publicly known key.
        raise RuntimeError(f"{name} is not set: Superset is started by hrdv/stack/superset.py "
                           "(`./hrdv.sh up`), which sets it from the stack's settings")
    return value


# --- where its state lives ------------------------------------------------------------------------
# Signs the session cookies and CSRF tokens, and encrypts the database passwords Superset stores
# (the reporting login's). Generated once into $HRDV_HOME/secrets.env; a new key makes the stored
# passwords unreadable.
SECRET_KEY = _required("SUPERSET_SECRET_KEY")
# Users, roles, charts and dashboards: the `superset` database of the stack's PostgreSQL, owned by
# Superset's own login (hrdv_superset), not sqlite in ~/.superset.
SQLALCHEMY_DATABASE_URI = _required("HRDV_SUPERSET_METADATA_URI")
# Connections idle while PostgreSQL restarted are replaced instead of failing a request.
SQLALCHEMY_ENGINE_OPTIONS = {"pool_pre_ping": True}

# --- web server -----------------------------------------------------------------------------------
# gunicorn runs with the same --timeout (hrdv/stack/superset.py): a chart query on the marts takes
# well under a second, 120 s leaves room for a first query on a cold cache and for imports of
# dashboard bundles; Superset wants the server's timeout <= this one.
SUPERSET_WEBSERVER_TIMEOUT = int(os.environ.get("HRDV_SUPERSET_TIMEOUT", "120"))
# Browsers keep cookies per host, not per port: two stacks on 127.0.0.1 (the tests' and yours), or
# Superset beside other local apps, would overwrite each other's `session` cookie and log each
# other out. A name per port keeps them apart.
_PORT = os.environ.get("HRDV_SUPERSET_PORT", "")
SESSION_COOKIE_NAME = f"superset_session_{_PORT}" if _PORT else "session"
REMEMBER_COOKIE_NAME = f"superset_remember_{_PORT}" if _PORT else "remember_token"
# CSRF stays on (it is Superset's default; said here so nobody turns it off to make a script work):
# API clients fetch a token from /api/v1/security/csrf_token/ on the same session.
WTF_CSRF_ENABLED = True

# --- caching: in the process, no Redis --------------------------------------------------------------
# Each gunicorn worker keeps its own small cache. Superset objects (datasets' metadata) for 5
# minutes; chart data for only 10 s: the open window's provisional values move every 10 s, and
# a longer cache would show older numbers than the marts hold. Dashboard filter state and explore
# form data keep Superset's default (its metadata database), which every worker shares.
CACHE_CONFIG = {"CACHE_TYPE": "SimpleCache", "CACHE_DEFAULT_TIMEOUT": 300,
                "CACHE_KEY_PREFIX": "superset_"}
DATA_CACHE_CONFIG = {"CACHE_TYPE": "SimpleCache", "CACHE_DEFAULT_TIMEOUT": 10,
                     "CACHE_KEY_PREFIX": "superset_data_"}

# --- Russian throughout ---------------------------------------------------------------------------
# The UI in Russian for everyone (after login; the login page too once the Public role may fetch
# the language pack, which stack/superset/bootstrap.py grants). Only Russian is offered.
BABEL_DEFAULT_LOCALE = "ru"
LANGUAGES = {"ru": {"flag": "ru", "name": "Русский"}}
# Numbers as Russian readers write them: decimal comma, no-break space between thousands
# (1 234 567,89), roubles after the amount. Applies to explicit d3 formats (",d", ",.1f"); the
# SMART_NUMBER default ignores it, so charts set their format explicitly.
D3_FORMAT = {
    "decimal": ",",
    "thousands": "\u00a0",
    "grouping": [3],
    "currency": ["", "\u00a0₽"],
}
# Dates and times: 24-hour clock, dd.mm.yyyy, Russian day and month names (d3-time-format's ru-RU,
# with months in the nominative case: "ноябрь 2026" on an axis, not the genitive "ноября 2026").
D3_TIME_FORMAT = {
    "dateTime": "%A, %e %B %Y г. %X",
    "date": "%d.%m.%Y",
    "time": "%H:%M:%S",
    "periods": ["AM", "PM"],  # unused with a 24-hour clock, but required by d3
    "days": ["воскресенье", "понедельник", "вторник", "среда", "четверг", "пятница", "суббота"],
    "shortDays": ["вс", "пн", "вт", "ср", "чт", "пт", "сб"],
    "months": ["январь", "февраль", "март", "апрель", "май", "июнь", "июль", "август", "сентябрь",
               "октябрь", "ноябрь", "декабрь"],
    "shortMonths": ["янв", "фев", "мар", "апр", "май", "июн", "июл", "авг", "сен", "окт", "ноя",
                    "дек"],
}
# The currencies a chart's "currency format" offers: roubles first.
CURRENCIES = ["RUB", "USD", "EUR"]

# --- features -------------------------------------------------------------------------------------
FEATURE_FLAGS = {
    # From a KPI to its breakdown (by region, channel, ...) with a right click on a chart.
    "DRILL_BY": True,
    # From an aggregate to the rows behind it.
    "DRILL_TO_DETAIL": True,
    # Jinja in virtual datasets' SQL ({{ filter_values(...) }}, {{ from_dttm }}): dashboards' filters
    # pushed into the SQL that reads the marts.
    "ENABLE_TEMPLATE_PROCESSING": True,
}

# No examples: `superset load-examples` is never run, and nothing may point at the examples'
# sqlite database (PREVENT_UNSAFE_DB_CONNECTIONS stays True: sqlite URIs are refused).
