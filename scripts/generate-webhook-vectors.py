"""Generates Tests/PKRCoreTests/Vectors/webhook-vectors.json with Python's hmac/hashlib/base64 only."""
import base64, hashlib, hmac, json, sys

REF_SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
REF_ID = "msg_p5jXN8AQM9LWM0D4loKWxJek"
REF_TS = 1614265330
REF_BODY = '{"test": 2432232314}'
# Fixed (not random) keys so the file is reproducible.
OLD_SECRET = "whsec_" + base64.b64encode(bytes(range(1, 33))).decode()
NEW_SECRET = "whsec_" + base64.b64encode(hashlib.sha256(b"pkr rotation key").digest()[:24] * 2).decode()  # 48 bytes
OTHER_SECRET = "whsec_" + base64.b64encode(bytes([0xA5] * 64)).decode()
LEGACY = "legacy-shared-secret-\u00e9\u00df"  # non-ASCII on purpose: the key is its UTF-8 bytes
NOW = 1732622400
ID = "msg_2pKRdemo01"
BODY = json.dumps({"type": "wallet.credit", "provider_tx_id": "TX-0001", "account": "PK00DEMO",
                   "direction": "credit", "amount_pkr": "1000.00", "status": "settled",
                   "occurred_at": "2024-11-26T12:00:00Z", "memo": "CNIC 42101 / ref: x"}, separators=(",", ":"))
BINARY_BODY = b"\xff\xfe\x00binary\x80 payload\n\xc3("


def key(secret):
    return base64.b64decode(secret[len("whsec_"):], validate=True)


def v1(secret, msg_id, ts, body):
    body = body if isinstance(body, bytes) else body.encode()
    mac = hmac.new(key(secret), f"{msg_id}.{ts}.".encode() + body, hashlib.sha256).digest()
    return "v1," + base64.b64encode(mac).decode()


def legacy(secret, body):
    body = body if isinstance(body, bytes) else body.encode()
    return hmac.new(secret.encode("utf-8"), body, hashlib.sha256).hexdigest()


def vec(name, expect, *, secrets=(OLD_SECRET,), msg_id=ID, ts=None, now=NOW, body=BODY, signature=None,
        legacy_secret=None, legacy_signature=None, reason=None, scheme=None, omit=()):
    ts = str(now) if ts is None else ts
    v = {"name": name, "secrets": list(secrets)}
    if legacy_secret is not None:
        v["legacy_secret"] = legacy_secret
    v["id"], v["timestamp"], v["now"], v["tolerance_s"] = msg_id, ts, now, 300
    if isinstance(body, bytes):
        v["body_base64"] = base64.b64encode(body).decode()
    else:
        v["body"] = body
    if signature is not None:
        v["signature"] = signature
    if legacy_signature is not None:
        v["legacy_signature"] = legacy_signature
    for field in omit:
        v.pop(field)
    v["expect"] = expect
    if expect == "valid":
        v["scheme"] = scheme or "standard_webhooks_v1"
    else:
        v["reason"] = reason
    return v


def sig(ts=None, secret=OLD_SECRET, body=BODY, msg_id=ID):
    return v1(secret, msg_id, str(NOW) if ts is None else ts, body)


ref_sig = v1(REF_SECRET, REF_ID, REF_TS, REF_BODY)
assert ref_sig == "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=", ref_sig
bad_mac = "v1," + base64.b64encode(bytes(32)).decode()
short_mac = "v1," + base64.b64encode(bytes(16)).decode()
good_raw = sig()[3:]

