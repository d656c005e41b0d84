//! `qsafe kme`: key managers of a scenario served over HTTPS, each on its own address,
//! with the requests answered by the `qkd` crate's own ETSI GS QKD 014 and SKIP
//! handlers (the ones the simulator uses). Pools fill in real time: a request at wall
//! time t (from the server's start) sees what the scenario's QKD links made by t.
//! KMEs served by one process share their QKD links' pool halves and relay across
//! trusted nodes as in the simulator.
//!
//! The caller is the SAE its client certificate names (common name). An ETSI 014
//! request without one is answered 401 with no body, as the standard says; a SKIP
//! key provider requires the certificate in the TLS handshake (SKIP's status codes
//! have none for it). Every request is logged: KME, SAE, method, path, status, how
//! many keys and their IDs, never key bytes.

use std::convert::Infallible;
use std::fmt;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use http_body_util::{BodyExt, Full, Limited};
use hyper::body::{Bytes, Incoming};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use qkd::{QkdNetwork, etsi014, skip};
use rustls::ServerConfig;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

use crate::tls::common_name;

/// The largest request body read (ETSI key-ID lists included).
const MAX_BODY: usize = 64 * 1024;

/// The API a KME serves.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Api {
    Etsi014,
    Skip,
}

/// One KME to serve: its index in the network, its API and its TLS configuration.
pub struct Kme {
    pub index: usize,
    pub api: Api,
    pub tls: Arc<ServerConfig>,
}

/// What every KME of the process shares: the QKD network and the clock's origin.
pub struct Shared {
    pub net: Mutex<QkdNetwork>,
    pub start: Instant,
    pub limits: etsi014::Limits,
}

impl Shared {
    pub fn new(net: QkdNetwork) -> Arc<Self> {
        Arc::new(Shared {
            net: Mutex::new(net),
            start: Instant::now(),
            limits: etsi014::Limits::default(),
        })
    }
}

/// One request as the log shows it.
#[derive(Clone, Debug, PartialEq)]
pub struct RequestLog {
    /// Seconds since the server started.
    pub at: f64,
    pub kme: String,
    /// The SAE the client certificate names, if any.
    pub sae: Option<String>,
    pub method: String,
    pub path: String,
    pub status: u16,
    /// IDs of the keys delivered.
    pub key_ids: Vec<String>,
}

impl fmt::Display for RequestLog {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "[{:>9.3}s] {} sae={} {} {} -> {} keys={}",
            self.at,
            self.kme,
            self.sae.as_deref().unwrap_or("(no certificate)"),
            self.method,
            self.path,
            self.status,
            self.key_ids.len()
        )?;
        if !self.key_ids.is_empty() {
            write!(f, " ids={}", self.key_ids.join(","))?;
        }
        Ok(())
    }
}

/// Where request logs go.
pub type Log = Arc<dyn Fn(RequestLog) + Send + Sync>;

/// The IDs of the keys a 200 body delivers (ETSI `keys[].key_ID`, SKIP `keyId`).
fn delivered_ids(api: Api, body: Option<&str>) -> Vec<String> {
    let Some(v) = body.and_then(|b| serde_json::from_str::<serde_json::Value>(b).ok()) else {
        return Vec::new();
    };
    match api {
        Api::Etsi014 => v["keys"]
            .as_array()
            .map(|keys| {
                keys.iter()
                    .filter_map(|k| k["key_ID"].as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default(),
        Api::Skip => v["keyId"]
            .as_str()
            .map(str::to_string)
            .into_iter()
            .collect(),
    }
}

/// Answers one request to `kme` from `caller`.
async fn answer(
    shared: &Shared,
    kme: usize,
    api: Api,
    caller: Option<&str>,
    req: Request<Incoming>,
    log: &Log,
) -> Response<Full<Bytes>> {
    let (parts, body) = req.into_parts();
    let (method, path) = (parts.method.as_str(), parts.uri.path());
    let query = parts.uri.query().unwrap_or("");
    let body = Limited::new(body, MAX_BODY)
        .collect()
        .await
        .map(|b| b.to_bytes());
    let now_ns = shared.start.elapsed().as_nanos() as u64;
    let kme_id;
    let response = {
        let mut net = shared
            .net
            .lock()
            .expect("no handler panics holding the network");
        kme_id = net.kmes[kme].id.clone();
        match (api, caller, body) {
            (_, _, Err(_)) => {
                qkd::Response::json(400, &serde_json::json!({"message": "bad request format"}))
            }
            (Api::Etsi014, None, _) => qkd::Response::empty(401),
            (Api::Etsi014, Some(caller), Ok(body)) => etsi014::handle(
                &mut net,
                now_ns,
                kme,
                shared.limits,
                caller,
                method,
                path,
                query,
                &body,
            ),
            (Api::Skip, caller, Ok(_)) => skip::handle(
                &mut net,
                now_ns,
                kme,
                caller.unwrap_or(""),
                method,
                path,
                query,
            ),
        }
    };
    let key_ids = match response.status {
        200 => delivered_ids(api, response.body.as_deref()),
        _ => Vec::new(),
    };
    log(RequestLog {
        at: now_ns as f64 / 1e9,
        kme: kme_id,
        sae: caller.map(str::to_string),
        method: method.to_string(),
        path: match query {
            "" => path.to_string(),
            q => format!("{path}?{q}"),
        },
        status: response.status,
        key_ids,
    });
    let mut builder = Response::builder().status(response.status);
    if response.body.is_some() {
        builder = builder.header("content-type", "application/json");
    }
    builder
        .body(Full::new(Bytes::from(response.body.unwrap_or_default())))
        .expect("a status code the handlers chose")
}

/// Serves `kme` on `listener` until the task is dropped. TLS failures (a SKIP client
/// without a certificate, a certificate from another CA) are logged as status 0.
pub async fn serve(shared: Arc<Shared>, kme: Kme, listener: TcpListener, log: Log) {
    let acceptor = TlsAcceptor::from(kme.tls.clone());
    loop {
        let Ok((tcp, from)) = listener.accept().await else {
            continue;
        };
        let (shared, acceptor, log) = (shared.clone(), acceptor.clone(), log.clone());
        let (index, api) = (kme.index, kme.api);
        tokio::spawn(async move {
            let tls = match acceptor.accept(tcp).await {
                Ok(tls) => tls,
                Err(e) => return refused(&shared, index, from, &e.to_string(), &log),
            };
            let caller = tls
                .get_ref()
                .1
                .peer_certificates()
                .and_then(|c| c.first())
                .and_then(common_name);
            let service = service_fn(|req| {
                let (shared, log, caller) = (shared.clone(), log.clone(), caller.clone());
                async move {
                    Ok::<_, Infallible>(
                        answer(&shared, index, api, caller.as_deref(), req, &log).await,
                    )
                }
            });
            let _ = http1::Builder::new()
                .serve_connection(TokioIo::new(tls), service)
                .await;
        });
    }
}

/// Logs a connection refused during the TLS handshake.
fn refused(shared: &Shared, kme: usize, from: SocketAddr, why: &str, log: &Log) {
    let kme_id = shared.net.lock().expect("not poisoned").kmes[kme]
        .id
        .clone();
    log(RequestLog {
        at: shared.start.elapsed().as_secs_f64(),
        kme: kme_id,
        sae: None,
        method: "TLS".into(),
        path: format!("from {from}: {why}"),
        status: 0,
        key_ids: Vec::new(),
    });
}
