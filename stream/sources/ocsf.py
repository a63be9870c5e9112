"""OCSF 1.x events → SPEC access events: API Activity (6003), Web Resource Access Activity
(6004), Datastore Activity (6005) and File Hosting Activity (6006).

``action`` is the activity (``activity_name``, else the class's name for ``activity_id``)
lower-cased with ``_`` for spaces, so a File Hosting *Download* is SPEC egress. Web Resource
Access activities are access decisions: *Access Grant* is a ``read``, *Access Deny* a
denied ``read``. ``customer_id`` (the data subject) is the first resource's ``owner.uid``,
else ``cloud.account.uid``. The actor is ``actor.user`` (uid, else email, else name), or for
Web Resource Access, which has no actor object, ``src_endpoint.owner``.

>>> src = OcsfSource()
>>> ev = src.one({"class_uid": 6006, "activity_id": 2, "time": 1795874602123,
...     "metadata": {"uid": "f-1", "version": "1.7.0", "product": {"name": "Drive"}},
...     "actor": {"user": {"uid": "ann@corp", "type": "User"}},
...     "src_endpoint": {"ip": "10.0.0.5"}, "file": {"name": "q3.csv", "uid": "F9",
...     "size": 5120, "type_id": 1}}, b"", None).event
>>> ev.action, ev.resource_type, ev.resource_id, ev.bytes, ev.source_ip
('download', 'file', 'F9', 5120, '10.0.0.5')
>>> src.one({"class_uid": 3002, "time": 1}, b"", None).error.detail
'ocsf: class_uid 3002 is not one of 6003, 6004, 6005, 6006'
"""

from __future__ import annotations

from typing import Any

from detectors.events import InvalidEvent
from stream.sources import MappedSource, get_path

ACTIVITIES: dict[int, dict[int, str]] = {
    6003: {1: "Create", 2: "Read", 3: "Update", 4: "Delete"},
    6004: {1: "Access Grant", 2: "Access Deny", 3: "Access Revoke", 4: "Access Error"},
    6005: {1: "Read", 2: "Update", 3: "Connect", 4: "Query", 5: "Write", 6: "Create",
           7: "Delete", 8: "List", 9: "Encrypt", 10: "Decrypt"},
    6006: {1: "Upload", 2: "Download", 3: "Update", 4: "Delete", 5: "Rename", 6: "Copy",
           7: "Move", 8: "Restore", 9: "Preview", 10: "Lock", 11: "Unlock", 12: "Share",
           13: "Unshare", 14: "Open", 15: "Sync", 16: "Unsync", 17: "Access Check"},
}
# Web Resource Access: (action, outcome) per activity.
WEB_ACCESS = {1: ("read", "success"), 2: ("read", "denied"), 3: ("revoke", "success"),
              4: ("read", "error")}


def _first(obj: Any, *paths: str) -> tuple[Any, str]:
    """The first present value among ``paths`` and its path (the last path if none)."""
    for path in paths:
        value = get_path(obj, path)
        if value not in (None, ""):
            return value, path
    return None, paths[-1]


