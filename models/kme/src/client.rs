//! What a live gateway fetches its PPKs with: an HTTPS client with mutual TLS (our
//! certificate names our SAE) for a KME's ETSI GS QKD 014 API or a key provider's
//! SKIP API. The initiator draws a new key and sends its ID in PPK_IDENTITY; the
//! responder asks its own KME for the key with that ID.

use std::sync::Arc;
use std::time::Duration;

use http_body_util::{BodyExt, Full};
use hyper::Request;
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;
use qkd::etsi014::KeyContainer;
use qkd::http::percent_encode;
use qkd::skip::SkipKey;
use rustls::ClientConfig;
use rustls_pki_types::ServerName;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

use crate::Error;

/// `https://HOST[:PORT][/PREFIX]`, taken apart.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Url {
    pub host: String,
    pub port: u16,
    /// Path prefix without a trailing slash ("" for none).
    pub prefix: String,
}

impl Url {
    pub fn parse(url: &str) -> Result<Url, Error> {
        let bad = || Error::Url(url.to_string());
        let rest = url.strip_prefix("https://").ok_or_else(bad)?;
        let (authority, prefix) = match rest.find('/') {
            Some(i) => (&rest[..i], rest[i..].trim_end_matches('/')),
            None => (rest, ""),
        };
        let (host, port) = match authority.rsplit_once(':') {
            // A bracketed IPv6 address: [::1]:8443.
            Some((h, p)) if !h.ends_with(':') => (h, p.parse().map_err(|_| bad())?),
            _ => (authority, 443),
        };
        let host = host.trim_start_matches('[').trim_end_matches(']');
        if host.is_empty() {
            return Err(bad());
        }
        Ok(Url {
            host: host.to_string(),
            port,
            prefix: prefix.to_string(),
        })
    }
}

/// An HTTPS client for one KME: one connection per request (a handful of requests per
/// IKE SA does not need a pool).
#[derive(Clone)]
pub struct Https {
    url: Url,
    tls: Arc<ClientConfig>,
    timeout: Duration,
}

impl Https {
    pub fn new(url: &str, tls: Arc<ClientConfig>, timeout: Duration) -> Result<Https, Error> {
        Ok(Https {
            url: Url::parse(url)?,
            tls,
            timeout,
        })
    }

    /// Sends one request and returns the status and body; `Error::Timeout` if the
    /// whole exchange takes longer than the timeout.
    pub async fn request(
        &self,
        method: &str,
        path: &str,
        body: Option<String>,
    ) -> Result<(u16, String), Error> {
        tokio::time::timeout(self.timeout, self.exchange(method, path, body))
            .await
            .map_err(|_| Error::Timeout(self.timeout))?
    }

    async fn exchange(
        &self,
        method: &str,
        path: &str,
        body: Option<String>,
    ) -> Result<(u16, String), Error> {
        let io = |e: std::io::Error| Error::Io(format!("{}:{}", self.url.host, self.url.port), e);
        let tcp = TcpStream::connect((self.url.host.as_str(), self.url.port))
            .await
            .map_err(io)?;
        let name = ServerName::try_from(self.url.host.clone())
            .map_err(|_| Error::Url(self.url.host.clone()))?;
        let tls = TlsConnector::from(self.tls.clone())
            .connect(name, tcp)
            .await
            .map_err(io)?;
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
            .await
            .map_err(|e| Error::Http(e.to_string()))?;
        tokio::spawn(conn);
        let mut req = Request::builder()
            .method(method)
            .uri(format!("{}{path}", self.url.prefix))
            .header("host", &self.url.host);
        if body.is_some() {
            req = req.header("content-type", "application/json");
        }
        let req = req
            .body(Full::new(Bytes::from(body.unwrap_or_default())))
            .map_err(|e| Error::Http(e.to_string()))?;
        let resp = sender
            .send_request(req)
            .await
            .map_err(|e| Error::Http(e.to_string()))?;
        let status = resp.status().as_u16();
        let bytes = resp
            .into_body()
            .collect()
            .await
            .map_err(|e| Error::Http(e.to_string()))?
            .to_bytes();
        Ok((status, String::from_utf8_lossy(&bytes).into_owned()))
    }
}

/// Where a gateway's PPKs for one peer come from.
#[derive(Clone)]
pub enum KeySource {
    /// An ETSI 014 KME; `peer_sae` is the peer gateway's SAE ID (the slave when we
    /// draw, the master when we fetch by ID).
    Etsi014 { http: Https, peer_sae: String },
    /// A SKIP key provider; `remote` is the peer's key provider's system ID.
    Skip { http: Https, remote: String },
}

/// A key delivered: its ID (as the PPK_ID carries it) and its bytes.
pub type Key = (String, Vec<u8>);

impl KeySource {
    /// A new key shared with the peer (we are the initiator).
    pub async fn new_key(&self) -> Result<Key, Error> {
        match self {
            KeySource::Etsi014 { http, peer_sae } => {
                let path = format!("/api/v1/keys/{}/enc_keys", percent_encode(peer_sae));
                let body = serde_json::json!({ "number": 1 }).to_string();
                let (status, text) = http.request("POST", &path, Some(body)).await?;
                one_etsi_key(status, &text)
            }
            KeySource::Skip { http, remote } => {
                let path = format!("/key?remoteSystemID={}", percent_encode(remote));
                let (status, text) = http.request("GET", &path, None).await?;
                skip_key(status, &text)
            }
        }
    }

    /// The key with ID `id` the peer drew (we are the responder).
    pub async fn key_by_id(&self, id: &str) -> Result<Key, Error> {
        match self {
            KeySource::Etsi014 { http, peer_sae } => {
                let path = format!("/api/v1/keys/{}/dec_keys", percent_encode(peer_sae));
                let body = qkd::etsi014::dec_keys_body(id);
                let (status, text) = http.request("POST", &path, Some(body)).await?;
                one_etsi_key(status, &text)
            }
            KeySource::Skip { http, remote } => {
                let path = format!(
                    "/key/{}?remoteSystemID={}",
                    percent_encode(id),
                    percent_encode(remote)
                );
                let (status, text) = http.request("GET", &path, None).await?;
                skip_key(status, &text)
            }
        }
    }
}

fn refused(status: u16, text: &str) -> Error {
    Error::Refused {
        status,
        body: text.chars().take(200).collect(),
    }
}

fn one_etsi_key(status: u16, text: &str) -> Result<Key, Error> {
    if status != 200 {
        return Err(refused(status, text));
    }
    match KeyContainer::decode(text).as_deref() {
        Some([key]) => Ok(key.clone()),
        _ => Err(Error::Http(format!("not one key in the container: {text}"))),
    }
}

fn skip_key(status: u16, text: &str) -> Result<Key, Error> {
    if status != 200 {
        return Err(refused(status, text));
    }
    SkipKey::decode(text).ok_or_else(|| Error::Http(format!("not a SKIP key: {text}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_come_apart() {
        let u = |s| Url::parse(s).unwrap();
        assert_eq!(u("https://127.0.0.1:8443").port, 8443);
        assert_eq!(u("https://kme-a").port, 443);
        assert_eq!(u("https://kme-a:9/base/").prefix, "/base");
        assert_eq!(u("https://[::1]:8443").host, "::1");
        assert!(Url::parse("http://kme-a").is_err());
        assert!(Url::parse("https://:8443").is_err());
        assert!(Url::parse("https://kme:port").is_err());
    }
}
