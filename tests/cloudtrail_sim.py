"""The simulated company's SPEC events written as CloudTrail S3 records (for the tests).

Each access becomes the S3 call of the same kind on the customer's bucket by the actor's
IAM user, so a CloudTrail source carries the same story as the SPEC events.
"""

from __future__ import annotations

from typing import Any

from detectors.engine import rfc3339

S3_API = {"read": "HeadObject", "search": "ListObjects", "export": "GetObject",
          "download": "GetObject", "view_stream": "GetObject", "update": "PutObject",
          "delete": "DeleteObject"}


def to_cloudtrail(ev: dict[str, Any]) -> dict[str, Any]:
    t = ev["time"]
    return {
        "eventVersion": "1.09", "eventID": ev["event_id"],
        "eventTime": rfc3339(t) if isinstance(t, int) else t,
        "eventSource": "s3.amazonaws.com", "eventName": S3_API.get(ev["action"], "GetObject"),
        "eventType": "AwsApiCall", "awsRegion": "eu-west-1",
        "recipientAccountId": "111122223333",
        "userIdentity": {"type": "IAMUser",
                         "arn": f"arn:aws:iam::111122223333:user/{ev['actor']}"},
        "requestParameters": {"bucketName": ev.get("customer_id") or "shared",
                              "key": ev.get("resource_id") or ev["resource_type"]},
        "sourceIPAddress": ev.get("source_ip") or "AWS Internal",
        "userAgent": ev.get("client") or "console",
    }