class OcsfSource(MappedSource):
    format = "ocsf"
    name = "ocsf"

    def map(self, r: dict[str, Any]) -> tuple[dict[str, Any], dict[str, str]]:
        cls = r.get("class_uid")
        if cls is None:
            raise InvalidEvent("missing_field", "class_uid missing", "class_uid")
        if cls not in ACTIVITIES or isinstance(cls, bool):
            raise InvalidEvent("bad_value", f"class_uid {str(cls)[:20]} is not one of "
                               f"{', '.join(map(str, ACTIVITIES))}", "class_uid")
        origin: dict[str, str] = {"time": "time"}
        event_id, origin["event_id"] = _first(r, "metadata.uid")
        if event_id is None:
            raise InvalidEvent("missing_field", "metadata.uid missing", "metadata.uid")
        # Web Resource Access has no actor object: its user is the source endpoint's owner.
        actor, origin["actor"] = _first(r, "actor.user.uid", "actor.user.email_addr",
                                        "actor.user.name", "src_endpoint.owner.uid",
                                        "src_endpoint.owner.email_addr",
                                        "src_endpoint.owner.name")
        if actor is None:
            raise InvalidEvent("missing_field", "actor.user.uid missing (and no email_addr, "
                               "name or src_endpoint.owner)", "actor.user.uid")
        activity = r.get("activity_id")
        name = r.get("activity_name")
        if not isinstance(name, str) or not name:
            if not isinstance(activity, int) or activity not in ACTIVITIES[cls]:
                raise InvalidEvent("bad_value", f"activity_id {str(activity)[:20]} is not an "
                                   f"activity of class {cls} (and no activity_name)",
                                   "activity_id")
            name = ACTIVITIES[cls][activity]
        origin["action"] = "activity_name"
        ev: dict[str, Any] = {"event_id": event_id, "time": r.get("time"), "actor": actor,
                              "action": name.strip().lower().replace(" ", "_")}
        outcome = None
        if cls == 6004:
            act = activity if activity in WEB_ACCESS else 1
            ev["action"], outcome = WEB_ACCESS[act]
            rtype, origin["resource_type"] = _first(r, "web_resources.0.type")
            rid, origin["resource_id"] = _first(r, "web_resources.0.uid",
                                                "web_resources.0.url_string",
                                                "web_resources.0.name", "http_request.url.path")
            ev["resource_type"] = rtype or "web_resource"
        elif cls == 6006:
            rid, origin["resource_id"] = _first(r, "file.uid", "file.path", "file.name")
            ev["resource_type"] = "file"
            size = get_path(r, "file.size")
            if size is not None and ev["action"] == "download":
                ev["bytes"], origin["bytes"] = size, "file.size"
        elif cls == 6005:
            rtype, origin["resource_type"] = _first(r, "resources.0.type", "type")
            rid, origin["resource_id"] = _first(r, "table.uid", "table.name", "database.uid",
                                                "database.name", "databucket.uid",
                                                "databucket.name", "resources.0.uid",
                                                "resources.0.name")
            ev["resource_type"] = rtype if isinstance(rtype, str) and rtype else "datastore"
        else:
            rtype, origin["resource_type"] = _first(r, "resources.0.type", "api.service.name")
            rid, origin["resource_id"] = _first(r, "resources.0.uid", "resources.0.name")
            ev["resource_type"] = rtype if isinstance(rtype, str) and rtype else "api"
        if rid is not None:
            ev["resource_id"] = rid if isinstance(rid, str) else str(rid)
        customer, origin["customer_id"] = _first(r, "resources.0.owner.uid",
                                                 "cloud.account.uid")
        if customer is not None:
            ev["customer_id"] = customer
        ip, origin["source_ip"] = _first(r, "src_endpoint.ip")
        if ip is not None:
            ev["source_ip"] = ip
        client, origin["client"] = _first(r, "http_request.user_agent", "src_endpoint.name",
                                          "actor.app_name")
        if client is not None:
            ev["client"] = client
        role, origin["role"] = _first(r, "actor.user.type", "src_endpoint.owner.type")
        if role is not None:
            ev["role"] = role
        team, origin["team"] = _first(r, "actor.user.org.ou_name")
        if team is not None:
            ev["team"] = team
        status = r.get("status_id")
        if outcome is None and status == 2:  # Failure: denied when the detail says so
            detail = f"{r.get('status') or ''} {r.get('status_detail') or ''}".lower()
            outcome = "denied" if ("denied" in detail or "unauthorized" in detail
                                   or "forbidden" in detail) else "error"
        if outcome is not None:
            ev["outcome"] = outcome
        attrs: dict[str, Any] = {"class_uid": cls}
        for key, path in (("activity_id", "activity_id"), ("api", "api.operation"),
                          ("service", "api.service.name"), ("region", "cloud.region"),
                          ("session", "actor.session.uid"), ("product",
                                                             "metadata.product.name")):
            value = get_path(r, path)
            if value is not None:
                attrs[key] = value
        ev["attrs"] = attrs
        return ev, origin
