//! The gateways' QKD key client: the initiator draws a key from its KME before
//! IKE_SA_INIT (ETSI 014 `enc_keys` or SKIP `/key`; a required PPK waits with backoff
//! while the pool is empty, an optional one goes on without), the responder fetches
//! the key by the received ID (`dec_keys` or `/key/{id}`; retried shortly while it may
//! not have been relayed yet). Every request is a real JSON request answered by the
//! `qkd` crate, and each is recorded as a row.

use ikev2::endpoint::{Ppk, SaId};
use qkd::{etsi014, skip};
use sim_core::{EntityId, SimDuration, SimTime};

use super::output::NetTrace;
use super::{Ev, World};
use crate::config::{KeyApi, PpkMode};
use crate::results::{KeyRequestRow, PoolSample};

/// A gateway's QKD keys at hand for one peer: (fetched at, key ID, key), oldest first.
#[derive(Default)]
pub(super) struct KeyCache {
    pub keys: std::collections::VecDeque<(SimTime, String, Vec<u8>)>,
    /// A refill request is under way.
    pub refilling: bool,
    /// Keys fetched into it, and thrown away too old.
    pub fetched: u64,
    pub wasted: u64,
}

/// A key manager as the gateways see it: its API, its request latency, and how it
/// serves requests (`service` each, on `free_at.len()` servers, or any number at once
/// when there are none).
pub(super) struct Kme {
    pub entity: EntityId,
    pub api: KeyApi,
    pub latency: SimDuration,
    pub service: SimDuration,
    pub free_at: Vec<SimTime>,
}

impl World {
    /// The KME of gateway `gw` (which the build checked it has).
    pub(super) fn kme_of(&self, gw: usize) -> usize {
        self.gateways[gw].kme.expect("checked at build")
    }

    /// A key request (`KeyDraw` or `KeyFetch`) reaches its KME: served now, or, at a
    /// KME whose service takes time, when its turn ends.
    pub(super) fn queue_at_kme(&mut self, mut ev: Ev) {
        let (gw, served) = match &mut ev {
            Ev::KeyDraw { tunnel, served, .. } => (self.tunnels[*tunnel].initiator, served),
            Ev::KeyFetch { gw, served, .. } => (*gw, served),
            _ => return,
        };
        *served = true;
        let kme = self.kme_of(gw);
        match self.kme_queue(kme) {
            Some(end) => self.sim.schedule_at(self.kmes[kme].entity, end, ev),
            None => self.handle(ev),
        }
    }

    /// A request reaches KME `kme` now: when its service ends, if it takes time.
    fn kme_queue(&mut self, kme: usize) -> Option<SimTime> {
        let now = self.sim.now();
        let k = &mut self.kmes[kme];
        if k.service == SimDuration::ZERO {
            return None;
        }
        let Some(slot) = (0..k.free_at.len()).min_by_key(|&i| (k.free_at[i], i)) else {
            return Some(now + k.service); // any number at once: no waiting in line
        };
        let end = k.free_at[slot].max(now) + k.service;
        k.free_at[slot] = end;
        Some(end)
    }
    /// The ID of a gateway's key manager (SKIP's system ID), empty if it has none.
    pub(super) fn kme_id_of(&self, gw: usize) -> String {
        self.gateways[gw]
            .kme
            .map(|k| self.qkd.kmes[k].id.clone())
            .unwrap_or_default()
    }

    pub(super) fn ask_kme_draw(&mut self, t: usize, asked: SimTime, retries: u32) {
        let gw = self.tunnels[t].initiator;
        let kme = self.gateways[gw].kme.expect("checked at build");
        let entity = self.gateways[gw].entity;
        self.sim.schedule(
            entity,
            self.kmes[kme].latency,
            Ev::KeyDraw {
                tunnel: t,
                asked,
                retries,
                served: false,
            },
        );
    }

