#!/usr/bin/env bash
# Recomputes every valid webhook test vector's signature with the openssl CLI, independently of
# both the Swift code and the Python that generated the file. python3 only parses JSON and prints fields.
set -euo pipefail
set -f # header entries and secret lists are split on spaces below; never glob them

VECTORS="$(realpath "${1:-$(dirname "$0")/../Tests/PKRCoreTests/Vectors/webhook-vectors.json}")"
WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT

# One "|"-separated line per valid vector: scheme, then base64 of name, id, timestamp, body, signature header and
# key material (whsec_ secrets space-separated, or the legacy secret), so arbitrary bytes survive the shell.
list_valid_vectors() {
    python3 - "$VECTORS" <<'PY'
import base64, json, sys
b64 = lambda s: base64.b64encode(s if isinstance(s, bytes) else s.encode()).decode()
for v in json.load(open(sys.argv[1], encoding="utf-8")):
    if v["expect"] != "valid":
        continue
    body = v["body_base64"] if "body_base64" in v else b64(v["body"])
    if v["scheme"] == "legacy_hex":
        sig, keys = v["legacy_signature"], v["legacy_secret"]
    else:
        sig, keys = v["signature"], " ".join(v["secrets"])
    print(v["scheme"], b64(v["name"]), b64(v.get("id", "")), b64(v.get("timestamp", "")), body, b64(sig), b64(keys),
          sep="|")
PY
}

unb64() { printf '%s' "$1" | base64 -d; }

hmac_sha256() { # hmac_sha256 HEXKEY FILE -> raw MAC on stdout
    openssl dgst -sha256 -mac HMAC -macopt "hexkey:$1" -binary "$2"
}

# Legacy: lowercase hex HMAC of the body, keyed with the secret's UTF-8 bytes; "sha256=" prefix allowed.
legacy_matches() { # SIGNATURE SECRET
    local sent=${1#sha256=} key_hex expected
    key_hex=$(printf '%s' "$2" | xxd -p | tr -d '\n')
    expected=$(hmac_sha256 "$key_hex" "$WORK/body" | xxd -p | tr -d '\n')
    [[ "${sent,,}" == "$expected" ]]
}

# Standard Webhooks v1: base64 HMAC of "id.timestamp.body"; any active secret may match any header entry.
standard_matches() { # ID TIMESTAMP HEADER SECRETS
    local secret key_hex expected entry
    { printf '%s.%s.' "$1" "$2"; cat "$WORK/body"; } > "$WORK/signed"
    for secret in $4; do
        key_hex=$(printf '%s' "${secret#whsec_}" | base64 -d | xxd -p | tr -d '\n')
        expected="v1,$(hmac_sha256 "$key_hex" "$WORK/signed" | base64 -w0)"
        for entry in $3; do
            [[ "$entry" == "$expected" ]] && return 0
        done
    done
    return 1
}

checked=0
failed=0
while IFS='|' read -r scheme name id timestamp body signature keys; do
    unb64 "$body" > "$WORK/body"
    checked=$((checked + 1))
    if [[ "$scheme" == legacy_hex ]]; then
        check=(legacy_matches "$(unb64 "$signature")" "$(unb64 "$keys")")
    else
        check=(standard_matches "$(unb64 "$id")" "$(unb64 "$timestamp")" "$(unb64 "$signature")" "$(unb64 "$keys")")
    fi
    if ! "${check[@]}"; then
        echo "MISMATCH: $(unb64 "$name")" >&2
        failed=$((failed + 1))
    fi
done < <(list_valid_vectors)

if ((checked == 0)); then
    echo "no valid vectors found in $VECTORS" >&2
    exit 1
fi
if ((failed > 0)); then
    echo "$failed of $checked vectors do not match openssl" >&2
    exit 1
fi
echo "$checked vectors checked with openssl"
