//! ETSI GS QKD 014 V1.1.1 key delivery: Get status, Get key (`enc_keys`) and Get key
//! with key IDs (`dec_keys`), GET and POST, with the spec's JSON field names, status
//! codes (200, 400, 401 without body, 503: no other) and error objects. Where the
//! standard is silent we choose, as the common KME implementations do: 503 for too
//! little key material (never a partial delivery), 400 for an unknown slave SAE, and
//! 400 for a path or method outside the API.
//!
//! The caller's SAE ID is what a TLS client certificate would establish; the functions
//! take it as a parameter.
#![allow(non_snake_case)]

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::Delivered;
use crate::http::{Response, percent_decode, query_pairs};
use crate::network::{DrawError, FetchError, QkdNetwork};
use crate::pool::uuid_text;

/// Limits this KME announces in its Status.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    pub max_key_per_request: u64,
    pub max_key_size: u64,
    pub min_key_size: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_key_per_request: 128,
            max_key_size: 1024,
            min_key_size: 64,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Status {
    pub source_KME_ID: String,
    pub target_KME_ID: String,
    pub master_SAE_ID: String,
    pub slave_SAE_ID: String,
    pub key_size: u64,
    pub stored_key_count: u64,
    pub max_key_count: u64,
    pub max_key_per_request: u64,
    pub max_key_size: u64,
    pub min_key_size: u64,
    pub max_SAE_ID_count: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status_extension: Option<Value>,
}

/// Body of a POST to `enc_keys`; every field is optional.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyRequest {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub number: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub additional_slave_SAE_IDs: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub extension_mandatory: Option<Vec<Value>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub extension_optional: Option<Vec<Value>>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Key {
    pub key_ID: String,
    /// Standard Base64 (RFC 4648).
    pub key: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_ID_extension: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_extension: Option<Value>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyContainer {
    pub keys: Vec<Key>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_container_extension: Option<Value>,
}

