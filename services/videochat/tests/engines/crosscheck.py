"""Checks tokens minted by videochat-handshake with the engines' own libraries.

Reads a JSON document on stdin:
  {"livekit": [{"token", "api_key", "api_secret", "identity", "room", "name", "can_publish"}],
   "agora":   [{"token", "app_id", "app_certificate", "channel", "uid", "issue_ts", "salt",
                "expire", "can_publish", "fixed_salt"}],
   "twilio":  [{"token", "account_sid", "api_key_sid", "api_key_secret", "identity", "room",
                "iat", "ttl"}]}
prints one line per check, and exits 1 if any check fails.
"""

import base64
import json
import sys
import zlib

import jwt
from agoraiotools.AccessToken2 import AccessToken, ServiceRtc
from livekit import api as livekit
from twilio.jwt.access_token import AccessToken as TwilioAccessToken
from twilio.jwt.access_token.grants import VideoGrant

failures = []


def check(name, condition, detail=""):
    print(("ok   " if condition else "FAIL ") + name + (f": {detail}" if detail and not condition else ""))
    if not condition:
        failures.append(name)


def agora_body(token):
    return zlib.decompress(base64.b64decode(token[3:]))


def check_livekit(case):
    label = f"livekit {case['identity']}@{case['room']}"
    try:
        claims = livekit.TokenVerifier(case["api_key"], case["api_secret"]).verify(case["token"])
    except Exception as error:  # the verifier raises on a bad signature or expiry
        check(label + " verifies", False, repr(error))
        return
    check(label + " verifies", True)
    check(label + " identity", claims.identity == case["identity"], claims.identity)
    check(label + " name", claims.name == case["name"], claims.name)
    check(label + " room", claims.video.room == case["room"], claims.video.room)
    check(label + " roomJoin", claims.video.room_join is True)
    check(label + " canSubscribe", claims.video.can_subscribe is True)
    check(label + " canPublish", claims.video.can_publish == case["can_publish"], claims.video.can_publish)


def check_agora(case):
    label = f"agora uid {case['uid']} in {case['channel']}"
    ours = case["token"]
    check(label + " is a 007 token", ours.startswith("007"))
    if case.get("fixed_salt"):
        # Agora's reference builder, same inputs, same salt and timestamp: same bytes once
        # decompressed (zlib output itself may differ between implementations).
        reference = AccessToken(case["app_id"], case["app_certificate"], issue_ts=case["issue_ts"], expire=case["expire"])
        reference._AccessToken__salt = case["salt"]
        rtc = ServiceRtc(case["channel"], case["uid"])
        rtc.add_privilege(ServiceRtc.kPrivilegeJoinChannel, case["expire"])
        if case["can_publish"]:
            rtc.add_privilege(ServiceRtc.kPrivilegePublishAudioStream, case["expire"])
            rtc.add_privilege(ServiceRtc.kPrivilegePublishVideoStream, case["expire"])
            rtc.add_privilege(ServiceRtc.kPrivilegePublishDataStream, case["expire"])
        reference.add_service(rtc)
        expected = reference.build()
        check(label + " byte-identical to Agora's builder (decompressed)", agora_body(ours) == agora_body(expected))
    parsed = AccessToken()
    try:
        parsed.from_string(ours)
    except ValueError as error:
        check(label + " parses", False, repr(error))
        return
    check(label + " parses", True)
    check(label + " app id", parsed._AccessToken__app_id.decode() == case["app_id"])
    check(label + " expire", parsed._AccessToken__expire == case["expire"], parsed._AccessToken__expire)
    rtc = parsed._AccessToken__service.get(ServiceRtc.kServiceType)
    check(label + " has the RTC service", rtc is not None)
    if rtc is None:
        return
    check(label + " channel", rtc._ServiceRtc__channel_name.decode() == case["channel"])
    expected_uid = "" if case["uid"] == 0 else str(case["uid"])
    check(label + " uid", rtc._ServiceRtc__uid.decode() == expected_uid, rtc._ServiceRtc__uid)
    privileges = sorted(int(k) for k in rtc._Service__privileges.keys())
    want = [1, 2, 3, 4] if case["can_publish"] else [1]
    check(label + " privileges", privileges == want, privileges)


def check_twilio(case):
    label = f"twilio {case['identity']}@{case['room']}"
    ours = case["token"]
    try:
        claims = jwt.decode(ours, case["api_key_secret"], algorithms=["HS256"])
    except jwt.PyJWTError as error:
        check(label + " PyJWT verifies the signature", False, repr(error))
        return
    check(label + " PyJWT verifies the signature", True)
    reference = TwilioAccessToken(case["account_sid"], case["api_key_sid"], case["api_key_secret"],
                                  identity=case["identity"], ttl=case["ttl"])
    reference.add_grant(VideoGrant(room=case["room"]))
    theirs = reference.to_jwt()
    their_claims = jwt.decode(theirs, case["api_key_secret"], algorithms=["HS256"])
    check(label + " same header as twilio", jwt.get_unverified_header(ours) == jwt.get_unverified_header(theirs),
          f"{jwt.get_unverified_header(ours)} vs {jwt.get_unverified_header(theirs)}")
    check(label + " same claim names as twilio", sorted(claims) == sorted(their_claims),
          f"{sorted(claims)} vs {sorted(their_claims)}")
    for key in ("iss", "sub", "grants"):
        check(label + f" same {key} as twilio", claims[key] == their_claims[key], f"{claims[key]} vs {their_claims[key]}")
    check(label + " jti is key-iat", claims["jti"] == f"{case['api_key_sid']}-{case['iat']}", claims["jti"])
    check(label + " lifetime", claims["exp"] - claims["nbf"] == case["ttl"])


def main():
    cases = json.load(sys.stdin)
    for case in cases.get("livekit", []):
        check_livekit(case)
    for case in cases.get("agora", []):
        check_agora(case)
    for case in cases.get("twilio", []):
        check_twilio(case)
    total = sum(len(v) for v in cases.values())
    print(f"{total} tokens checked, {len(failures)} failed checks")
    sys.exit(1 if failures or total == 0 else 0)


if __name__ == "__main__":
    main()
