"""Clients that were not written here against `qsafe kme`: the PyPI packages
etsi-qkd-014-client (ETSI GS QKD 014) and skip-qkd (SKIP), both over mutual TLS, and
curl for the error paths. Run by experiments/tests/kme_clients.rs against the key
managers of experiments/scenarios/live-kme.toml:

    python clients.py CERT_DIR KME_A KME_B KP_C KP_D   (each HOST:PORT)

Prints one line per check and exits non-zero on the first failure."""

import json
import subprocess
import sys

from etsi_qkd_014_client import QKD014Client
from skip_qkd.skip_qkd import MTLSConfig, SkipQKDClient

certs, kme_a, kme_b, kp_c, kp_d = sys.argv[1:6]


def check(what, ok, detail=""):
    print(("ok   " if ok else "FAIL ") + what + (f": {detail}" if detail and not ok else ""))
    if not ok:
        sys.exit(1)


def sae(name):
    return f"{certs}/sae-{name}.pem", f"{certs}/sae-{name}.key"


def etsi(host, name):
    cert, key = sae(name)
    return QKD014Client(host, cert, key, f"{certs}/ca.pem")


def skip(host, name):
    cert, key = sae(name)
    # A fresh client per request: the client closes its socket after one answer.
    return SkipQKDClient(host, host.split(":")[0], mtls_config=MTLSConfig(f"{certs}/ca.pem", cert, key))


def curl(host, path, name=None, body=None):
    """(status, body) of one request with curl; `name` picks the client certificate."""
    cmd = ["curl", "-s", "-o", "-", "-w", "\n%{http_code}", "--cacert", f"{certs}/ca.pem"]
    if name:
        cert, key = sae(name)
        cmd += ["--cert", cert, "--key", key]
    if body is not None:
        cmd += ["-H", "Content-Type: application/json", "--data", json.dumps(body)]
    out = subprocess.run(cmd + [f"https://{host}{path}"], capture_output=True, text=True, check=True).stdout
    text, code = out.rsplit("\n", 1)
    return int(code), text


# --- ETSI GS QKD 014 with etsi-qkd-014-client -----------------------------------------
a, b = etsi(kme_a, "gw-a"), etsi(kme_b, "gw-b")
code, st = a.get_status("gw-b")
check("status 200", code == 200, code)
check(
    "status names both KMEs and SAEs, sizes in bits",
    (st.source_kme_id, st.target_kme_id, st.master_sae_id, st.slave_sae_id, st.key_size)
    == ("kme-a", "kme-b", "gw-a", "gw-b", 256)
    and st.stored_key_count > 0
    and st.max_sae_id_count == 0,
    vars(st),
)
code, cont = a.get_key("gw-b", number=2, size=256)
check("enc_keys: 2 keys of 256 bits", code == 200 and len(cont.keys) == 2, code)
ids = [k.key_id for k in cont.keys]
code, same = b.get_key_with_key_IDs("gw-a", ids)
check(
    "dec_keys at the other KME: the same keys",
    code == 200 and [(k.key_id, k.key) for k in same.keys] == [(k.key_id, k.key) for k in cont.keys],
    code,
)
code, one = a.get_key("gw-b")
check("GET enc_keys without parameters: one key of the default size", code == 200 and len(one.keys) == 1, code)
code, err = b.get_key_with_key_IDs("gw-a", ids[:1])
check("a key ID already used: 400", code == 400 and "not found" in err.message, code)

# --- the error paths with curl ----------------------------------------------------------
code, text = curl(kme_a, "/api/v1/keys/gw-b/status")
check("no client certificate: 401 without a body", (code, text) == (401, ""), (code, text))
code, _ = curl(kme_b, "/api/v1/keys/gw-a/status", name="gw-a")
check("an SAE the KME does not serve (wrong SAE): 401", code == 401, code)
code, _ = curl(kme_b, "/api/v1/keys/gw-a/dec_keys", name="gw-b",
               body={"key_IDs": [{"key_ID": "00000000-0000-4000-8000-000000000000"}]})
check("an unknown key ID: 400", code == 400, code)
code, _ = curl(kme_b, f"/api/v1/keys/gw-a/dec_keys?key_ID={ids[1]}", name="gw-b")
check("a key ID already used (GET dec_keys): 400", code == 400, code)
code, text = curl(kme_a, "/api/v1/keys/gw-b/enc_keys", name="gw-a", body={"number": 100000})
check("too many keys: 400", code == 400 and json.loads(text)["message"], (code, text))
code, text = curl(kme_a, "/api/v1/keys/gw-b/enc_keys", name="gw-a", body={"size": 100})
check("a size not a multiple of 8: 400", code == 400 and json.loads(text)["message"] == "size shall be a multiple of 8", (code, text))

# --- SKIP with skip-qkd ----------------------------------------------------------------
caps = skip(kp_c, "gw-c").capabilities()
check("capabilities", caps["localSystemID"] == "kp-c" and caps["remoteSystemID"] == ["kp-d"] and caps["key"], caps)
new = skip(kp_c, "gw-c").request_key("kp-d")
check("a new key: 128-bit hex ID, 256-bit hex key", len(new["keyId"]) == 32 and len(new["key"]) == 64, new)
got = skip(kp_d, "gw-d").fetch_key_by_id(new["keyId"], "kp-c")
check("the key by ID at the other key provider: the same", got == new, got)
try:
    skip(kp_d, "gw-d").fetch_key_by_id(new["keyId"], "kp-c")
    check("a key ID already used is refused", False)
except RuntimeError as e:
    check("a key ID already used is refused: 400", " 400 " in str(e), e)
ent = skip(kp_c, "gw-c").entropy(minentropy=128)
check("entropy", ent["minentropy"] == 128 and len(ent["randomStr"]) == 32, ent)
print("all clients agree")