impl KeyContainer {
    /// The (key_ID, key bytes) pairs of a 200 response body.
    pub fn decode(body: &str) -> Option<Vec<(String, Vec<u8>)>> {
        let c: KeyContainer = serde_json::from_str(body).ok()?;
        c.keys
            .into_iter()
            .map(|k| Some((k.key_ID, B64.decode(k.key).ok()?)))
            .collect()
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyIdEntry {
    pub key_ID: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_ID_extension: Option<Value>,
}

/// Body of a POST to `dec_keys`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyIds {
    pub key_IDs: Vec<KeyIdEntry>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_IDs_extension: Option<Value>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Error {
    pub message: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub details: Option<Vec<Value>>,
}

/// A 200 answer carrying `keys` (enc_keys and dec_keys answer alike).
fn keys_response(keys: Vec<Delivered>) -> Response {
    let keys = keys
        .into_iter()
        .map(|k| Key {
            key_ID: uuid_text(k.id),
            key: B64.encode(&k.key),
            key_ID_extension: None,
            key_extension: None,
        })
        .collect();
    Response::json(
        200,
        &KeyContainer {
            keys,
            key_container_extension: None,
        },
    )
}

fn error(status: u16, message: &str, details: Option<Vec<Value>>) -> Response {
    Response::json(
        status,
        &Error {
            message: message.to_string(),
            details,
        },
    )
}

pub const NOT_FOUND: &str = "one or more keys specified are not found on KME";
pub const INSUFFICIENT: &str = "insufficient amount of key material";

/// Parses a UUID's text form into its 16 bytes.
pub fn parse_uuid(s: &str) -> Option<[u8; 16]> {
    let hex: String = s.chars().filter(|&c| c != '-').collect();
    if s.len() != 36 || hex.len() != 32 || [8, 13, 18, 23].iter().any(|&i| s.as_bytes()[i] != b'-')
    {
        return None;
    }
    crate::http::unhex(&hex)?.try_into().ok()
}

/// Checks the caller and the peer: the caller must be one of `kme`'s SAEs (else 401),
/// the peer must be known (else 400).
fn endpoints(net: &QkdNetwork, kme: usize, caller: &str, peer: &str) -> Result<usize, Response> {
    if !net.kmes[kme].saes.iter().any(|s| s == caller) {
        return Err(Response::empty(401));
    }
    if !net.kmes[kme].up {
        return Err(error(503, "key data access error", None));
    }
    net.kme_of_sae(peer).ok_or_else(|| {
        error(
            400,
            "unknown SAE ID",
            Some(vec![serde_json::json!({"sae_id": peer})]),
        )
    })
}

/// The `dec_keys` body asking for the key with ID `id`. The ID came from a peer (its
/// PPK_ID), so it is quoted as JSON, never pasted in.
pub fn dec_keys_body(id: &str) -> String {
    serde_json::json!({ "key_IDs": [{ "key_ID": id }] }).to_string()
}

/// Get status: `GET /api/v1/keys/{slave_SAE_ID}/status`.
pub fn status(
    net: &mut QkdNetwork,
    now_ns: u64,
    kme: usize,
    limits: Limits,
    caller: &str,
    slave: &str,
) -> Response {
    let target = match endpoints(net, kme, caller, slave) {
        Ok(t) => t,
        Err(r) => return r,
    };
    let route = net.route(kme, target).unwrap_or_default();
    let key_size = net.key_size(kme, target);
    let max_key_count = route
        .iter()
        .map(|&(l, e)| net.links[l].halves[e].capacity_bits() / key_size)
        .min()
        .unwrap_or(0);
    Response::json(
        200,
        &Status {
            source_KME_ID: net.kmes[kme].id.clone(),
            target_KME_ID: net.kmes[target].id.clone(),
            master_SAE_ID: caller.to_string(),
            slave_SAE_ID: slave.to_string(),
            key_size,
            stored_key_count: net.available_keys(now_ns, kme, target, key_size),
            max_key_count,
            max_key_per_request: limits.max_key_per_request,
            max_key_size: limits.max_key_size,
            min_key_size: limits.min_key_size,
            max_SAE_ID_count: 0,
            status_extension: None,
        },
    )
}

/// Get key: `POST /api/v1/keys/{slave_SAE_ID}/enc_keys` (or GET with `number`/`size`).
pub fn enc_keys(
    net: &mut QkdNetwork,
    now_ns: u64,
    kme: usize,
    limits: Limits,
    caller: &str,
    slave: &str,
    req: &KeyRequest,
) -> Response {
    let target = match endpoints(net, kme, caller, slave) {
        Ok(t) => t,
        Err(r) => return r,
    };
    if let Some(ext) = req.extension_mandatory.as_ref().filter(|e| !e.is_empty()) {
        return error(
            400,
            "not all extension_mandatory parameters are supported",
            Some(vec![
                serde_json::json!({"extension_mandatory_unsupported": ext}),
            ]),
        );
    }
    if req
        .additional_slave_SAE_IDs
        .as_ref()
        .is_some_and(|v| !v.is_empty())
    {
        return error(
            400,
            "additional_slave_SAE_IDs exceeds max_SAE_ID_count (0)",
            None,
        );
    }
    let key_size = net.key_size(kme, target);
    let number = req.number.unwrap_or(1);
    let size = req.size.unwrap_or(key_size);
    if !size.is_multiple_of(8) {
        return error(400, "size shall be a multiple of 8", None);
    }
    if number == 0 || number > limits.max_key_per_request {
        let details = vec![serde_json::json!({"number_unsupported": number})];
        return error(
            400,
            "requested parameters do not adhere to KMS rules",
            Some(details),
        );
    }
    if size < limits.min_key_size || size > limits.max_key_size {
        let details = vec![serde_json::json!({"size_unsupported": size})];
        return error(
            400,
            "requested parameters do not adhere to KMS rules",
            Some(details),
        );
    }
    match net.draw(now_ns, kme, target, caller, Some(slave), number, size) {
        Ok(keys) => keys_response(keys),
        Err(DrawError::Insufficient) => error(503, INSUFFICIENT, None),
        Err(DrawError::KmeDown) => error(503, "key data access error", None),
        Err(DrawError::NoRoute) => error(400, "slave SAE is not reachable from this KME", None),
        Err(DrawError::UnknownPeer(p)) => error(400, &format!("unknown SAE ID {p}"), None),
    }
}

/// Get key with key IDs: `POST /api/v1/keys/{master_SAE_ID}/dec_keys` (or GET with one
/// `key_ID`). The caller must be the slave SAE the keys were made for (else 401).
pub fn dec_keys(
    net: &mut QkdNetwork,
    now_ns: u64,
    kme: usize,
    caller: &str,
    master: &str,
    ids: &KeyIds,
) -> Response {
    if let Err(r) = endpoints(net, kme, caller, master) {
        return r;
    }
    let Some(parsed) = ids
        .key_IDs
        .iter()
        .map(|k| parse_uuid(&k.key_ID))
        .collect::<Option<Vec<_>>>()
    else {
        return error(400, NOT_FOUND, None);
    };
    if parsed.is_empty() {
        return error(400, "key_IDs is empty", None);
    }
    // Keys drawn by another master are not found for this one.
    if parsed.iter().any(|id| {
        net.pending_origin(kme, id)
            .is_some_and(|(m, _)| m != master)
    }) {
        return error(400, NOT_FOUND, None);
    }
    match net.fetch(now_ns, kme, caller, &parsed) {
        Ok(keys) => keys_response(keys),
        Err(FetchError::NotFound) => error(400, NOT_FOUND, None),
        Err(FetchError::Unauthorized) => Response::empty(401),
        Err(FetchError::KmeDown) => error(503, "key data access error", None),
    }
}

/// One HTTP request to KME `kme` from `caller`: routes, parses and answers. Malformed
/// requests get 400 with an Error object and change no state.
#[allow(clippy::too_many_arguments)]
pub fn handle(
    net: &mut QkdNetwork,
    now_ns: u64,
    kme: usize,
    limits: Limits,
    caller: &str,
    method: &str,
    path: &str,
    query: &str,
    body: &[u8],
) -> Response {
    let bad = |m: &str| error(400, m, None);
    const NO_PATH: &str = "not a path of the key delivery API";
    let Some(rest) = path.strip_prefix("/api/v1/keys/") else {
        return bad(NO_PATH);
    };
    let Some((sae, op)) = rest.split_once('/') else {
        return bad(NO_PATH);
    };
    let Some(sae) = percent_decode(sae) else {
        return bad("bad request format");
    };
    let Some(query) = query_pairs(query) else {
        return bad("bad request format");
    };
    match (op, method) {
        ("status", "GET") if query.is_empty() => status(net, now_ns, kme, limits, caller, &sae),
        ("enc_keys", "GET") => {
            let mut req = KeyRequest::default();
            for (k, v) in query {
                let Ok(n) = v.parse::<u64>() else {
                    return bad("bad request format");
                };
                match k.as_str() {
                    "number" => req.number = Some(n),
                    "size" => req.size = Some(n),
                    _ => return bad("only number and size may be given as query parameters"),
                }
            }
            enc_keys(net, now_ns, kme, limits, caller, &sae, &req)
        }
        ("enc_keys", "POST") => match serde_json::from_slice::<KeyRequest>(body) {
            Ok(req) if query.is_empty() => enc_keys(net, now_ns, kme, limits, caller, &sae, &req),
            _ => bad("bad request format"),
        },
        ("dec_keys", "GET") => match query.as_slice() {
            [(k, v)] if k == "key_ID" => {
                let ids = KeyIds {
                    key_IDs: vec![KeyIdEntry {
                        key_ID: v.clone(),
                        key_ID_extension: None,
                    }],
                    key_IDs_extension: None,
                };
                dec_keys(net, now_ns, kme, caller, &sae, &ids)
            }
            _ => bad("GET dec_keys takes exactly one key_ID"),
        },
        ("dec_keys", "POST") => match serde_json::from_slice::<KeyIds>(body) {
            Ok(ids) if query.is_empty() => dec_keys(net, now_ns, kme, caller, &sae, &ids),
            _ => bad("bad request format"),
        },
        ("status" | "enc_keys" | "dec_keys", _) => {
            bad(&format!("{method} is not a method of {op}"))
        }
        _ => bad(NO_PATH),
    }
}