    pub(super) fn key_draw(&mut self, t: usize, asked: SimTime, retries: u32) {
        let (ini, res) = (self.tunnels[t].initiator, self.tunnels[t].responder);
        let kme = self.gateways[ini].kme.expect("checked");
        let (me, peer) = (
            self.gateways[ini].name.clone(),
            self.gateways[res].name.clone(),
        );
        let (op, response, decoded) = match self.kmes[kme].api {
            KeyApi::Etsi014 => {
                let path = format!("/api/v1/keys/{peer}/enc_keys");
                let (r, keys) = self.etsi014_post(kme, &me, &path, r#"{"number":1,"size":256}"#);
                ("enc_keys", r, keys.into_iter().next())
            }
            KeyApi::Skip => {
                let remote = self.kme_id_of(res);
                let (r, key) = self.skip_get(kme, &me, "/key", &remote);
                ("key", r, key)
            }
        };
        self.record_key_request(ini, t, kme, op, response.status, asked);
        let Some((id, key)) = decoded else {
            // No key now. Required: wait and ask again (1 s doubling, at most 32 s).
            if self.tunnels[t].ppk == PpkMode::Required {
                let entity = self.gateways[ini].entity;
                let backoff = SimDuration::from_secs(1u64 << retries.min(5));
                // The new request is answered a request latency after it is made.
                self.sim.schedule(
                    entity,
                    backoff + self.kmes[kme].latency,
                    Ev::KeyDraw {
                        tunnel: t,
                        asked: self.sim.now() + backoff,
                        retries: retries + 1,
                        served: false,
                    },
                );
                return;
            }
            self.initiate(t); // optional: go on without a key (a downgrade)
            return;
        };
        self.use_key(t, id, key);
    }

    /// The attempt of tunnel `t` has its key: IKE_SA_INIT goes out.
    fn use_key(&mut self, t: usize, id: String, key: Vec<u8>) {
        let tun = &mut self.tunnels[t];
        tun.summary.keys_drawn += 1;
        if let Some((a, _)) = tun.attempt.as_mut() {
            a.key_drawn = true;
            a.ppk_id = id.clone();
        }
        tun.pending_ppk = Some(Ppk {
            id: id.into_bytes(),
            key,
        });
        self.initiate(t);
    }

    /// With a key cache at tunnel `t`'s initiator: a key from it, if it holds a fresh
    /// one (older ones are thrown away, wasted), and a refill if it runs low. True if
    /// the attempt got its key.
    pub(super) fn key_from_cache(&mut self, t: usize) -> bool {
        let (ini, res) = (self.tunnels[t].initiator, self.tunnels[t].responder);
        let Some(cfg) = self.gateways[ini].key_cache.clone() else {
            return false;
        };
        let now = self.sim.now();
        let cache = self.caches.entry((ini, res)).or_default();
        let fresh = |at: SimTime| {
            cfg.max_age
                .is_none_or(|age| now.saturating_since(at) <= age)
        };
        let mut stale = 0;
        let key = loop {
            match cache.keys.pop_front() {
                Some((at, id, key)) if fresh(at) => break Some((id, key)),
                Some(_) => stale += 1,
                None => break None,
            }
        };
        cache.wasted += stale;
        self.qkd.report_wasted(stale);
        self.maybe_refill(ini, res);
        match key {
            Some((id, key)) => {
                self.use_key(t, id, key);
                true
            }
            None => false,
        }
    }

    /// Asks for enough keys to fill `gw`'s cache for `peer` if it holds fewer than its
    /// threshold and no request is under way.
    fn maybe_refill(&mut self, gw: usize, peer: usize) {
        let Some(cfg) = &self.gateways[gw].key_cache else {
            return;
        };
        let cache = self.caches.entry((gw, peer)).or_default();
        if cache.refilling || cache.keys.len() >= cfg.refill_below as usize {
            return;
        }
        cache.refilling = true;
        let kme = self.kme_of(gw);
        let (entity, asked) = (self.gateways[gw].entity, self.sim.now());
        let retries = 0;
        let ev = Ev::KeyRefill {
            gw,
            peer,
            asked,
            retries,
        };
        self.sim.schedule(entity, self.kmes[kme].latency, ev);
    }

    /// A cache refill reaches the KME: ETSI 014 `enc_keys` with `number`; on refusal,
    /// again later (1 s doubling, at most 32 s).
    pub(super) fn key_refill(&mut self, gw: usize, peer: usize, asked: SimTime, retries: u32) {
        let Some(cfg) = self.gateways[gw].key_cache.clone() else {
            return;
        };
        let kme = self.kme_of(gw);
        let held = self.caches.get(&(gw, peer)).map_or(0, |c| c.keys.len());
        let number = (cfg.keys as usize).saturating_sub(held).max(1);
        let (me, them) = (
            self.gateways[gw].name.clone(),
            self.gateways[peer].name.clone(),
        );
        let path = format!("/api/v1/keys/{them}/enc_keys");
        let body = format!(r#"{{"number":{number},"size":256}}"#);
        let (response, keys) = self.etsi014_post(kme, &me, &path, &body);
        // A refill serves no one tunnel in particular: its row names the peer gateway.
        let tunnel = format!("(cache for {them})");
        let key = (gw, &tunnel[..]);
        self.record_request(key, None, kme, "enc_keys", response.status, asked);
        let now = self.sim.now();
        let cache = self.caches.entry((gw, peer)).or_default();
        if keys.is_empty() {
            let entity = self.gateways[gw].entity;
            let backoff = SimDuration::from_secs(1u64 << retries.min(5));
            let ev = Ev::KeyRefill {
                gw,
                peer,
                asked: now + backoff,
                retries: retries + 1,
            };
            self.sim
                .schedule(entity, backoff + self.kmes[kme].latency, ev);
            return;
        }
        cache.refilling = false;
        cache.fetched += keys.len() as u64;
        cache
            .keys
            .extend(keys.into_iter().map(|(id, key)| (now, id, key)));
    }

    /// One ETSI GS QKD 014 POST by SAE `caller` to its KME `kme`; the answer and the
    /// (key ID, key) pairs it delivered.
    pub(super) fn etsi014_post(
        &mut self,
        kme: usize,
        caller: &str,
        path: &str,
        body: &str,
    ) -> (qkd::http::Response, Vec<(String, Vec<u8>)>) {
        let now = self.now_ns();
        let limits = etsi014::Limits::default();
        let r = etsi014::handle(
            &mut self.qkd,
            now,
            kme,
            limits,
            caller,
            "POST",
            path,
            "",
            body.as_bytes(),
        );
        let keys = r
            .body
            .as_deref()
            .filter(|_| r.is_ok())
            .and_then(etsi014::KeyContainer::decode)
            .unwrap_or_default();
        (r, keys)
    }

    /// One SKIP GET by `caller` to its KME `kme` about the key provider `remote`; the
    /// answer and the (key ID, key) it delivered.
    pub(super) fn skip_get(
        &mut self,
        kme: usize,
        caller: &str,
        path: &str,
        remote: &str,
    ) -> (qkd::http::Response, Option<(String, Vec<u8>)>) {
        let now = self.now_ns();
        let query = format!("remoteSystemID={remote}");
        let r = skip::handle(&mut self.qkd, now, kme, caller, "GET", path, &query);
        let key = r
            .body
            .as_deref()
            .filter(|_| r.is_ok())
            .and_then(skip::SkipKey::decode);
        (r, key)
    }

    pub(super) fn record_key_request(
        &mut self,
        gw: usize,
        t: usize,
        kme: usize,
        op: &str,
        status: u16,
        asked: SimTime,
    ) {
        let tunnel = self.tunnels[t].name.clone();
        self.record_request((gw, &tunnel), Some(t), kme, op, status, asked);
    }

    /// A key request's row and trace line (`tunnel` names who it served; `t` is that
    /// tunnel's index, `None` for a cache refill).
    fn record_request(
        &mut self,
        (gw, tunnel): (usize, &str),
        t: Option<usize>,
        kme: usize,
        op: &str,
        status: u16,
        asked: SimTime,
    ) {
        let api = match self.kmes[kme].api {
            KeyApi::Etsi014 => "etsi014",
            KeyApi::Skip => "skip",
        };
        // From asking to the answer: the request latency, and any wait at a busy KME.
        let latency = self.sim.now().saturating_since(asked);
        let row = KeyRequestRow {
            time_ns: self.now_ns(),
            gateway: self.gateways[gw].name.clone(),
            tunnel: tunnel.to_string(),
            kme: self.qkd.kmes[kme].id.clone(),
            api: api.into(),
            op: op.into(),
            status,
            latency_ns: latency.as_nanos(),
        };
        self.rows.key_request(t.unwrap_or(gw), row);
        let entity = self.gateways[gw].entity;
        self.sim
            .trace(entity, &NetTrace::KeyRequest { tunnel, op, status });
    }

    pub(super) fn key_fetch(
        &mut self,
        gw: usize,
        sa: SaId,
        t: usize,
        key_id: Vec<u8>,
        asked: SimTime,
        retries: u32,
    ) {
        let kme = self.gateways[gw].kme.expect("checked");
        let now = self.now_ns();
        let ini = self.tunnels[t].initiator;
        let me = self.gateways[gw].name.clone();
        let id = String::from_utf8_lossy(&key_id).to_string();
        let (op, response, key) = match self.kmes[kme].api {
            KeyApi::Etsi014 => {
                let path = format!("/api/v1/keys/{}/dec_keys", self.gateways[ini].name);
                let body = qkd::etsi014::dec_keys_body(&id);
                let (r, keys) = self.etsi014_post(kme, &me, &path, &body);
                let key = keys.into_iter().next();
                ("dec_keys", r, key.map(|k| k.1))
            }
            KeyApi::Skip => {
                let origin = self.kme_id_of(ini);
                let (r, key) = self.skip_get(kme, &me, &skip_key_path(&id), &origin);
                ("key_by_id", r, key.map(|k| k.1))
            }
        };
        self.record_key_request(gw, t, kme, op, response.status, asked);
        if key.is_none() && response.status == 400 && retries < 4 {
            // Perhaps not relayed here yet: ask again shortly.
            let entity = self.gateways[gw].entity;
            let wait = SimDuration::from_millis(50 << retries);
            self.sim.schedule(
                entity,
                wait + self.kmes[kme].latency,
                Ev::KeyFetch {
                    gw,
                    sa,
                    tunnel: t,
                    key_id: key_id.into(),
                    asked: self.sim.now() + wait,
                    retries: retries + 1,
                    served: false,
                },
            );
            return;
        }
        let ppk = key.map(|key| Ppk { id: key_id, key });
        self.gateways[gw].ep.provide_ppk(now, sa, ppk);
        self.drain(gw);
    }

    /// The initiator wants a PPK: the one its key draw brought; the responder wants
    /// one by ID: it asks its KME.
    pub(super) fn ppk_needed(&mut self, gw: usize, sa: SaId, peer: usize, key_id: Option<Vec<u8>>) {
        let now = self.sim.now();
        let t = self.gateways[gw].peer_tunnel[peer];
        match key_id {
            None => {
                let ppk = self.tunnels[t].pending_ppk.take();
                self.gateways[gw].ep.provide_ppk(now.as_nanos(), sa, ppk);
            }
            Some(key_id) => {
                let kme = self.gateways[gw].kme.expect("checked at build");
                let entity = self.gateways[gw].entity;
                let fetch = Ev::KeyFetch {
                    gw,
                    sa,
                    tunnel: t,
                    key_id: key_id.into(),
                    asked: now,
                    retries: 0,
                    served: false,
                };
                self.sim.schedule(entity, self.kmes[kme].latency, fetch);
            }
        }
    }

    /// A key manager (its QKD device) goes down or comes back.
    pub(super) fn kme_switch(&mut self, kme: usize, up: bool) {
        self.qkd.kmes[kme].up = up;
        let entity = self.kmes[kme].entity;
        self.sim.trace(entity, &NetTrace::Kme { up });
    }

    /// Brings the pools up to now and samples each half's level and generated bits
    /// (a row for each half that changed).
    pub(super) fn sample_pools(&mut self) {
        let now = self.now_ns();
        for (link, l) in self.qkd.links.iter_mut().enumerate() {
            if !self.rows.keeps_link(link) {
                continue; // no rows wanted: nothing to bring up to date
            }
            l.advance(now);
            for end in 0..2 {
                let half = &l.halves[end];
                if half.capacity_bits() == 0 {
                    continue; // all the key is the other end's
                }
                let row = PoolSample {
                    time_ns: now,
                    link: l.name.clone(),
                    owner: self.qkd.kmes[l.ends[end]].id.clone(),
                    level_bits: half.level_bits(),
                    generated_bits: half.stats.generated_bits,
                };
                self.rows.pool_sample((link, end), row);
            }
        }
    }

    /// QKD link `link` stops producing key, or starts again.
    pub(super) fn qkd_link_switch(&mut self, link: usize, up: bool) {
        let now = self.now_ns();
        self.qkd.links[link].set_up(now, up);
    }
}

/// The SKIP path of the key with ID `id`, the peer's ID percent-encoded so that it
/// stays one path segment.
fn skip_key_path(id: &str) -> String {
    format!("/key/{}", qkd::http::percent_encode(id))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peer_supplied_key_ids_are_escaped() {
        let hostile = r#"x"],"number":99,"a":["/../status?"#;
        let body: serde_json::Value =
            serde_json::from_str(&qkd::etsi014::dec_keys_body(hostile)).unwrap();
        assert_eq!(body["key_IDs"][0]["key_ID"], hostile);
        assert_eq!(body.as_object().unwrap().len(), 1);
        let path = skip_key_path(hostile);
        assert_eq!(path.matches('/').count(), 2, "{path}");
        assert!(!path.contains('?') && !path.contains('"'), "{path}");
        let uuid = "0a1b2c3d-0000-4000-8000-000000000000";
        assert_eq!(skip_key_path(uuid), format!("/key/{uuid}"));
    }
}
