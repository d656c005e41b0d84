//! Cost of the IKEv2 crypto paths, each beside a baseline measured in the same run:
//! - SK seal/open at 64, 1400 and 9000 bytes against the bare aes-gcm call;
//! - IKE SA key derivation against the same number of bare HMAC-SHA256 calls;
//! - all crypto of one hybrid handshake (X25519 + ML-KEM-768 + PSK, both peers) with
//!   the real provider against the model provider (the speed-up a sweep gains).
//!
//! Run with `cargo bench -p ikev2`; the ratios are the figures to compare.

use std::hint::black_box;
use std::time::Instant;

use aes_gcm::aead::AeadInOut;
use aes_gcm::{Aes256Gcm, KeyInit};
use hmac::{Hmac, Mac};
use ikev2::consts::{exchange, flags, payload_type as pt};
use ikev2::crypto::{AeadAlg, CryptoProvider, KeMethod, ModelCrypto, PrfAlg, RealCrypto, Suite};
use ikev2::keys::{IkeKeys, IntAuth, SaIdentity, SignedOctets, psk_auth};
use ikev2::message::{Header, Payload, encode_payloads};
use ikev2::protect;
use rand_core::SeedableRng;
use sha2::Sha256;

const SUITE: Suite = Suite {
    prf: PrfAlg::HmacSha256,
    aead: AeadAlg::AesGcm16_256,
};

