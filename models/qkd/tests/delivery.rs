//! Key pools under demand, both delivery APIs with every error path, and relay.

use qkd::etsi014::{self, KeyContainer, Limits, NOT_FOUND};
use qkd::network::StreamFactory;
use qkd::skip::{self, SkipKey};
use qkd::{PoolConfig, QkdNetwork, Response};
use rand_chacha::ChaCha20Rng;
use rand_core::SeedableRng;
use sha2::{Digest, Sha256};

const SEC: u64 = 1_000_000_000;

fn streams(seed: u64) -> impl Fn(&str, &str) -> ChaCha20Rng {
    move |entity, purpose| {
        let h = Sha256::new()
            .chain_update(seed.to_be_bytes())
            .chain_update(entity)
            .chain_update([0])
            .chain_update(purpose);
        ChaCha20Rng::from_seed(h.finalize().into())
    }
}

/// KME-A (gw-a) --link-- KME-B (gw-b), pool full at start.
fn pair(cfg: PoolConfig) -> QkdNetwork {
    let s = streams(1);
    let f: StreamFactory<'_> = &s;
    let mut net = QkdNetwork::new();
    let a = net.add_kme("KME-A", &["gw-a", "gw-a2"], f);
    let b = net.add_kme("KME-B", &["gw-b"], f);
    net.add_link("a-b", a, b, cfg, f);
    net
}

fn full(capacity_keys: u64, rate_bps: u64) -> PoolConfig {
    let mut c = PoolConfig::fixed(rate_bps as f64, capacity_keys * 256);
    c.initial_bits = capacity_keys * 256;
    c
}

fn body(r: &Response) -> serde_json::Value {
    serde_json::from_str(r.body.as_deref().expect("a JSON body")).unwrap()
}

fn state(net: &QkdNetwork) -> Vec<u64> {
    net.links
        .iter()
        .flat_map(|l| l.halves.iter().map(|h| h.level_bits()))
        .collect()
}

#[test]
fn known_demand_empties_the_pool_when_the_arithmetic_says() {
    // 100,000 keys of 256 bits, refilled at 1 kbit/s, 1,000 tunnels each taking a key
    // every 10 s: 100 keys/s out, 3.906 keys/s in, so empty after
    // 100,000 / 96.09 = 1040.6 s (17.3 minutes).
    let mut cfg = full(100_000, 1000);
    cfg.share_permille = Some(1000); // every tunnel initiates at KME-A: give it the whole pool
    let mut net = pair(cfg);
    let mut t = 0;
    let empty_at = loop {
        match net.draw(t, 0, 1, "gw-a", Some("gw-b"), 1, 256) {
            Ok(_) => t += 10 * SEC / 1000, // one of the 1,000 tunnels every 10 ms
            Err(e) => {
                assert_eq!(e, qkd::DrawError::Insufficient);
                break t;
            }
        }
    };
    let expected = 100_000.0 / (100.0 - 1000.0 / 256.0);
    let got = empty_at as f64 / SEC as f64;
    assert!(
        (got / expected - 1.0).abs() < 0.005,
        "empty after {got:.1} s, expected {expected:.1} s (±0.5 %)"
    );
}

