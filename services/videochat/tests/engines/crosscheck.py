"""Checks tokens minted by videochat-handshake with the engines' own libraries.

Our engines implement each token format by hand; this script holds them to code we did not
write: LiveKit's `livekit-api` verifier, Agora's reference AccessToken2 builder and parser
(`agoraiotools`), Twilio's `twilio` helper library and PyJWT.

Usage:  python crosscheck.py < cases.json

cases.json (every list optional; keys in brackets optional):
  {"livekit": [{"token", "api_key", "api_secret", "identity", "room", "can_publish", ["name"]}],
   "agora":   [{"token", "app_id", "app_certificate", "channel", "uid", "issue_ts", "salt",
                "expire", "can_publish"}],
   "twilio":  [{"token", "account_sid", "api_key_sid", "api_key_secret", "identity", "room",
                "iat", "ttl"}]}

Prints one line per check ("ok   ..." or "FAIL ...: detail") and a summary line, and exits 1 if
any check fails or no token was given, 0 otherwise.
"""

import base64
import binascii
import contextlib
import importlib
import json
import sys
import warnings
import zlib
from types import SimpleNamespace
from unittest import mock

import jwt
import jwt.warnings
import twilio.jwt
import twilio.jwt.access_token
from agoraiotools.AccessToken2 import AccessToken, ServiceRtc
from agoraiotools.RtcTokenBuilder2 import Role_Publisher, Role_Subscriber, RtcTokenBuilder
from livekit import api as livekit
from twilio.jwt.access_token import AccessToken as TwilioAccessToken
from twilio.jwt.access_token.grants import VideoGrant

# The module itself: the package's `agoraiotools.AccessToken2` attribute is a class of that name.
access_token2 = importlib.import_module("agoraiotools.AccessToken2")

# LiveKit's development secret ("secret") is deliberately short; PyJWT warns on every decode.
warnings.filterwarnings("ignore", category=jwt.warnings.InsecureKeyLengthWarning)

failures = []
checks = 0


def check(name, condition, detail=""):
    global checks
    checks += 1
    line = ("ok   " if condition else "FAIL ") + name
    if not condition and detail != "":
        line += f": {detail}"
    print(line)
    if not condition:
        failures.append(name)
    return condition


@contextlib.contextmanager
def frozen_clock(module, now):
    """Makes `module`, which did `import time` and calls `time.time()`, see `now` as the time."""
    with mock.patch.object(module, "time", SimpleNamespace(time=lambda: now)):
        yield


# --- LiveKit --------------------------------------------------------------------------------


def check_livekit(case):
    label = f"livekit {case['identity']}@{case['room']}"
    try:
        claims = livekit.TokenVerifier(case["api_key"], case["api_secret"]).verify(case["token"])
    except Exception as error:  # the verifier raises on a bad signature, issuer or expiry
        check(label + " verifies with livekit-api", False, repr(error))
        return
    check(label + " verifies with livekit-api", True)
    check(label + " identity", claims.identity == case["identity"], claims.identity)
    if "name" in case:
        check(label + " name", claims.name == case["name"], claims.name)
    check(label + " room", claims.video.room == case["room"], claims.video.room)
    check(label + " roomJoin", claims.video.room_join is True, claims.video.room_join)
    check(label + " canSubscribe", claims.video.can_subscribe is True, claims.video.can_subscribe)
    check(label + " canPublish", claims.video.can_publish == case["can_publish"], claims.video.can_publish)


# --- Agora ----------------------------------------------------------------------------------


def agora_body(token):
    """The decompressed body: zlib output differs between implementations, bodies must not."""
    return zlib.decompress(base64.b64decode(token[3:], validate=True))


def agora_reference(case):
    """The token Agora's RtcTokenBuilder2 builds for the same inputs, clock and salt."""
    role = Role_Publisher if case["can_publish"] else Role_Subscriber
    # AccessToken2 draws its salt with `secrets.SystemRandom().randint(1, 99999999)`.
    fixed_salt = SimpleNamespace(SystemRandom=lambda: SimpleNamespace(randint=lambda low, high: case["salt"]))
    with frozen_clock(access_token2, case["issue_ts"]), mock.patch.object(access_token2, "secrets", fixed_salt):
        return RtcTokenBuilder.build_token_with_uid(
            case["app_id"], case["app_certificate"], case["channel"], case["uid"], role,
            token_expire=case["expire"], privilege_expire=case["expire"],
        )


