"""Comparing documents: order-insensitive equality, and whether replacing
a policy would weaken it."""

from __future__ import annotations

import json

from snap_core.provision.checker import _as_list


def _canon(value):
    """Order-insensitive form of a policy/config for comparison: one-element
    lists and scalars are the same, lists are sorted, numbers are text."""
    if isinstance(value, dict):
        return {k: _canon(v) for k, v in sorted(value.items())}
    if isinstance(value, (list, tuple)):
        items = [_canon(v) for v in value]
        if len(items) == 1:
            return items[0]
        return sorted(items, key=lambda x: json.dumps(x, sort_keys=True))
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, (int, float)):
        return str(value)
    return value


def same(a, b) -> bool:
    return _canon(a) == _canon(b)


def _policy_text(doc: dict) -> str:
    return json.dumps(doc, indent=2, sort_keys=False)


def _read_json_policy(text: str | None) -> dict | None:
    if not text:
        return None
    try:
        return json.loads(text)
    except ValueError:
        return {"unparseable": text}


def _denies(doc: dict | None) -> dict[str, dict]:
    return {
        st.get("Sid") or json.dumps(st, sort_keys=True): st
        for st in _as_list((doc or {}).get("Statement"))
        if st.get("Effect") == "Deny"
    }


def policy_weakening(old: dict | None, new: dict) -> list[str]:
    """Why replacing policy ``old`` by ``new`` would weaken it (empty: it
    does not). Weaker: a deny statement gone, a denied action gone, a deny
    narrowed to fewer resources, more principals exempt, a shorter retention
    in a condition."""
    reasons = []
    new_denies = _denies(new)
    for sid, st in _denies(old).items():
        nst = new_denies.get(sid)
        if nst is None:
            reasons.append(f"it drops the deny statement {sid}")
            continue
        gone = {a.lower() for a in _as_list(st.get("Action"))} - {a.lower() for a in _as_list(nst.get("Action"))}
        if gone:
            reasons.append(f"{sid} would no longer deny {', '.join(sorted(gone))}")
        res_gone = set(_as_list(st.get("Resource"))) - set(_as_list(nst.get("Resource")))
        if res_gone:
            reasons.append(f"{sid} would no longer cover {', '.join(sorted(res_gone))}")
        old_c, new_c = st.get("Condition") or {}, nst.get("Condition") or {}
        for op in ("ArnNotLike", "ArnNotEquals"):
            for key, vals in (new_c.get(op) or {}).items():
                added = set(_as_list(vals)) - set(_as_list((old_c.get(op) or {}).get(key)))
                if added:
                    reasons.append(f"{sid} would exempt more principals: {', '.join(sorted(added))}")
        for key, val in (old_c.get("NumericLessThan") or {}).items():
            nval = (new_c.get("NumericLessThan") or {}).get(key)
            if nval is None or float(nval) < float(val):
                reasons.append(f"{sid} would lower {key} from {val} to {nval}")
        for op in new_c:
            if op not in old_c and op not in ("ArnNotLike", "ArnNotEquals"):
                reasons.append(f"{sid} would only apply under a new condition {op}")
    return reasons


def _retention_days(rule: dict | None) -> tuple[str | None, int]:
    dr = ((rule or {}).get("DefaultRetention")) or {}
    days = dr.get("Days") or 0
    if dr.get("Years"):
        days = 365 * int(dr["Years"])
    return dr.get("Mode"), int(days)
