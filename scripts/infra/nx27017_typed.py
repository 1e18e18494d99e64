"""nx-27017 whose updates keep booleans and datetimes; `scripts/infra.sh` starts the server with it.

nx-27017 0.8.1 (neosqlite 1.17.2) turns booleans into 1/0 and datetimes into text when an
update ($set and friends) runs on neosqlite's SQL fast path; its Python path keeps the BSON
types. `apply()` sends updates that carry such values down the Python path; other updates stay
on the fast path. `nx27017_typed_check.py` fails when this stops applying to the installed
neosqlite or stops keeping the types (docs/infra.md, "MongoDB-wire server").

Run as a script, it is the server: `python nx27017_typed.py --data-dir ... -p 27017`.
"""

import datetime
import sys

from neosqlite.collection.query_helper._sql_updates import SqlUpdatesMixin

# The neosqlite method this patch wraps; its signature is checked by nx27017_typed_check.py.
PATCHED = (SqlUpdatesMixin, "_can_use_sql_updates")

_sql_path_ok = SqlUpdatesMixin._can_use_sql_updates


def _typed(value):
    """True when the update carries a value the SQL fast path would store with another type."""
    if isinstance(value, (bool, datetime.date)):
        return True
    if isinstance(value, dict):
        return any(_typed(v) for v in value.values())
    if isinstance(value, (list, tuple)):
        return any(_typed(v) for v in value)
    return False


def _can_use_sql_updates(self, update_spec, doc_id, original_doc=None):
    return not _typed(update_spec) and _sql_path_ok(self, update_spec, doc_id, original_doc)


def apply():
    """Installs the correction (idempotent)."""
    SqlUpdatesMixin._can_use_sql_updates = _can_use_sql_updates


def remove():
    """Restores neosqlite's own method (the check uses it to show the correction is needed)."""
    SqlUpdatesMixin._can_use_sql_updates = _sql_path_ok


if __name__ == "__main__":
    apply()
    from nx_27017.nx_27017 import main

    sys.argv[0] = "nx-27017"
    sys.exit(main())
