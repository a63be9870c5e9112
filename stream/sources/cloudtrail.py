"""AWS CloudTrail records → SPEC access events (management and S3 data events).

Decisions (docs/sources.md has the full table):

- ``actor``: the principal, stable across sessions. An assumed-role session
  (``arn:aws:sts::A:assumed-role/R/S``) is the role (``arn:aws:iam::A:role/R``, from
  ``sessionContext.sessionIssuer.arn`` when present), the session name ``S`` goes to
  ``attrs.session``: an EC2 instance or a CI job gets a new session name each time.
- AWS services calling on their own (``type: AWSService``) or on a principal's behalf
  (``invokedBy``) are ``service:<name>`` with role ``aws_service``, never mixed into a
  person's baseline; the principal they acted for is ``attrs.on_behalf_of``.
- ``sourceIPAddress`` that is not an IP (``ec2.amazonaws.com``, ``AWS Internal``, or a
  scrambled sample value) is kept as ``attrs.source_host``; ``source_ip`` is left out.
  The event is real, so it is not dead-lettered. Regions are not checked (AWS adds them):
  ``attrs.aws_region`` carries whatever the record says.
- ``eventTime`` without an offset (``2024-01-01 00:00:00.000``, as exports write it) is
  UTC, as every CloudTrail time is.
- ``errorCode``: ``AccessDenied*``/``*Unauthorized*``/``*Forbidden*`` → ``denied``, any
  other code → ``error``.

>>> src = CloudTrailSource()
>>> rec = {"eventID": "9f1", "eventTime": "2024-08-02T08:23:55Z",
...        "eventSource": "s3.amazonaws.com", "eventName": "GetObject",
...        "sourceIPAddress": "203.0.113.9", "userAgent": "aws-cli/2.15",
...        "requestParameters": {"bucketName": "pii", "key": "c/42.json"},
...        "additionalEventData": {"bytesTransferredOut": 2048.0},
...        "userIdentity": {"type": "AssumedRole",
...            "arn": "arn:aws:sts::111:assumed-role/app-role/i-0abc"}}
>>> ev = src.one(rec, b"", None).event
>>> ev.actor, ev.action, ev.resource_type, ev.resource_id, ev.customer_id, ev.bytes
('arn:aws:iam::111:role/app-role', 'download', 's3', 'pii/c/42.json', 'pii', 2048)
>>> ev.role, ev.attrs["session"]
('AssumedRole', 'i-0abc')
>>> src.one({"eventID": "x", "eventTime": "2024-08-02T08:23:55Z", "eventName": "ListBuckets",
...          "eventSource": "s3.amazonaws.com", "userIdentity": {"type": "IAMUser"}},
...         b"", None).error.detail
'cloudtrail: userIdentity.arn missing (and no principalId or userName either)'
"""

from __future__ import annotations

import math
import re
from typing import Any

from detectors.events import InvalidEvent, _is_ip
from stream.sources import MappedSource, get_path

# Data-plane calls that hand data to the caller: egress in SPEC terms.
DOWNLOADS = frozenset({"getobject", "selectobjectcontent", "getobjecttorrent"})
CUSTOMER_MODES = ("bucket", "account", "none")
# CloudTrail times are UTC; exports (Athena, Panther, CSV) often drop the Z.
_NO_OFFSET = re.compile(r"\d{4}-\d\d-\d\d[T ]\d\d:\d\d:\d\d(?:\.\d+)?")


def _outcome(code: str) -> str:
    low = code.lower()
    if "accessdenied" in low or "unauthorized" in low or "forbidden" in low:
        return "denied"
    return "error"


