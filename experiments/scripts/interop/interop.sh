#!/usr/bin/env bash
# qsafe's IKEv2 endpoint (`qsafe live`) against strongSwan's charon.
#
# strongSwan 5.9 comes from Debian 12's packages (installed by .ci/run); strongSwan 6.x
# from Debian sid, installed with debootstrap into a tree of this suite's own
# (QSAFE_SID_ROOT, default /var/tmp/qsafe-sid). Each charon runs in a network namespace
# of its own with a private /run, joined to qsafe by a veth pair; nothing leaves the
# machine. Pass criteria come from charon's own log. Everything is torn down on exit:
# processes stopped by their recorded pid, namespace and veth deleted.
#
# Usage: interop.sh [QSAFE_BINARY]      (needs root for namespaces)
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../../.." && pwd)
QSAFE=${1:-$ROOT/target/release/qsafe}
SID=${QSAFE_SID_ROOT:-/var/tmp/qsafe-sid}
WORK=$(mktemp -d /tmp/qsafe-interop.XXXXXX)
NS=qsafe-interop
VETH=qsi-veth
QS_IP=10.99.0.1
SS_IP=10.99.0.2
PSK=interop-psk-0123456789
PPK_ID=2f1c5a4e-9b7d-4c1e-8f00-qkd000000001
PPK_KEY=5a6b7c8d9e0f112233445566778899aabbccddeeff00112233445566778899aa
CHARON_PID=
QSAFE_PID=
KME_PID=
SUMMARY=()
FAILED=0

log() { printf '%s\n' "$*" >&2; }

cleanup() {
  set +e
  [ -n "$QSAFE_PID" ] && kill "$QSAFE_PID" 2>/dev/null && wait "$QSAFE_PID" 2>/dev/null
  [ -n "$KME_PID" ] && kill "$KME_PID" 2>/dev/null && wait "$KME_PID" 2>/dev/null
  stop_charon
  ip netns del "$NS" 2>/dev/null
  ip link del "${VETH}0" 2>/dev/null
  log "interop: logs kept in $WORK"
}
trap cleanup EXIT

setup_net() {
  ip netns del "$NS" 2>/dev/null || true
  ip link del "${VETH}0" 2>/dev/null || true
  ip netns add "$NS"
  ip link add "${VETH}0" type veth peer name "${VETH}1"
  ip link set "${VETH}1" netns "$NS"
  ip addr add "$QS_IP/24" dev "${VETH}0"
  ip link set "${VETH}0" up
  ip netns exec "$NS" ip addr add "$SS_IP/24" dev "${VETH}1"
  ip netns exec "$NS" ip link set "${VETH}1" up
  ip netns exec "$NS" ip link set lo up
  # The responder needs an address from its traffic selector.
  ip netns exec "$NS" ip addr add 10.98.1.1/32 dev lo
}

# start_charon DIR ROOTFS FRAGMENT_SIZE: charon in the namespace with a private /run;
# ROOTFS empty for the host's charon, else a chroot tree.
start_charon() {
  local dir=$1 rootfs=$2 frag=$3
  # strongSwan 6 has no gcm plugin (openssl does AES-GCM and ML-KEM there).
  local plugins="random nonce aes sha1 sha2 hmac curve25519 kdf openssl x509 pem pkcs1 pubkey kernel-libipsec kernel-netlink socket-default vici updown"
  [ -z "$rootfs" ] && plugins="$plugins gcm"
  sed -e "s|@WORK@|$dir|g" -e "s|@FRAGMENT_SIZE@|$frag|g" -e "s|@PLUGINS@|$plugins|" "$HERE/strongswan.conf.in" > "$dir/strongswan.conf"
  if [ -z "$rootfs" ]; then
    STRONGSWAN_CONF="$dir/strongswan.conf" ip netns exec "$NS" \
      unshare --mount --propagation private sh -c 'mount -t tmpfs tmpfs /run && exec /usr/lib/ipsec/charon' \
      > "$dir/charon.out" 2>&1 &
  else
    mkdir -p "$rootfs$dir"
    STRONGSWAN_CONF="$dir/strongswan.conf" ip netns exec "$NS" \
      unshare --mount --propagation private sh -c "
        mount --bind /dev '$rootfs/dev' && mount -t proc proc '$rootfs/proc' &&
        mount --bind '$dir' '$rootfs$dir' && mount -t tmpfs tmpfs '$rootfs/run' &&
        exec chroot '$rootfs' /usr/lib/ipsec/charon" > "$dir/charon.out" 2>&1 &
  fi
  CHARON_PID=$!
  echo "$CHARON_PID" > "$dir/charon.pid"
  CHARON_ROOT=$rootfs
  for _ in $(seq 50); do
    [ -S "$dir/charon.vici" ] && return 0
    kill -0 "$CHARON_PID" 2>/dev/null || break
    sleep 0.1
  done
  log "charon did not start:"; cat "$dir/charon.out" >&2; return 1
}

