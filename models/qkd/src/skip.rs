//! SKIP (Secure Key Integration Protocol, draft-cisco-skip / draft-singh-skip): GET
//! `/capabilities`, `/key`, `/key/{keyId}` and `/entropy`, with hex keys and key IDs
//! (128-bit IDs, 32 hex characters) and its status codes (400, 404, 405, 503). Keys are
//! bound to the pair of key providers (KMEs), not to gateways: any encryptor at the
//! remote KP may fetch a key once.
#![allow(non_snake_case)]

use serde::{Deserialize, Serialize};

use crate::http::{Response, hex, percent_decode, query_pairs, unhex};
use crate::network::{DrawError, FetchError, QkdNetwork};

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Capabilities {
    pub entropy: bool,
    pub key: bool,
    pub algorithm: String,
    pub localSystemID: String,
    pub remoteSystemID: Vec<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SkipKey {
    pub keyId: String,
    pub key: String,
}

impl SkipKey {
    /// (keyId, key bytes) of a 200 response body.
    pub fn decode(body: &str) -> Option<(String, Vec<u8>)> {
        let k: SkipKey = serde_json::from_str(body).ok()?;
        Some((k.keyId.clone(), unhex(&k.key)?))
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entropy {
    pub randomStr: String,
    pub minentropy: u64,
}

#[derive(Serialize)]
struct Detail<'a> {
    detail: &'a str,
}

fn error(status: u16, detail: &str) -> Response {
    Response::json(status, &Detail { detail })
}

/// Sizes this KP serves, in bits.
const MIN_SIZE: u64 = 128;
const MAX_SIZE: u64 = 1024;

/// One GET (or other) request to the key provider `kme` from encryptor `caller`.
pub fn handle(
    net: &mut QkdNetwork,
    now_ns: u64,
    kme: usize,
    caller: &str,
    method: &str,
    path: &str,
    query: &str,
) -> Response {
    let known = ["/capabilities", "/key", "/entropy"].contains(&path) || path.starts_with("/key/");
    if !known {
        return error(404, "unknown path");
    }
    if method != "GET" {
        return error(405, "only GET is allowed");
    }
    if !net.kmes[kme].saes.iter().any(|s| s == caller) {
        return error(400, "unknown encryptor");
    }
    if !net.kmes[kme].up {
        return error(503, "key provider unavailable");
    }
    let Some(params) = query_pairs(query) else {
        return error(400, "malformed query");
    };
    let param = |name: &str| {
        params
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    };
    let remote = || -> Result<usize, Response> {
        let id = param("remoteSystemID").ok_or_else(|| error(400, "remoteSystemID is required"))?;
        net.kme_index(id)
            .filter(|&r| r != kme)
            .ok_or_else(|| error(400, "unknown remoteSystemID"))
    };
    match path {
        "/capabilities" => {
            let remotes = (0..net.kmes.len())
                .filter(|&r| r != kme && net.route(kme, r).is_some())
                .map(|r| net.kmes[r].id.clone());
            Response::json(
                200,
                &Capabilities {
                    entropy: true,
                    key: true,
                    algorithm: "QKD".into(),
                    localSystemID: net.kmes[kme].id.clone(),
                    remoteSystemID: remotes.collect(),
                },
            )
        }
        "/key" => {
            let to = match remote() {
                Ok(r) => r,
                Err(e) => return e,
            };
            let size = match param("size").map(str::parse::<u64>) {
                None => 256,
                Some(Ok(s)) if s.is_multiple_of(8) && (MIN_SIZE..=MAX_SIZE).contains(&s) => s,
                Some(_) => return error(400, "unsupported size"),
            };
            match net.draw(now_ns, kme, to, caller, None, 1, size) {
                Ok(mut keys) => {
                    let k = keys.remove(0);
                    Response::json(
                        200,
                        &SkipKey {
                            keyId: hex(&k.id),
                            key: hex(&k.key),
                        },
                    )
                }
                Err(DrawError::Insufficient | DrawError::KmeDown) => error(503, "no key available"),
                Err(DrawError::NoRoute | DrawError::UnknownPeer(_)) => {
                    error(400, "remoteSystemID not reachable")
                }
            }
        }
        "/entropy" => {
            let bits = match param("minentropy").map(str::parse::<u64>) {
                None => 256,
                Some(Ok(b)) if b.is_multiple_of(8) && (8..=4096).contains(&b) => b,
                Some(_) => return error(400, "unsupported minentropy"),
            };
            let bytes = net.entropy(kme, (bits / 8) as usize);
            Response::json(
                200,
                &Entropy {
                    randomStr: hex(&bytes),
                    minentropy: bits,
                },
            )
        }
        _ => {
            let from = match remote() {
                Ok(r) => r,
                Err(e) => return e,
            };
            let raw = percent_decode(&path["/key/".len()..]);
            let Some(id) = raw
                .as_deref()
                .and_then(unhex)
                .and_then(|b| <[u8; 16]>::try_from(b).ok())
            else {
                return error(400, "malformed keyId");
            };
            // The key must come from the KP the caller names.
            if net
                .pending_origin(kme, &id)
                .is_some_and(|(_, origin)| origin != from)
            {
                return error(400, "key not found");
            }
            match net.fetch(now_ns, kme, caller, &[id]) {
                Ok(mut keys) => {
                    let k = keys.remove(0);
                    Response::json(
                        200,
                        &SkipKey {
                            keyId: hex(&k.id),
                            key: hex(&k.key),
                        },
                    )
                }
                Err(FetchError::NotFound | FetchError::Unauthorized) => error(400, "key not found"),
                Err(FetchError::KmeDown) => error(503, "key provider unavailable"),
            }
        }
    }
}