class CloudTrailSource(MappedSource):
    format = "cloudtrail"
    name = "cloudtrail"
    container = "Records"

    def __init__(self, customer: str = "bucket") -> None:
        if customer not in CUSTOMER_MODES:
            raise ValueError(f"cloudtrail customer {customer!r}: expected one of "
                             f"{', '.join(CUSTOMER_MODES)}")
        self.customer = customer

    def map(self, r: dict[str, Any]) -> tuple[dict[str, Any], dict[str, str]]:
        for name in ("eventName", "eventSource", "eventTime", "eventID"):
            if r.get(name) in (None, ""):
                hint = " (not a CloudTrail record?)" if name == "eventName" else ""
                raise InvalidEvent("missing_field", f"{name} missing{hint}", name)
        ui = r.get("userIdentity")
        if not isinstance(ui, dict):
            raise InvalidEvent("missing_field" if ui is None else "wrong_type",
                               "userIdentity missing" if ui is None
                               else "userIdentity must be an object", "userIdentity")
        attrs: dict[str, Any] = {}
        principal, role = self._principal(ui, attrs)
        invoked_by = ui.get("invokedBy")
        if ui.get("type") == "AWSService" or (isinstance(invoked_by, str) and invoked_by):
            service = invoked_by if isinstance(invoked_by, str) and invoked_by else principal
            if principal and principal != service:
                attrs["on_behalf_of"] = principal
            actor, role = f"service:{service}", "aws_service"
        else:
            actor = principal
        name = r["eventName"]
        source = r["eventSource"]
        if not isinstance(name, str) or not isinstance(source, str):
            bad = "eventName" if not isinstance(name, str) else "eventSource"
            raise InvalidEvent("wrong_type", f"{bad} must be a string", bad)
        api = name.lower()
        params = r.get("requestParameters") if isinstance(r.get("requestParameters"),
                                                          dict) else {}
        bucket = params.get("bucketName") if isinstance(params.get("bucketName"), str) else None
        key = params.get("key") if isinstance(params.get("key"), str) else None
        account = r.get("recipientAccountId") or ui.get("accountId")
        ip = r.get("sourceIPAddress")
        origin = {"event_id": "eventID", "time": "eventTime", "actor": "userIdentity.arn",
                  "action": "eventName", "resource_type": "eventSource",
                  "client": "userAgent", "source_ip": "sourceIPAddress",
                  "bytes": "additionalEventData.bytesTransferredOut"}
        ev: dict[str, Any] = {
            "event_id": r["eventID"],
            "time": (r["eventTime"] + "Z" if isinstance(r["eventTime"], str)
                     and _NO_OFFSET.fullmatch(r["eventTime"]) else r["eventTime"]),
            "actor": actor,
            "action": "download" if api in DOWNLOADS else api,
            "resource_type": source.split(".", 1)[0] or source,
            "role": role,
            "client": r.get("userAgent"),
        }
        resource = self._resource(r, bucket, key)
        if resource is not None:
            ev["resource_id"] = resource
        if self.customer == "bucket" and bucket:
            ev["customer_id"] = bucket
            origin["customer_id"] = "requestParameters.bucketName"
        elif self.customer != "none" and isinstance(account, str) and account:
            ev["customer_id"] = account
            origin["customer_id"] = "recipientAccountId"
        if isinstance(ip, str) and _is_ip(ip):
            ev["source_ip"] = ip
        elif ip is not None:
            attrs["source_host"] = ip
        sent = get_path(r, "additionalEventData.bytesTransferredOut")
        if isinstance(sent, int | float) and not isinstance(sent, bool) and math.isfinite(sent):
            ev["bytes"] = int(sent) if sent >= 0 else sent  # negative: parse_event says so
        code = r.get("errorCode")
        if code:
            ev["outcome"] = _outcome(str(code))
            attrs["error_code"] = code
        attrs.update({"api": name, "event_source": source})
        for key_, field in (("aws_region", "awsRegion"), ("account", "recipientAccountId"),
                            ("event_type", "eventType"), ("read_only", "readOnly")):
            if r.get(field) is not None:
                attrs[key_] = r[field]
        ev["attrs"] = attrs
        return ev, origin

    @staticmethod
    def _principal(ui: dict[str, Any], attrs: dict[str, Any]) -> tuple[str, str | None]:
        """(stable principal, identity type) of a userIdentity."""
        kind = ui.get("type") if isinstance(ui.get("type"), str) else None
        arn = ui.get("arn") if isinstance(ui.get("arn"), str) else None
        if kind:
            attrs["identity_type"] = kind
        if kind == "AssumedRole" or (arn and ":assumed-role/" in arn):
            issuer = get_path(ui, "sessionContext.sessionIssuer.arn")
            if arn and ":assumed-role/" in arn:
                head, _, rest = arn.partition(":assumed-role/")
                role_name, _, session = rest.partition("/")
                if session:
                    attrs["session"] = session
                role_arn = f"{head.replace(':sts:', ':iam:', 1)}:role/{role_name}"
                return (issuer if isinstance(issuer, str) and issuer else role_arn), kind
            if isinstance(issuer, str) and issuer:
                return issuer, kind
        if arn:
            return arn, kind
        if kind == "AWSService" and isinstance(ui.get("invokedBy"), str):
            return ui["invokedBy"], kind
        if kind == "AWSAccount" and isinstance(ui.get("accountId"), str):
            return f"account:{ui['accountId']}", kind
        for alt in ("principalId", "userName"):
            if isinstance(ui.get(alt), str) and ui[alt]:
                return ui[alt], kind
        raise InvalidEvent("missing_field", "userIdentity.arn missing (and no principalId "
                           "or userName either)", "userIdentity.arn")

    @staticmethod
    def _resource(r: dict[str, Any], bucket: str | None, key: str | None) -> str | None:
        if bucket:
            return f"{bucket}/{key}" if key else bucket
        resources = r.get("resources")
        if isinstance(resources, list):
            for res in resources:
                if isinstance(res, dict) and isinstance(res.get("ARN"), str):
                    return res["ARN"]
        return None
