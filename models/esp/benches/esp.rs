//! ESP seal and open at 64, 1400 and 9000 bytes, beside the bare AES-256-GCM seal of
//! the same bytes measured in the same run. Run with `cargo bench -p esp`.

use std::hint::black_box;
use std::time::Instant;

use aes_gcm::aead::AeadInOut;
use aes_gcm::{Aes256Gcm, KeyInit};
use esp::{Inbound, Lifetime, NEXT_IPV4, Outbound};
use ikev2::crypto::{AeadAlg, AeadKey, RealCrypto};

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

fn main() {
    let quick = !std::env::args().any(|a| a == "--bench");
    let (iters, rounds) = if quick { (10, 1) } else { (20_000, 7) };
    let key = AeadKey::new(&[9u8; 36]);
    println!(
        "{:<24} {:>10} {:>10} {:>12} {:>7}",
        "packet", "seal ns", "open ns", "bare GCM ns", "ratio"
    );
    for size in [64usize, 1400, 9000] {
        let inner = vec![0x45u8; size];
        let mut out = Outbound::new(1, AeadAlg::AesGcm16_256, key, true, Lifetime::default());
        let mut inb = Inbound::new(1, AeadAlg::AesGcm16_256, key, true, 64, Lifetime::default());
        let seal = ns_per_op(iters, rounds, || {
            black_box(out.seal(&RealCrypto, black_box(&inner), NEXT_IPV4).unwrap());
        });
        // Open a fresh stream of packets (the replay window refuses repeats).
        let mut sender = Outbound::new(1, AeadAlg::AesGcm16_256, key, true, Lifetime::default());
        let packets: Vec<Vec<u8>> = (0..iters as usize * rounds)
            .map(|_| sender.seal(&RealCrypto, &inner, NEXT_IPV4).unwrap())
            .collect();
        let mut it = packets.into_iter();
        let open = ns_per_op(iters, rounds, || {
            let mut packet = it.next().expect("enough packets");
            black_box(inb.open_in_place(&RealCrypto, &mut packet).unwrap());
        });
        let cipher = Aes256Gcm::new_from_slice(&key[..32]).unwrap();
        let mut buf = inner.clone();
        let bare = ns_per_op(iters, rounds, || {
            black_box(
                cipher
                    .encrypt_inout_detached(&[3u8; 12].into(), &[0u8; 8], buf.as_mut_slice().into())
                    .unwrap(),
            );
        });
        println!(
            "{:<24} {seal:>10.0} {open:>10.0} {bare:>12.0} {:>6.2}x",
            format!("{size} B inner packet"),
            seal / bare
        );
    }
}