def check_agora(case):
    role = "publisher" if case["can_publish"] else "subscriber"
    label = f"agora uid {case['uid']} ({role}) in {case['channel']}"
    ours = case["token"]
    if not check(label + " is a 007 token", ours.startswith("007"), ours[:3]):
        return
    try:
        body = agora_body(ours)
    except (binascii.Error, zlib.error) as error:
        check(label + " decodes", False, repr(error))
        return
    reference = agora_reference(case)
    check(label + " Agora's RtcTokenBuilder2 builds the same body (signature included)",
          reference != "" and body == agora_body(reference),
          "Agora's builder refused the inputs" if reference == "" else "bodies differ")

    parsed = AccessToken()
    try:
        parsed_ok = parsed.from_string(ours)
    except ValueError as error:
        parsed_ok, detail = False, repr(error)
    else:
        detail = "not a 007 token"
    if not check(label + " Agora's AccessToken parses it", parsed_ok, detail):
        return
    # agoraiotools has no getters: its fields are name-mangled attributes.
    check(label + " app id", parsed._AccessToken__app_id.decode() == case["app_id"], parsed._AccessToken__app_id)
    check(label + " issue ts", parsed._AccessToken__issue_ts == case["issue_ts"], parsed._AccessToken__issue_ts)
    check(label + " salt", parsed._AccessToken__salt == case["salt"], parsed._AccessToken__salt)
    check(label + " expire", parsed._AccessToken__expire == case["expire"], parsed._AccessToken__expire)
    services = sorted(parsed._AccessToken__service)
    check(label + " services are RTC only", services == [ServiceRtc.kServiceType], services)
    rtc = parsed._AccessToken__service.get(ServiceRtc.kServiceType)
    if rtc is None:
        return
    channel = rtc._ServiceRtc__channel_name.decode()
    check(label + " channel", channel == case["channel"], channel)
    uid = rtc._ServiceRtc__uid.decode()
    expected_uid = "" if case["uid"] == 0 else str(case["uid"])
    check(label + " uid", uid == expected_uid, repr(uid))
    privileges = {int(k): v for k, v in rtc._Service__privileges.items()}
    publish = [ServiceRtc.kPrivilegePublishAudioStream, ServiceRtc.kPrivilegePublishVideoStream,
               ServiceRtc.kPrivilegePublishDataStream]
    wanted = [ServiceRtc.kPrivilegeJoinChannel] + (publish if case["can_publish"] else [])
    check(label + " privileges", privileges == {p: case["expire"] for p in wanted}, privileges)


# --- Twilio ---------------------------------------------------------------------------------


def twilio_reference(case):
    """The token Twilio's helper library builds for the same inputs at the same clock."""
    token = TwilioAccessToken(case["account_sid"], case["api_key_sid"], case["api_key_secret"],
                              identity=case["identity"], ttl=case["ttl"])
    token.add_grant(VideoGrant(room=case["room"]))
    with frozen_clock(twilio.jwt, case["iat"]), frozen_clock(twilio.jwt.access_token, case["iat"]):
        return token.to_jwt()


def check_twilio(case):
    label = f"twilio {case['identity']}@{case['room']}"
    ours = case["token"]
    try:
        claims = jwt.decode(ours, case["api_key_secret"], algorithms=["HS256"],
                            options={"require": ["exp", "nbf"]})
    except jwt.PyJWTError as error:
        check(label + " PyJWT verifies the signature", False, repr(error))
        return
    check(label + " PyJWT verifies the signature", True)
    theirs = twilio_reference(case)
    header, their_header = jwt.get_unverified_header(ours), jwt.get_unverified_header(theirs)
    check(label + " same header as twilio", header == their_header, f"{header} vs {their_header}")
    their_claims = jwt.decode(theirs, case["api_key_secret"], algorithms=["HS256"])
    check(label + " same claim names as twilio", sorted(claims) == sorted(their_claims),
          f"{sorted(claims)} vs {sorted(their_claims)}")
    for key in sorted(their_claims):
        check(label + f" same {key} as twilio", claims.get(key) == their_claims[key],
              f"{claims.get(key)} vs {their_claims[key]}")


def main():
    cases = json.load(sys.stdin)
    checkers = {"livekit": check_livekit, "agora": check_agora, "twilio": check_twilio}
    unknown = sorted(set(cases) - set(checkers))
    if unknown:
        check("known engines only", False, unknown)
    total = 0
    for engine, checker in checkers.items():
        for case in cases.get(engine, []):
            total += 1
            try:
                checker(case)
            except Exception as error:  # a malformed case or token must fail, not crash
                check(f"{engine} case {total} is checkable", False, repr(error))
    print(f"{total} tokens, {checks} checks, {len(failures)} failed")
    sys.exit(1 if failures or total == 0 else 0)


if __name__ == "__main__":
    main()