#[test]
fn etsi014_happy_path_with_post_and_get() {
    let mut net = pair(full(1000, 0));
    let l = Limits::default();
    let st = etsi014::handle(
        &mut net,
        0,
        0,
        l,
        "gw-a",
        "GET",
        "/api/v1/keys/gw-b/status",
        "",
        b"",
    );
    assert_eq!(st.status, 200);
    let s = body(&st);
    assert_eq!(
        (s["source_KME_ID"].as_str(), s["target_KME_ID"].as_str()),
        (Some("KME-A"), Some("KME-B"))
    );
    assert_eq!(
        (
            s["key_size"].as_u64(),
            s["stored_key_count"].as_u64(),
            s["max_SAE_ID_count"].as_u64()
        ),
        (Some(256), Some(500), Some(0))
    );

    let r = etsi014::handle(
        &mut net,
        0,
        0,
        l,
        "gw-a",
        "POST",
        "/api/v1/keys/gw-b/enc_keys",
        "",
        br#"{"number":2,"size":512}"#,
    );
    assert_eq!(r.status, 200, "{:?}", r.body);
    let keys = KeyContainer::decode(r.body.as_deref().unwrap()).unwrap();
    assert_eq!(keys.len(), 2);
    assert!(keys.iter().all(|(id, k)| id.len() == 36 && k.len() == 64));
    let r = etsi014::handle(
        &mut net,
        0,
        0,
        l,
        "gw-a",
        "GET",
        "/api/v1/keys/gw-b/enc_keys",
        "number=1",
        b"",
    );
    let third = KeyContainer::decode(r.body.as_deref().unwrap())
        .unwrap()
        .remove(0);

    // The slave fetches them at its own KME: POST with two IDs, GET with one.
    let post = format!(
        r#"{{"key_IDs":[{{"key_ID":"{}"}},{{"key_ID":"{}"}}]}}"#,
        keys[0].0, keys[1].0
    );
    let r = etsi014::handle(
        &mut net,
        0,
        1,
        l,
        "gw-b",
        "POST",
        "/api/v1/keys/gw-a/dec_keys",
        "",
        post.as_bytes(),
    );
    assert_eq!(
        KeyContainer::decode(r.body.as_deref().unwrap()).unwrap(),
        keys
    );
    let r = etsi014::handle(
        &mut net,
        0,
        1,
        l,
        "gw-b",
        "GET",
        "/api/v1/keys/gw-a/dec_keys",
        &format!("key_ID={}", third.0),
        b"",
    );
    assert_eq!(
        KeyContainer::decode(r.body.as_deref().unwrap()).unwrap(),
        vec![third]
    );
    assert_eq!((net.stats.keys_delivered, net.stats.keys_fetched), (3, 3));
}