stop_charon() {
  if [ -n "$CHARON_PID" ]; then
    kill "$CHARON_PID" 2>/dev/null || true
    wait "$CHARON_PID" 2>/dev/null || true
    CHARON_PID=
  fi
}

# sw DIR ARGS...: swanctl against the running charon (its own binary for a chroot).
sw() {
  local dir=$1; shift
  local root=()
  [ -n "$CHARON_ROOT" ] && root=(--root)
  nsenter --target "$CHARON_PID" --mount --net "${root[@]}" swanctl "$@" --uri "unix://$dir/charon.vici"
}

fill() { # fill TEMPLATE OUT KEY=VALUE...
  local tpl=$1 out=$2; shift 2
  local args=()
  for kv in "$@"; do args+=(-e "s|@${kv%%=*}@|${kv#*=}|g"); done
  sed "${args[@]}" "$tpl" > "$out"
}

# run_case NAME ROOTFS ROLE PROPOSAL PPK(yes|no) FRAGMENT_SIZE FRAGMENTS(both|any|none) EXPECT_PROPOSAL_RE
#          [REKEY(none|qsafe|charon|qsafe-ike|charon-ike) ESP_PROPOSAL]
# REKEY: who rekeys the Child SA (or with -ike the IKE SA) with CREATE_CHILD_SA once it
# is up; qsafe holds on meanwhile, and the rekeying side runs dead peer detection, which
# after an IKE SA rekey also proves the new SA works. ESP_PROPOSAL with a KE method makes
# a Child SA rekey use PFS.
run_case() {
  local name=$1 rootfs=$2 role=$3 proposal=$4 ppk=$5 frag=$6 frags=$7 expect=$8
  local rekey=${9:-none} esp=${10:-aes256gcm16}
  local dir="$WORK/$name"
  mkdir -p "$dir"
  log "== $name"
  local ppk_conf="" ppk_policy=disabled
  if [ "$ppk" = yes ]; then ppk_conf="ppk_id = $PPK_ID
    ppk_required = yes"; ppk_policy=required; fi
  local initiate=false; [ "$role" = initiator ] && initiate=true
  local hold=0s rekey_line="" qs_dpd="" ss_dpd=""
  # Whoever rekeys also runs dead peer detection (one side at a time: each side's
  # liveness checks would keep the other's quiet).
  [ "$rekey" != none ] && hold=4s
  case $rekey in
    qsafe) rekey_line='rekey_child_after = "1s"' qs_dpd='dpd_delay = "1500ms"' ;;
    qsafe-ike) rekey_line='rekey_ike_after = "1s"' qs_dpd='dpd_delay = "1500ms"' ;;
    qsafe-new) rekey_line='create_child_after = "1s"' qs_dpd='dpd_delay = "1500ms"' ;;
    charon|charon-ike|charon-new) ss_dpd="dpd_delay = 1s" ;;
  esac
  fill "$HERE/swanctl.conf.in" "$dir/swanctl.conf" SS_IP="$SS_IP" QS_IP="$QS_IP" PROPOSAL="$proposal" \
    PSK="$PSK" PPK_ID="$PPK_ID" PPK_KEY="$PPK_KEY" PPK="${ppk_conf//$'\n'/\\n}" ESP="$esp" DPD="$ss_dpd"
  fill "$HERE/live.toml.in" "$dir/live.toml" SS_IP="$SS_IP" QS_IP="$QS_IP" PROPOSAL="$proposal" PSK="$PSK" \
    PPK_ID="$PPK_ID" PPK_KEY="$PPK_KEY" PPK_POLICY="$ppk_policy" FRAGMENT_SIZE="$frag" INITIATE="$initiate" \
    HOLD="$hold" REKEY="$rekey_line" ESP="$esp" DPD="$qs_dpd"
  # A key manager instead of static PPKs (run_kme_case): the peer table is the last.
  if [ -n "${KME_SOURCE:-}" ]; then
    sed -i -e '/^ppks = /d' -e '/^ppk_id = /d' "$dir/live.toml"
    echo "$KME_SOURCE" >> "$dir/live.toml"
  fi

  local ok=1 why=()
  start_charon "$dir" "$rootfs" "$frag" || { SUMMARY+=("FAIL  $name: charon did not start"); FAILED=1; return; }
  if [ -n "${KME_SOURCE:-}" ]; then
    # The PPK the script fetched from KME A goes in as a credential of its own.
    sw "$dir" --load-conns --file "$dir/swanctl.conf" > "$dir/swanctl-load.out" 2>&1 || { ok=0; why+=("swanctl --load-conns failed"); }
    sw "$dir" --load-creds --file "$dir/swanctl.conf" >> "$dir/swanctl-load.out" 2>&1 || { ok=0; why+=("swanctl --load-creds failed"); }
  else
    sw "$dir" --load-all --file "$dir/swanctl.conf" > "$dir/swanctl-load.out" 2>&1 || { ok=0; why+=("swanctl --load-all failed"); }
  fi
  if [ "$role" = initiator ]; then
    "$QSAFE" live "$dir/live.toml" --keylog "$dir/keylog.txt" > "$dir/qsafe.out" 2>&1 || { ok=0; why+=("qsafe live failed"); }
  else
    "$QSAFE" live "$dir/live.toml" --keylog "$dir/keylog.txt" > "$dir/qsafe.out" 2>&1 &
    QSAFE_PID=$!
    sleep 0.3
    sw "$dir" --initiate --child net --ike qsafe --timeout 15 > "$dir/swanctl-initiate.out" 2>&1 || { ok=0; why+=("swanctl --initiate failed"); }
    case $rekey in
      charon) sw "$dir" --rekey --child net > "$dir/swanctl-rekey.out" 2>&1 || { ok=0; why+=("swanctl --rekey failed"); } ;;
      charon-ike) sw "$dir" --rekey --ike qsafe > "$dir/swanctl-rekey.out" 2>&1 || { ok=0; why+=("swanctl --rekey failed"); } ;;
      # A second child config on the same IKE SA: CREATE_CHILD_SA without REKEY_SA.
      charon-new) sw "$dir" --initiate --child web --timeout 15 > "$dir/swanctl-new.out" 2>&1 || { ok=0; why+=("swanctl --initiate --child web failed"); } ;;
    esac
    wait "$QSAFE_PID" || { ok=0; why+=("qsafe live failed"); }
    QSAFE_PID=
  fi
  stop_charon
  local clog="$dir/charon.log"
  grep -q "IKE_SA qsafe\[[0-9]*\] established" "$clog" || { ok=0; why+=("charon: no IKE SA established"); }
  grep -Eq "selected proposal: IKE:$expect\$" "$clog" || { ok=0; why+=("charon: proposal $expect not selected"); }
  grep -q "CHILD_SA net{[0-9]*} established" "$clog" || { ok=0; why+=("charon: no CHILD_SA established"); }
  if [ "$ppk" = yes ]; then
    grep -q "using PPK for PPK_ID '$PPK_ID'" "$clog" || { ok=0; why+=("charon: PPK not used"); }
  fi
  if [ -n "${KME_SOURCE:-}" ]; then
    grep -q "PPK $PPK_ID from the key manager" "$dir/qsafe.out" || { ok=0; why+=("qsafe: PPK not fetched from its KME"); }
    grep -q "kme-b sae=gw-b POST /api/v1/keys/gw-a/dec_keys -> 200 keys=1 ids=$PPK_ID" "$KME_LOG" \
      || { ok=0; why+=("KME B: no dec_keys of $PPK_ID"); }
  fi
  case $rekey in
    qsafe|charon)
      # The new pair is a second "established", the old one closed by a Delete.
      [ "$(grep -c "CHILD_SA net{[0-9]*} established" "$clog")" -ge 2 ] || { ok=0; why+=("charon: no second CHILD_SA"); }
      grep -q "closing CHILD_SA net{" "$clog" || { ok=0; why+=("charon: old CHILD_SA not closed"); }
      grep -q "Child SA [0-9a-f]* rekeyed" "$dir/qsafe.out" || { ok=0; why+=("qsafe: no Child SA rekeyed"); } ;;
    qsafe-ike|charon-ike)
      grep -Eq "IKE_SA qsafe\[[0-9]+\] rekeyed between" "$clog" || { ok=0; why+=("charon: no IKE_SA rekeyed"); }
      grep -q "rekeyed: now" "$dir/qsafe.out" || { ok=0; why+=("qsafe: no IKE SA rekeyed"); } ;;
    qsafe-new|charon-new)
      # A second pair on the same IKE SA, nothing closed.
      [ "$(grep -Ec "CHILD_SA (net|web)\{[0-9]*\} established" "$clog")" -ge 2 ] || { ok=0; why+=("charon: no second CHILD_SA"); }
      [ "$(grep -c "Child SA ready" "$dir/qsafe.out")" -ge 2 ] || { ok=0; why+=("qsafe: no second Child SA"); }
      [ "$(grep -c "IKE_SA qsafe\[[0-9]*\] established" "$clog")" = 1 ] || { ok=0; why+=("charon: more than one IKE SA"); } ;;
  esac
  # A rekey with additional key exchanges must have run them in IKE_FOLLOWUP_KE.
  local followup=no
  case $rekey in
    *-ike) [[ $proposal == *ke1_* ]] && followup=yes ;;
    qsafe|charon) [[ $esp == *ke1_* ]] && followup=yes ;;
  esac
  if [ "$followup" = yes ]; then
    grep -Eq "(parsed|generating) IKE_FOLLOWUP_KE response [0-9]+ \[ KE \]" "$clog" || { ok=0; why+=("charon: no IKE_FOLLOWUP_KE"); }
  fi
  if [ "$rekey" != none ]; then
    # Dead peer detection: the rekeying side's empty INFORMATIONAL, answered.
    if [ "${rekey%-*}" = qsafe ]; then
      grep -Eq "parsed INFORMATIONAL request [0-9]+ \[ \]" "$clog" || { ok=0; why+=("charon: no liveness check from qsafe"); }
    else
      grep -Eq "parsed INFORMATIONAL response [0-9]+ \[ \]" "$clog" || { ok=0; why+=("charon: its liveness check unanswered"); }
    fi
  fi
  # Fragments: "both" = each side sent and reassembled some, "any" = at least one way.
  local got=0 sent=0
  grep -q "received fragment #" "$clog" && got=1
  grep -q "splitting IKE message" "$clog" && sent=1
  case $frags in
    both) [ "$got$sent" = 11 ] || { ok=0; why+=("fragments not seen both ways (charon received $got, sent $sent)"); } ;;
    any) [ "$got$sent" != 00 ] || { ok=0; why+=("no IKE fragments either way"); } ;;
  esac
  if [ "$ok" = 1 ]; then
    SUMMARY+=("PASS  $name")
  else
    SUMMARY+=("FAIL  $name: ${why[*]}")
    FAILED=1
    log "--- qsafe output"; cat "$dir/qsafe.out" >&2 || true
    log "--- charon log (tail)"; tail -25 "$clog" >&2 || true
  fi
}

