"""Fails unless nx27017_typed.py still applies to the installed neosqlite and keeps the types.

Run with the venv that `scripts/infra.sh` installs (`scripts/infra.sh check-mongo-patch`, which
scripts/test.sh runs). On an in-memory neosqlite database, the storage nx-27017 serves, it checks:

1. the method the correction wraps still exists with the arguments it is called with;
2. without the correction, the pinned neosqlite still stores a `$set` boolean as an integer or a
   datetime as text (so the correction is still needed, and this check can see the fault);
3. with it, booleans and datetimes set by `update_one`, `update_many` and `find_one_and_update`
   (top level and nested, as jobq's store sends them) read back with their types, and `$lt` on an
   updated date finds the document.

Exit status 0 when all hold; otherwise 1 with what failed.
"""

import datetime
import inspect
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import neosqlite  # noqa: E402
import nx27017_typed  # noqa: E402

failures = []


def check(ok, what):
    print(("ok   " if ok else "FAIL ") + what)
    if not ok:
        failures.append(what)


def round_trip(coll, n):
    """Sets a boolean and a datetime on document n in three ways; returns what reads back."""
    when = datetime.datetime(2026, 1, 1, 12, 0, 0, 123000)
    coll.insert_one({"_id": f"j{n}", "n": n, "status": "queued"})
    coll.update_one({"_id": f"j{n}"}, {"$set": {"flag": True, "at": when}})
    coll.update_many({"_id": f"j{n}"}, {"$set": {"other": False}})
    coll.find_one_and_update(
        {"_id": f"j{n}", "status": "queued"},
        {"$set": {"status": "running", "lease": {"until": when, "held": True}}},
    )
    return coll.find_one({"_id": f"j{n}"}), when


def typed(doc, when):
    return (
        doc["flag"] is True
        and doc["other"] is False
        and doc["at"] == when
        and isinstance(doc["at"], datetime.datetime)
        and doc["lease"]["until"] == when
        and doc["lease"]["held"] is True
    )


owner, name = nx27017_typed.PATCHED
method = getattr(owner, name, None)
check(method is not None, f"neosqlite has {owner.__name__}.{name}")
if method is not None:
    params = list(inspect.signature(method).parameters)
    check(
        params[:3] == ["self", "update_spec", "doc_id"] and "original_doc" in params,
        f"{name} takes (self, update_spec, doc_id, original_doc): {params}",
    )

db = neosqlite.Connection(":memory:")

nx27017_typed.remove()
doc, when = round_trip(db["unpatched"], 1)
check(
    not typed(doc, when),
    "without the correction neosqlite still changes the types (else the correction is not needed "
    f"any more): {doc!r}",
)

nx27017_typed.apply()
coll = db["patched"]
doc, when = round_trip(coll, 2)
check(typed(doc, when), f"with the correction booleans and datetimes round-trip: {doc!r}")
later = when + datetime.timedelta(seconds=1)
check(
    [d["_id"] for d in coll.find({"at": {"$lt": later}})] == ["j2"],
    "$lt on an updated datetime finds the document",
)
check(coll.count_documents({"flag": True}) == 1, "a filter on an updated boolean finds the document")

if failures:
    print(f"{len(failures)} check(s) failed: nx27017_typed.py no longer fits the installed neosqlite",
          file=sys.stderr)
    sys.exit(1)
print("nx27017_typed.py applies and keeps booleans and datetimes")
