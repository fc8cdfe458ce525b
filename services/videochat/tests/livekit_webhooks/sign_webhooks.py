"""Produces LiveKit webhooks exactly as a LiveKit server sends them, with LiveKit's own library.

A LiveKit server posts the `WebhookEvent` protobuf message as JSON and signs it with an access
token in the `Authorization` header: a JWT made with the API key and secret whose `sha256` claim
is the base64 SHA-256 of the body (livekit/protocol `webhook.URLNotifier`). This script builds
both with `livekit-api` (`AccessToken.with_sha256`) and `livekit.protocol.webhook.WebhookEvent`.

Usage:  python sign_webhooks.py < cases.json

cases.json: [{"event", "room", ["identity"], "created_at", "api_key", "api_secret",
              ["tamper"]}] - with "tamper": true the body is changed after signing.
Prints a JSON list of {"authorization", "body"}.
"""

import base64
import hashlib
import json
import sys

from google.protobuf.json_format import MessageToJson
from livekit import api
from livekit.protocol import models, webhook


def sign(case):
    event = webhook.WebhookEvent(
        event=case["event"],
        room=models.Room(name=case["room"], sid="RM_" + case["room"]),
        id="EV_" + hashlib.sha1(json.dumps(case, sort_keys=True).encode()).hexdigest()[:12],
        created_at=case["created_at"],
    )
    if case.get("identity"):
        event.participant.CopyFrom(
            models.ParticipantInfo(identity=case["identity"], sid="PA_" + case["identity"])
        )
    body = MessageToJson(event, indent=None)
    digest = base64.b64encode(hashlib.sha256(body.encode()).digest()).decode()
    token = (
        api.AccessToken(case["api_key"], case["api_secret"])
        .with_sha256(digest)
        .to_jwt()
    )
    if case.get("tamper"):
        body = body.replace(case["room"], case["room"] + "x", 1)
    return {"authorization": token, "body": body}


def main():
    cases = json.load(sys.stdin)
    # The receiver shipped with the same SDK must accept what we sign (the untampered ones).
    receiver = None
    out = []
    for case in cases:
        signed = sign(case)
        if not case.get("tamper"):
            verifier = api.TokenVerifier(case["api_key"], case["api_secret"])
            receiver = api.WebhookReceiver(verifier)
            receiver.receive(signed["body"], signed["authorization"])
        out.append(signed)
    json.dump(out, sys.stdout)


if __name__ == "__main__":
    main()