V = [
    vec("standard webhooks reference vector", "valid", secrets=[REF_SECRET], msg_id=REF_ID, ts=str(REF_TS),
        now=REF_TS, body=REF_BODY, signature=ref_sig),
    vec("reference vector with one byte of the body changed", "reject", secrets=[REF_SECRET], msg_id=REF_ID,
        ts=str(REF_TS), now=REF_TS, body='{"test": 2432232315}', signature=ref_sig, reason="signature_mismatch"),
    vec("payment event signed with the only secret", "valid", signature=sig()),
    vec("rotation: two secrets, signed by the second", "valid", secrets=[OLD_SECRET, NEW_SECRET],
        signature=sig(secret=NEW_SECRET)),
    vec("rotation: two secrets, signed by the first", "valid", secrets=[OLD_SECRET, NEW_SECRET], signature=sig()),
    vec("two signatures in the header, only the second matches", "valid",
        signature=bad_mac + " " + sig()),
    vec("two signatures in the header, only the first matches", "valid", secrets=[NEW_SECRET],
        signature=sig(secret=NEW_SECRET) + " " + sig(secret=OTHER_SECRET)),
    vec("unknown version entries are skipped", "valid", signature="v1a,abc v2," + good_raw + " " + sig()),
    vec("tampered body", "reject", body=BODY.replace("1000.00", "9000.00"), signature=sig(), reason="signature_mismatch"),
    vec("tampered message id", "reject", msg_id=ID + "x", signature=sig(), reason="signature_mismatch"),
    vec("tampered timestamp (inside the window)", "reject", ts=str(NOW - 1), signature=sig(), reason="signature_mismatch"),
    vec("signed with a secret that is not configured", "reject", signature=sig(secret=OTHER_SECRET), reason="signature_mismatch"),
    vec("rotation: signed by a retired secret", "reject", secrets=[NEW_SECRET, OTHER_SECRET], signature=sig(),
        reason="signature_mismatch"),
    vec("timestamp exactly tolerance in the past", "valid", ts=str(NOW - 300), signature=sig(str(NOW - 300))),
    vec("timestamp exactly tolerance in the future", "valid", ts=str(NOW + 300), signature=sig(str(NOW + 300))),
    vec("timestamp one second older than the window", "reject", ts=str(NOW - 301), signature=sig(str(NOW - 301)),
        reason="timestamp_too_old"),
    vec("timestamp one second newer than the window", "reject", ts=str(NOW + 301), signature=sig(str(NOW + 301)),
        reason="timestamp_too_new"),
    vec("replayed reference delivery a day later", "reject", secrets=[REF_SECRET], msg_id=REF_ID, ts=str(REF_TS),
        now=REF_TS + 86400, body=REF_BODY, signature=ref_sig, reason="timestamp_too_old"),
    vec("timestamp in milliseconds (13 digits)", "reject", ts=str(NOW * 1000), signature=sig(str(NOW * 1000)),
        reason="malformed_timestamp"),
    vec("largest 12-digit timestamp", "reject", ts="999999999999", signature=sig("999999999999"),
        reason="timestamp_too_new"),
    vec("timestamp zero", "reject", ts="0", signature=sig("0"), reason="timestamp_too_old"),
    vec("timestamp is letters", "reject", ts="abc", signature=sig("abc"), reason="malformed_timestamp"),
    vec("timestamp has a fraction", "reject", ts=f"{REF_TS}.5", signature=sig(f"{REF_TS}.5"), reason="malformed_timestamp"),
    vec("timestamp is negative", "reject", ts="-5", signature=sig("-5"), reason="malformed_timestamp"),
    vec("timestamp is empty", "reject", ts="", signature=sig(""), reason="malformed_timestamp"),
    vec("timestamp has a leading plus", "reject", ts=f"+{NOW}", signature=sig(f"+{NOW}"), reason="malformed_timestamp"),
    vec("timestamp has surrounding spaces", "reject", ts=f" {NOW}", signature=sig(f" {NOW}"), reason="malformed_timestamp"),
    vec("timestamp is longer than 12 digits", "reject", ts="0000000" + str(NOW), signature=sig(),
        reason="malformed_timestamp"),
    vec("webhook-signature header missing", "reject", reason="missing_signature_headers"),
    vec("webhook-id header missing", "reject", signature=sig(), omit=("id",), reason="missing_signature_headers"),
    vec("webhook-timestamp header missing", "reject", signature=sig(), omit=("timestamp",),
        reason="missing_signature_headers"),
    vec("empty webhook-id", "reject", msg_id="", signature=sig(msg_id=""), reason="malformed_message_id"),
    vec("webhook-id with a space", "reject", msg_id="msg 1", signature=sig(msg_id="msg 1"), reason="malformed_message_id"),
    vec("signature without a version prefix", "reject", signature=good_raw, reason="malformed_signature"),
    vec("signature header is empty", "reject", signature="", reason="malformed_signature"),
    vec("v1 signature is not base64", "reject", signature="v1,not*base64!", reason="malformed_signature"),
    vec("v1 signature decodes to 16 bytes", "reject", signature=short_mac, reason="malformed_signature"),
    vec("only a v2 signature", "reject", signature="v2," + good_raw, reason="malformed_signature"),
    vec("version prefix in upper case", "reject", signature="V1," + good_raw, reason="malformed_signature"),
    vec("well-formed v1 signature that matches nothing", "reject", signature=bad_mac, reason="signature_mismatch"),
    vec("non-UTF-8 body signed over its bytes", "valid", body=BINARY_BODY, signature=sig(body=BINARY_BODY)),
    vec("non-UTF-8 body with one bit flipped", "reject", body=bytes([BINARY_BODY[0] ^ 1]) + BINARY_BODY[1:],
        signature=sig(body=BINARY_BODY), reason="signature_mismatch"),
    vec("empty body", "valid", body="", signature=sig(body="")),
    vec("legacy hex signature", "valid", secrets=[OLD_SECRET], legacy_secret=LEGACY, body=BODY,
        legacy_signature=legacy(LEGACY, BODY), omit=("id", "timestamp"), scheme="legacy_hex"),
    vec("legacy hex signature with sha256= prefix", "valid", legacy_secret=LEGACY,
        legacy_signature="sha256=" + legacy(LEGACY, BODY), omit=("id", "timestamp"), scheme="legacy_hex"),
    vec("legacy signature over a non-UTF-8 body", "valid", legacy_secret=LEGACY, body=BINARY_BODY,
        legacy_signature=legacy(LEGACY, BINARY_BODY), omit=("id", "timestamp"), scheme="legacy_hex"),
    vec("legacy signature over a tampered body", "reject", legacy_secret=LEGACY, body=BODY + " ",
        legacy_signature=legacy(LEGACY, BODY), omit=("id", "timestamp"), reason="signature_mismatch"),
    vec("legacy signature made with the wrong key", "reject", legacy_secret=LEGACY,
        legacy_signature=legacy(LEGACY + "x", BODY), omit=("id", "timestamp"), reason="signature_mismatch"),
    vec("legacy signature keyed with the whsec_ text", "reject", legacy_secret=LEGACY,
        legacy_signature=legacy(OLD_SECRET, BODY), omit=("id", "timestamp"), reason="signature_mismatch"),
    vec("legacy signature is not hex", "reject", legacy_secret=LEGACY,
        legacy_signature="z" * 64, omit=("id", "timestamp"), reason="malformed_signature"),
    vec("legacy signature is truncated", "reject", legacy_secret=LEGACY,
        legacy_signature=legacy(LEGACY, BODY)[:62], omit=("id", "timestamp"), reason="malformed_signature"),
    vec("legacy signature sent but no legacy key configured", "reject",
        legacy_signature=legacy(LEGACY, BODY), omit=("id", "timestamp"), reason="missing_signature_headers"),
    # A partial standard header set must not fall back to the weaker legacy scheme.
    vec("legacy signature alongside a partial standard header set", "reject", legacy_secret=LEGACY,
        legacy_signature=legacy(LEGACY, BODY), omit=("timestamp",), reason="missing_signature_headers"),
    vec("standard signature preferred when both schemes are sent", "valid", legacy_secret=LEGACY,
        signature=sig(), legacy_signature="00" * 32),
]

names = [v["name"] for v in V]
assert len(names) == len(set(names))
json.dump(V, sys.stdout, indent=2, ensure_ascii=False)
sys.stdout.write("\n")
