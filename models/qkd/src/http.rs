//! What the API functions return: an HTTP status and an optional JSON body, so the
//! simulator can use them directly and an HTTPS server can send them as they are.

use serde::Serialize;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Response {
    pub status: u16,
    /// JSON text, or nothing (ETSI's 401 has no body).
    pub body: Option<String>,
}

impl Response {
    pub fn json<T: Serialize>(status: u16, body: &T) -> Self {
        Response {
            status,
            body: Some(serde_json::to_string(body).expect("our types serialize")),
        }
    }

    pub fn empty(status: u16) -> Self {
        Response { status, body: None }
    }

    pub fn is_ok(&self) -> bool {
        self.status == 200
    }
}

/// Percent-encodes `s` for one URL path segment or query value (RFC 3986: every byte
/// but the unreserved characters), so that an identifier from elsewhere cannot change
/// the request's shape.
pub fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                out.push(b as char)
            }
            _ => out += &format!("%{b:02X}"),
        }
    }
    out
}

/// Percent-decodes a URL path segment or query value; `None` on bad escapes or UTF-8.
pub fn percent_decode(s: &str) -> Option<String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'%' => {
                let h = std::str::from_utf8(b.get(i + 1..i + 3)?).ok()?;
                out.push(u8::from_str_radix(h, 16).ok()?);
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            c => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8(out).ok()
}

/// `a=1&b=2` into decoded pairs, in order; `None` if anything is malformed.
pub fn query_pairs(query: &str) -> Option<Vec<(String, String)>> {
    query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=')?;
            Some((percent_decode(k)?, percent_decode(v)?))
        })
        .collect()
}

pub fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

pub fn unhex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}
