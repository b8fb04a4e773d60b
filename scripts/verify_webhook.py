#!/usr/bin/env python3
"""Verify a captured tollgate webhook delivery with the reference Standard
Webhooks library (`pip install standardwebhooks`), independent of the
gateway's Rust code (N1).

Capture one with the test suite:
    WEBHOOK_CAPTURE=/tmp/delivery.json cargo test --test webhooks deliveries_are_signed
then:
    python3 scripts/verify_webhook.py /tmp/delivery.json

The capture is JSON: {"secret": "whsec_...", "headers": {...}, "body": "..."}.
The library refuses timestamps more than 5 minutes old: verify promptly.
Exit status 0 when the signature verifies, 1 otherwise.
"""
import json
import sys

from standardwebhooks.webhooks import Webhook, WebhookVerificationError


def main(path: str) -> int:
    with open(path, encoding="utf-8") as f:
        cap = json.load(f)
    wh = Webhook(cap["secret"])
    try:
        payload = wh.verify(cap["body"], cap["headers"])
    except WebhookVerificationError as e:
        print(f"FAILED: {e}")
        return 1
    print(f"verified: webhook-id={cap['headers']['webhook-id']} type={payload['type']}")
    # A tampered body must fail.
    try:
        wh.verify(cap["body"] + " ", cap["headers"])
        print("FAILED: a tampered body verified")
        return 1
    except WebhookVerificationError:
        print("tampered body refused, as it should be")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