# run_kme_case: charon initiates with a PPK this script fetched for it from KME A
# (ETSI GS QKD 014 enc_keys over mutual TLS, `qsafe kme` serving
# experiments/scenarios/live-kme.toml) and loaded as a swanctl secret; qsafe as
# responder fetches the same key by ID from KME B over HTTPS (its `ppk_source`).
run_kme_case() {
  local name=5.9-responder-ppk-from-kme dir="$WORK/kme"
  local scenario="$ROOT/experiments/scenarios/live-kme.toml" certs="$WORK/kme/certs"
  mkdir -p "$dir"
  "$QSAFE" kme "$scenario" --make-certs "$certs" > "$dir/make-certs.out" 2>&1
  KME_LOG="$dir/kme.log"
  "$QSAFE" kme "$scenario" --certs "$certs" --listen kme-a=127.0.0.1:18443 \
    --listen kme-b=127.0.0.1:18444 --serve-for 120s > "$KME_LOG" 2>&1 &
  KME_PID=$!
  for _ in $(seq 50); do grep -q "live mode" "$KME_LOG" && break; sleep 0.1; done
  local key
  key=$(curl -s --cacert "$certs/ca.pem" --cert "$certs/sae-gw-a.pem" --key "$certs/sae-gw-a.key" \
    -H 'Content-Type: application/json' --data '{"number":1,"size":256}' \
    https://127.0.0.1:18443/api/v1/keys/gw-b/enc_keys) || true
  local id hex
  id=$(python3 -c 'import json,sys; print(json.loads(sys.argv[1])["keys"][0]["key_ID"])' "$key" 2>/dev/null) || true
  hex=$(python3 -c 'import base64,json,sys; print(base64.b64decode(json.loads(sys.argv[1])["keys"][0]["key"]).hex())' "$key" 2>/dev/null) || true
  if [ -z "$id" ] || [ -z "$hex" ]; then
    SUMMARY+=("FAIL  $name: no key from KME A: $key"); FAILED=1
  else
    PPK_ID=$id PPK_KEY=$hex KME_SOURCE="ppk_source = { etsi014 = \"https://127.0.0.1:18444\", sae_id = \"gw-b\", peer_sae_id = \"gw-a\", ca = \"$certs/ca.pem\", cert = \"$certs/sae-gw-b.pem\", key = \"$certs/sae-gw-b.key\" }" \
      run_case "$name" "" responder "$CLASSIC" yes 1280 none "$CLASSIC_RE"
  fi
  kill "$KME_PID" 2>/dev/null; wait "$KME_PID" 2>/dev/null || true
  KME_PID=
}

[ "$(id -u)" = 0 ] || { log "interop.sh needs root (network namespaces)"; exit 1; }
[ -x "$QSAFE" ] || { log "no qsafe binary at $QSAFE (cargo build --release)"; exit 1; }
command -v swanctl > /dev/null && [ -x /usr/lib/ipsec/charon ] || { log "strongSwan 5.9 is not installed"; exit 1; }
setup_net

V59=$(/usr/sbin/swanctl --version 2>/dev/null | head -1 || true)
log "strongSwan (host): ${V59:-unknown}"
CLASSIC=aes256gcm16-prfsha256-x25519
CLASSIC_RE="AES_GCM_16_256/PRF_HMAC_SHA2_256/CURVE_25519"
for role in initiator responder; do
  run_case "5.9-$role-x25519" "" "$role" "$CLASSIC" no 1280 none "$CLASSIC_RE"
  run_case "5.9-$role-frag" "" "$role" "$CLASSIC" no 200 both "$CLASSIC_RE"
  run_case "5.9-$role-ppk" "" "$role" "$CLASSIC" yes 1280 none "$CLASSIC_RE"
done
# Child SA rekeys with PFS, started by either side.
run_case "5.9-qsafe-rekeys-child-pfs" "" initiator "$CLASSIC" no 1280 none "$CLASSIC_RE" qsafe aes256gcm16-x25519
run_case "5.9-charon-rekeys-child-pfs" "" responder "$CLASSIC" no 1280 none "$CLASSIC_RE" charon aes256gcm16-x25519
# IKE SA rekeys (classical; the hybrid ones with IKE_FOLLOWUP_KE are 6.x cases below).
run_case "5.9-qsafe-rekeys-ike" "" initiator "$CLASSIC" yes 1280 none "$CLASSIC_RE" qsafe-ike
run_case "5.9-charon-rekeys-ike" "" responder "$CLASSIC" no 1280 none "$CLASSIC_RE" charon-ike
run_case "5.9-qsafe-creates-child-pfs" "" initiator "$CLASSIC" no 1280 none "$CLASSIC_RE" qsafe-new aes256gcm16-x25519
run_case "5.9-charon-creates-child" "" responder "$CLASSIC" no 1280 none "$CLASSIC_RE" charon-new
run_kme_case

# strongSwan 6.x from Debian sid, for ML-KEM in IKE_INTERMEDIATE.
HYBRID=aes256gcm16-prfsha256-x25519-ke1_mlkem768
HYBRID_RE="AES_GCM_16_256/PRF_HMAC_SHA2_256/CURVE_25519/KE1_ML_KEM_768"
if [ ! -x "$SID/usr/lib/ipsec/charon" ]; then
  log "installing strongSwan from Debian sid into $SID (debootstrap)"
  rm -rf "$SID"; mkdir -p "$SID"
  debootstrap --variant=minbase \
    --include=strongswan-charon,strongswan-swanctl,libcharon-extra-plugins,libstrongswan-extra-plugins \
    sid "$SID" > "$WORK/debootstrap.log" 2>&1 \
    || { log "debootstrap failed (see $WORK/debootstrap.log)"; rm -rf "$SID"; }
fi
if [ -x "$SID/usr/lib/ipsec/charon" ]; then
  dir="$WORK/sid-probe"; mkdir -p "$dir"
  if start_charon "$dir" "$SID" 1280; then
    VSID=$(sw "$dir" --version 2>/dev/null | head -1 || true)
    ALGS=$(sw "$dir" --list-algs 2>/dev/null || true)
    stop_charon
    log "strongSwan (sid): ${VSID:-unknown}"
    if grep -q ML_KEM_768 <<< "$ALGS"; then
      for role in initiator responder; do
        # 1249 + 4 bytes of non-ESP marker exceed 1248: the IKE_INTERMEDIATE request
        # goes out as two fragments at the default size.
        run_case "sid-$role-mlkem768-frag-ppk" "$SID" "$role" "$HYBRID" yes 1280 any "$HYBRID_RE"
      done
      # Child SA rekeys with ML-KEM-768 as the PFS key exchange of CREATE_CHILD_SA.
      run_case "sid-qsafe-rekeys-child-mlkem768" "$SID" initiator "$HYBRID" no 1280 any "$HYBRID_RE" qsafe aes256gcm16-mlkem768
      run_case "sid-charon-rekeys-child-mlkem768" "$SID" responder "$HYBRID" no 1280 any "$HYBRID_RE" charon aes256gcm16-mlkem768
      # Hybrid rekeys: X25519 in CREATE_CHILD_SA, ML-KEM-768 in IKE_FOLLOWUP_KE (RFC 9370).
      run_case "sid-qsafe-rekeys-ike-followup" "$SID" initiator "$HYBRID" yes 1280 any "$HYBRID_RE" qsafe-ike
      run_case "sid-charon-rekeys-ike-followup" "$SID" responder "$HYBRID" no 1280 any "$HYBRID_RE" charon-ike
      run_case "sid-qsafe-rekeys-child-followup" "$SID" initiator "$HYBRID" no 1280 any "$HYBRID_RE" qsafe aes256gcm16-x25519-ke1_mlkem768
      run_case "sid-charon-rekeys-child-followup" "$SID" responder "$HYBRID" no 1280 any "$HYBRID_RE" charon aes256gcm16-x25519-ke1_mlkem768
    else
      SUMMARY+=("UNAVAILABLE  sid ML-KEM cases: Debian sid's charon lists no ML_KEM_768 (swanctl --list-algs); NOT tested")
    fi
  else
    SUMMARY+=("UNAVAILABLE  sid ML-KEM cases: sid's charon did not start; NOT tested")
  fi
else
  SUMMARY+=("UNAVAILABLE  sid ML-KEM cases: strongSwan from Debian sid could not be installed; NOT tested")
fi

log ""
log "interop summary:"
for line in "${SUMMARY[@]}"; do log "  $line"; done
exit "$FAILED"