/// Median nanoseconds per call over `rounds` rounds of `iters` calls.
fn ns_per_op(iters: u32, rounds: usize, mut f: impl FnMut()) -> f64 {
    let mut v: Vec<f64> = (0..rounds)
        .map(|_| {
            let t = Instant::now();
            for _ in 0..iters {
                f();
            }
            t.elapsed().as_nanos() as f64 / iters as f64
        })
        .collect();
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn row(name: &str, ours: f64, base: f64, base_name: &str) {
    println!(
        "{name:<44} {:>10.0} ns   {base_name:<22} {:>10.0} ns   {:>5.2}x",
        ours,
        base,
        ours / base
    );
}

fn header() -> Header {
    Header {
        spi_i: 1,
        spi_r: 2,
        exchange: exchange::IKE_AUTH,
        flags: flags::INITIATOR,
        message_id: 1,
    }
}

/// Every cryptographic step of one hybrid handshake, both peers: key exchanges, key
/// derivation with one RFC 9370 update, IntAuth, PSK AUTH both ways, and sealing and
/// opening the IKE_INTERMEDIATE and IKE_AUTH messages.
fn handshake(c: &dyn CryptoProvider, rng: &mut rand_chacha::ChaCha20Rng) -> Vec<u8> {
    let (ni, nr) = ([1u8; 32], [2u8; 32]);
    let id = SaIdentity {
        ni: &ni,
        nr: &nr,
        spi_i: 1,
        spi_r: 2,
    };
    // IKE_SA_INIT: X25519.
    let (xi, xpub) = c.ke_initiate(KeMethod::X25519, rng);
    let (xr, ss_r) = c.ke_respond(KeMethod::X25519, &xpub, rng).unwrap();
    let ss_i = c.ke_complete(xi, &xr).unwrap();
    let (k0_i, k0_r) = (
        IkeKeys::initial(c, SUITE, &ss_i, id),
        IkeKeys::initial(c, SUITE, &ss_r, id),
    );
    // IKE_INTERMEDIATE: ML-KEM-768, sealed both ways.
    let (dk, ek) = c.ke_initiate(KeMethod::MlKem768, rng);
    let mut h = header();
    h.exchange = exchange::IKE_INTERMEDIATE;
    let mut req = Vec::new();
    encode_payloads(
        &[Payload::Ke {
            method: 36,
            data: ek,
        }],
        &mut req,
    );
    let mut iv = 0;
    let wire = protect::seal(c, SUITE.aead, &k0_i.sk_ei, &mut iv, &h, pt::KE, &req);
    let protect::Opened::Whole { inner, .. } =
        protect::open(c, SUITE.aead, &k0_r.sk_ei, &wire).unwrap()
    else {
        unreachable!()
    };
    let Payload::Ke { data, .. } = &protect::decode_inner(pt::KE, &inner).unwrap()[0] else {
        unreachable!()
    };
    let (ct, kem_r) = c.ke_respond(KeMethod::MlKem768, data, rng).unwrap();
    let mut resp = Vec::new();
    encode_payloads(
        &[Payload::Ke {
            method: 36,
            data: ct,
        }],
        &mut resp,
    );
    let wire = protect::seal(c, SUITE.aead, &k0_r.sk_er, &mut iv, &h, pt::KE, &resp);
    let protect::Opened::Whole { inner, .. } =
        protect::open(c, SUITE.aead, &k0_i.sk_er, &wire).unwrap()
    else {
        unreachable!()
    };
    let Payload::Ke { data, .. } = &protect::decode_inner(pt::KE, &inner).unwrap()[0] else {
        unreachable!()
    };
    let kem_i = c.ke_complete(dk, data).unwrap();
    let mut ia = IntAuth::default();
    for (k, _) in [(&k0_i, 0), (&k0_r, 1)] {
        ia.add_exchange(
            c,
            SUITE.prf,
            &k.sk_pi,
            &k.sk_pr,
            &protect::intauth_input(&h, pt::KE, &req),
            &protect::intauth_input(&h, pt::KE, &resp),
        );
    }
    let (k1_i, k1_r) = (
        k0_i.after_additional_ke(c, SUITE, &kem_i, id),
        k0_r.after_additional_ke(c, SUITE, &kem_r, id),
    );
    // IKE_AUTH: each side computes its AUTH and checks the peer's; ~250-byte messages.
    let int_auth = ia.for_auth(2);
    let o = SignedOctets {
        real_message: &[0u8; 168],
        peer_nonce: &nr,
        id_rest: b"\x02\x00\x00\x00gw-a",
        int_auth: &int_auth,
    };
    let mut out = Vec::new();
    for k in [&k1_i, &k1_r] {
        out.extend(psk_auth(c, SUITE.prf, b"secret", &k.sk_pi, o));
        out.extend(psk_auth(c, SUITE.prf, b"secret", &k.sk_pr, o));
    }
    for (seal_key, open_key) in [(&k1_i.sk_ei, &k1_r.sk_ei), (&k1_r.sk_er, &k1_i.sk_er)] {
        let wire = protect::seal(
            c,
            SUITE.aead,
            seal_key,
            &mut iv,
            &header(),
            pt::IDI,
            &[0u8; 250],
        );
        protect::open(c, SUITE.aead, open_key, &wire).unwrap();
    }
    out
}

fn main() {
    let quick = !std::env::args().any(|a| a == "--bench");
    let (iters, rounds) = if quick { (10, 1) } else { (2000, 7) };
    let c = RealCrypto;
    println!(
        "{:<44} {:>13}   {:<22} {:>13}   {:>6}",
        "operation", "ours", "baseline", "", "ratio"
    );

    let key = [7u8; 36];
    for size in [64usize, 1400, 9000] {
        let inner = vec![0xabu8; size];
        let mut iv = 0;
        let sealed = protect::seal(
            &c,
            AeadAlg::AesGcm16_256,
            &key,
            &mut iv,
            &header(),
            pt::IDI,
            &inner,
        );
        let seal = ns_per_op(iters, rounds, || {
            black_box(protect::seal(
                &c,
                AeadAlg::AesGcm16_256,
                &key,
                &mut iv,
                &header(),
                pt::IDI,
                black_box(&inner),
            ));
        });
        let open = ns_per_op(iters, rounds, || {
            black_box(protect::open(&c, AeadAlg::AesGcm16_256, &key, black_box(&sealed)).unwrap());
        });
        let cipher = Aes256Gcm::new_from_slice(&key[..32]).unwrap();
        let mut buf = inner.clone();
        let bare = ns_per_op(iters, rounds, || {
            let nonce = [1u8; 12];
            black_box(
                cipher
                    .encrypt_inout_detached(&nonce.into(), &[0u8; 32], buf.as_mut_slice().into())
                    .unwrap(),
            );
        });
        row(
            &format!("SK seal, {size} B inner payloads"),
            seal,
            bare,
            "bare AES-256-GCM seal",
        );
        row(
            &format!("SK open, {size} B inner payloads"),
            open,
            bare,
            "bare AES-256-GCM seal",
        );
    }

    let id = SaIdentity {
        ni: &[1; 32],
        nr: &[2; 32],
        spi_i: 1,
        spi_r: 2,
    };
    let derive = ns_per_op(iters, rounds, || {
        let k = IkeKeys::initial(&c, SUITE, black_box(&[9; 32]), id);
        black_box(k.after_additional_ke(&c, SUITE, &[8; 32], id));
    });
    // SKEYSEED plus 6 prf+ blocks, twice: 14 HMAC-SHA256 computations.
    let bare_hmac = ns_per_op(iters, rounds, || {
        for _ in 0..14 {
            let mut m = <Hmac<Sha256> as KeyInit>::new_from_slice(&[3u8; 32]).unwrap();
            m.update(black_box(&[5u8; 80]));
            black_box(m.finalize());
        }
    });
    row(
        "IKE keys: initial + one RFC 9370 update",
        derive,
        bare_hmac,
        "14 bare HMAC-SHA256",
    );

    let mut rng = rand_chacha::ChaCha20Rng::seed_from_u64(1);
    let hs_iters = if quick { 2 } else { 300 };
    let real = ns_per_op(hs_iters, rounds, || {
        black_box(handshake(&RealCrypto, &mut rng));
    });
    let model = ns_per_op(hs_iters, rounds, || {
        black_box(handshake(&ModelCrypto, &mut rng));
    });
    row(
        "hybrid handshake crypto, both peers (real)",
        real,
        model,
        "same with model crypto",
    );
    println!(
        "=> real crypto allows about {:.0} handshakes per second per core",
        1e9 / real
    );
}