#[test]
fn etsi014_errors_get_their_codes_and_change_nothing() {
    let l = Limits::default();
    let mut net = pair(full(4, 0));
    let r = etsi014::enc_keys(&mut net, 0, 0, l, "gw-a", "gw-b", &Default::default());
    let (id, _) = KeyContainer::decode(r.body.as_deref().unwrap())
        .unwrap()
        .remove(0);
    let dec = |id: &str| format!(r#"{{"key_IDs":[{{"key_ID":"{id}"}}]}}"#);
    let twice = format!("key_ID={id}&key_ID={id}");
    // (KME, caller, method, path, query, body, status, message)
    type Case<'a> = (
        usize,
        &'a str,
        &'a str,
        &'a str,
        &'a str,
        String,
        u16,
        Option<&'a str>,
    );
    let cases: Vec<Case> = vec![
        (
            0,
            "gw-a",
            "POST",
            "/api/v1/keys/gw-b/enc_keys",
            "",
            "{not json".into(),
            400,
            Some("bad request format"),
        ),
        (
            0,
            "gw-a",
            "POST",
            "/api/v1/keys/gw-b/enc_keys",
            "",
            r#"{"numbr":1}"#.into(),
            400,
            Some("bad request format"),
        ),
        (
            0,
            "gw-a",
            "POST",
            "/api/v1/keys/gw-zz/enc_keys",
            "",
            "{}".into(),
            400,
            Some("unknown SAE ID"),
        ),
        (
            0,
            "gw-a",
            "POST",
            "/api/v1/keys/gw-b/enc_keys",
            "",
            r#"{"size":260}"#.into(),
            400,
            Some("size shall be a multiple of 8"),
        ),
        (
            0,
            "gw-a",
            "POST",
            "/api/v1/keys/gw-b/enc_keys",
            "",
            r#"{"number":129}"#.into(),
            400,
            Some("requested parameters do not adhere to KMS rules"),
        ),
        (
            0,
            "gw-a",
            "POST",
            "/api/v1/keys/gw-b/enc_keys",
            "",
            r#"{"size":2048}"#.into(),
            400,
            Some("requested parameters do not adhere to KMS rules"),
        ),
        (
            0,
            "gw-a",
            "POST",
            "/api/v1/keys/gw-b/enc_keys",
            "",
            r#"{"extension_mandatory":[{"abc_route_type":"direct"}]}"#.into(),
            400,
            Some("not all extension_mandatory parameters are supported"),
        ),
        (
            0,
            "gw-a",
            "POST",
            "/api/v1/keys/gw-b/enc_keys",
            "",
            r#"{"additional_slave_SAE_IDs":["gw-a2"]}"#.into(),
            400,
            None,
        ),
        (
            0,
            "gw-a",
            "POST",
            "/api/v1/keys/gw-b/enc_keys",
            "",
            r#"{"number":3}"#.into(),
            503,
            Some("insufficient amount of key material"),
        ),
        (
            0,
            "gw-a",
            "GET",
            "/api/v1/keys/gw-b/enc_keys",
            "colour=red",
            "".into(),
            400,
            None,
        ),
        (
            0,
            "gw-b",
            "POST",
            "/api/v1/keys/gw-b/enc_keys",
            "",
            "{}".into(),
            401,
            None,
        ),
        (
            1,
            "gw-b",
            "POST",
            "/api/v1/keys/gw-a/dec_keys",
            "",
            dec("00000000-0000-4000-8000-000000000000"),
            400,
            Some(NOT_FOUND),
        ),
        (
            1,
            "gw-b",
            "POST",
            "/api/v1/keys/gw-a/dec_keys",
            "",
            dec("not-a-uuid"),
            400,
            Some(NOT_FOUND),
        ),
        (
            1,
            "gw-b",
            "POST",
            "/api/v1/keys/gw-a/dec_keys",
            "",
            format!(r#"{{"key_IDs":[{{"key_ID":"{id}"}},{{"key_ID":"{id}"}}]}}"#),
            400,
            Some(NOT_FOUND),
        ),
        (
            1,
            "gw-b",
            "POST",
            "/api/v1/keys/gw-a2/dec_keys",
            "",
            dec(&id),
            400,
            Some(NOT_FOUND),
        ),
        (
            1,
            "gw-b",
            "GET",
            "/api/v1/keys/gw-a/dec_keys",
            &twice,
            "".into(),
            400,
            None,
        ),
        (
            1,
            "gw-a",
            "POST",
            "/api/v1/keys/gw-a/dec_keys",
            "",
            dec(&id),
            401,
            None,
        ),
        (
            0,
            "gw-a",
            "DELETE",
            "/api/v1/keys/gw-b/status",
            "",
            "".into(),
            400,
            Some("DELETE is not a method of status"),
        ),
        (
            0,
            "gw-a",
            "GET",
            "/api/v2/keys/gw-b/status",
            "",
            "".into(),
            400,
            Some("not a path of the key delivery API"),
        ),
        (
            0,
            "gw-a",
            "GET",
            "/api/v1/keys/gw-b/keys",
            "",
            "".into(),
            400,
            Some("not a path of the key delivery API"),
        ),
    ];
    for (kme, caller, method, path, query, req, code, message) in cases {
        let (before, pending) = (state(&net), net.stats.clone());
        let r = etsi014::handle(
            &mut net,
            0,
            kme,
            l,
            caller,
            method,
            path,
            query,
            req.as_bytes(),
        );
        assert_eq!(
            r.status, code,
            "{method} {path}?{query} {req}: {:?}",
            r.body
        );
        if code == 401 {
            assert_eq!(r.body, None, "401 has no body");
        }
        if let Some(m) = message {
            assert_eq!(body(&r)["message"], m, "{path} {req}");
        }
        if code != 503 {
            assert_eq!(
                (state(&net), net.stats.clone()),
                (before, pending),
                "{method} {path} {req} changed state"
            );
        }
    }
    // The key is still there for its slave, and then gone: a second fetch is 400.
    let r = etsi014::dec_keys(
        &mut net,
        0,
        1,
        "gw-b",
        "gw-a",
        &serde_json::from_str(&dec(&id)).unwrap(),
    );
    assert_eq!(r.status, 200);
    let r = etsi014::dec_keys(
        &mut net,
        0,
        1,
        "gw-b",
        "gw-a",
        &serde_json::from_str(&dec(&id)).unwrap(),
    );
    assert_eq!(
        (r.status, body(&r)["message"].as_str()),
        (400, Some(NOT_FOUND))
    );
    // A failed device answers 503.
    net.kmes[0].up = false;
    assert_eq!(
        etsi014::enc_keys(&mut net, 0, 0, l, "gw-a", "gw-b", &Default::default()).status,
        503
    );
}

#[test]
fn skip_paths_and_errors() {
    let mut net = pair(full(2, 0));
    let cap = skip::handle(&mut net, 0, 0, "gw-a", "GET", "/capabilities", "");
    let c = body(&cap);
    assert_eq!(
        (
            c["localSystemID"].as_str(),
            c["remoteSystemID"][0].as_str(),
            c["key"].as_bool()
        ),
        (Some("KME-A"), Some("KME-B"), Some(true))
    );

    let r = skip::handle(
        &mut net,
        0,
        0,
        "gw-a",
        "GET",
        "/key",
        "remoteSystemID=KME-B",
    );
    let (id, key) = SkipKey::decode(r.body.as_deref().unwrap()).unwrap();
    assert_eq!((id.len(), key.len()), (32, 32));
    let r = skip::handle(
        &mut net,
        0,
        1,
        "gw-b",
        "GET",
        &format!("/key/{id}"),
        "remoteSystemID=KME-A",
    );
    assert_eq!(
        SkipKey::decode(r.body.as_deref().unwrap()).unwrap(),
        (id.clone(), key)
    );

    let before = state(&net);
    for (kme, path, query, code) in [
        (1, format!("/key/{id}"), "remoteSystemID=KME-A", 400), // already fetched
        (1, "/key/xyz".to_string(), "remoteSystemID=KME-A", 400),
        (0, "/key".to_string(), "", 400),
        (0, "/key".to_string(), "remoteSystemID=KME-Z", 400),
        (0, "/key".to_string(), "remoteSystemID=KME-A", 400), // itself
        (0, "/key".to_string(), "remoteSystemID=KME-B&size=100", 400),
        (0, "/entropy".to_string(), "minentropy=7", 400),
        (0, "/nothing".to_string(), "", 404),
    ] {
        let r = skip::handle(
            &mut net,
            0,
            kme,
            if kme == 0 { "gw-a" } else { "gw-b" },
            "GET",
            &path,
            query,
        );
        assert_eq!(r.status, code, "{path}?{query}");
        assert!(body(&r)["detail"].is_string());
    }
    assert_eq!(
        skip::handle(
            &mut net,
            0,
            0,
            "gw-a",
            "POST",
            "/key",
            "remoteSystemID=KME-B"
        )
        .status,
        405
    );
    assert_eq!(state(&net), before);
    let e = body(&skip::handle(
        &mut net,
        0,
        0,
        "gw-a",
        "GET",
        "/entropy",
        "minentropy=512",
    ));
    assert_eq!(
        (
            e["randomStr"].as_str().unwrap().len(),
            e["minentropy"].as_u64()
        ),
        (128, Some(512))
    );
    // One key left in KME-A's half (of 1 at start... the half holds 1 key): then empty.
    let r = skip::handle(
        &mut net,
        0,
        0,
        "gw-a",
        "GET",
        "/key",
        "remoteSystemID=KME-B",
    );
    assert_eq!(r.status, 503, "{:?}", r.body);
}

#[test]
fn split_ownership_never_hands_out_one_key_twice() {
    let mut net = pair(full(1000, 0));
    let l = Limits::default();
    let mut seen = std::collections::BTreeSet::new();
    for _ in 0..100 {
        for (kme, me, peer) in [(0, "gw-a", "gw-b"), (1, "gw-b", "gw-a")] {
            let r = etsi014::enc_keys(&mut net, 0, kme, l, me, peer, &Default::default());
            let (id, key) = KeyContainer::decode(r.body.as_deref().unwrap())
                .unwrap()
                .remove(0);
            assert!(seen.insert(id) && seen.insert(format!("{key:?}")));
        }
    }
    assert_eq!(state(&net), vec![(500 - 100) * 256, (500 - 100) * 256]);
}

#[test]
fn relayed_keys_match_and_cost_every_hop() {
    let s = streams(2);
    let f: StreamFactory<'_> = &s;
    let mut net = QkdNetwork::new();
    let ids: Vec<usize> = ["A", "T1", "T2", "B"]
        .iter()
        .map(|n| net.add_kme(n, &[&format!("gw-{n}")], f))
        .collect();
    for w in ids.windows(2) {
        net.add_link(&format!("{}-{}", w[0], w[1]), w[0], w[1], full(100, 0), f);
    }
    net.relay_latency_ns = 5_000_000;
    let before = state(&net);
    let r = etsi014::enc_keys(
        &mut net,
        0,
        ids[0],
        Limits::default(),
        "gw-A",
        "gw-B",
        &Default::default(),
    );
    let (id, key) = KeyContainer::decode(r.body.as_deref().unwrap())
        .unwrap()
        .remove(0);
    // Each hop's upstream half paid exactly one 256-bit key; the other halves nothing.
    let after = state(&net);
    let paid: Vec<u64> = before.iter().zip(&after).map(|(b, a)| b - a).collect();
    assert_eq!(paid, vec![256, 0, 256, 0, 256, 0]);
    assert_eq!(net.stats.relay_keys, 2);
    let ids_body = format!(r#"{{"key_IDs":[{{"key_ID":"{id}"}}]}}"#);
    let fetch = |net: &mut QkdNetwork, t| {
        etsi014::handle(
            net,
            t,
            ids[3],
            Limits::default(),
            "gw-B",
            "POST",
            "/api/v1/keys/gw-A/dec_keys",
            "",
            ids_body.as_bytes(),
        )
    };
    // Two trusted-node hops of 5 ms: not there before 10 ms.
    assert_eq!(fetch(&mut net, 9_999_999).status, 400);
    let r = fetch(&mut net, 10_000_000);
    assert_eq!(
        KeyContainer::decode(r.body.as_deref().unwrap()).unwrap(),
        vec![(id, key)]
    );
}

#[test]
fn undelivered_keys_expire_as_waste() {
    let mut cfg = full(10, 0);
    cfg.max_key_age_ns = Some(60 * SEC);
    let mut net = pair(cfg);
    etsi014::enc_keys(
        &mut net,
        0,
        0,
        Limits::default(),
        "gw-a",
        "gw-b",
        &Default::default(),
    );
    net.advance(61 * SEC);
    assert_eq!(net.stats.keys_wasted, 1);
}

/// A `poisson` link delivers its rate on average, in whole blocks split between the
/// halves by share, nothing while it is down, and the same bits whether its level is
/// read often or once.
#[test]
fn poisson_blocks_arrive_at_the_rate_and_not_while_down() {
    let mut cfg = PoolConfig::fixed(2000.0, 1 << 40);
    cfg.supply = qkd::Supply::Poisson;
    cfg.block_bits = Some(1000);
    let mut often = pair(cfg.clone());
    let mut once = pair(cfg);
    let hour = 3600 * SEC;
    for t in (0..=hour).step_by((7 * SEC) as usize) {
        often.links[0].advance(t);
    }
    often.links[0].advance(hour);
    once.links[0].advance(hour);
    assert_eq!(state(&often), state(&once));
    let generated: u64 = once.links[0]
        .halves
        .iter()
        .map(|h| h.stats.generated_bits)
        .sum();
    // 7,200 blocks expected; the count's standard deviation is about 85.
    assert_eq!(generated % 1000, 0);
    let blocks = generated / 1000;
    assert!(
        (7200 - 340..=7200 + 340).contains(&blocks),
        "{blocks} blocks"
    );
    assert_eq!(once.links[0].halves[0].stats.generated_bits, generated / 2);
    // Down for an hour: nothing arrives; back up: blocks again.
    once.links[0].set_up(hour, false);
    once.links[0].advance(2 * hour);
    assert_eq!(state(&once), vec![generated / 2; 2]);
    once.links[0].set_up(2 * hour, true);
    once.links[0].advance(3 * hour);
    assert!(state(&once)[0] > generated / 2 + 1_000_000);
}

/// `status` reports the key size and capacity of the route to the slave SAE, not of
/// whichever link of the KME comes first.
#[test]
fn etsi014_status_reports_the_route_of_the_slave_sae() {
    let s = streams(3);
    let f: StreamFactory<'_> = &s;
    let mut net = QkdNetwork::new();
    let a = net.add_kme("KME-A", &["gw-a"], f);
    let b = net.add_kme("KME-B", &["gw-b"], f);
    let c = net.add_kme("KME-C", &["gw-c"], f);
    net.add_link("a-b", a, b, full(10, 0), f);
    let mut big = PoolConfig::fixed(0.0, 40 * 512);
    big.key_size_bits = 512;
    big.initial_bits = 40 * 512;
    net.add_link("a-c", a, c, big, f);
    let st = body(&etsi014::status(
        &mut net,
        0,
        a,
        Limits::default(),
        "gw-a",
        "gw-c",
    ));
    assert_eq!(st["key_size"], 512);
    assert_eq!(st["max_key_count"], 20);
    assert_eq!(st["stored_key_count"], 20);
    let st = body(&etsi014::status(
        &mut net,
        0,
        a,
        Limits::default(),
        "gw-a",
        "gw-b",
    ));
    assert_eq!(st["key_size"], 256);
    assert_eq!(st["stored_key_count"], 5);
}

/// Two SAEs on one KME are both served: each draws keys for the same slave, the slave
/// fetches each one's keys, and the keys are not to be had at the masters' KME.
#[test]
fn two_saes_on_one_kme_are_each_served() {
    let mut net = pair(full(100, 0));
    let l = Limits::default();
    let call = |net: &mut QkdNetwork, kme, caller, method, path: &str, body: &str| {
        etsi014::handle(net, 0, kme, l, caller, method, path, "", body.as_bytes())
    };
    let mut ids = Vec::new();
    for master in ["gw-a", "gw-a2"] {
        let r = call(
            &mut net,
            0,
            master,
            "POST",
            "/api/v1/keys/gw-b/enc_keys",
            "{}",
        );
        assert_eq!(r.status, 200, "{master}: {:?}", r.body);
        let (id, key) = KeyContainer::decode(r.body.as_deref().unwrap())
            .unwrap()
            .remove(0);
        ids.push((master, id, key));
    }
    for (master, id, key) in &ids {
        let path = format!("/api/v1/keys/{master}/dec_keys");
        let body = format!(r#"{{"key_IDs":[{{"key_ID":"{id}"}}]}}"#);
        // The keys wait at the slave's KME only: the other SAE of KME-A finds none.
        let other = if *master == "gw-a" { "gw-a2" } else { "gw-a" };
        let wrong = format!("/api/v1/keys/{master}/dec_keys");
        assert_eq!(call(&mut net, 0, other, "POST", &wrong, &body).status, 400);
        let r = call(&mut net, 1, "gw-b", "POST", &path, &body);
        assert_eq!(r.status, 200, "{master}: {:?}", r.body);
        let (got_id, got) = KeyContainer::decode(r.body.as_deref().unwrap())
            .unwrap()
            .remove(0);
        assert_eq!((&got_id, &got), (id, key));
    }
}
