//! Two endpoints through handshakes, rekeys and Child SA changes with an attacker on
//! the path (`ikev2::testing::attack`, the harness the `hostile` proptest runs). The
//! input picks the seed (which drives the attacker's choices and the endpoints'
//! operations), the attacker's rates and whether it holds the keys. A panic or a broken
//! invariant (a datagram not counted, split keys without the keys) is a finding.
#![no_main]
use ikev2::testing::attack::{Rates, scenario};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut bytes = [0u8; 14];
    for (b, d) in bytes.iter_mut().zip(data) {
        *b = *d;
    }
    let seed = u64::from_le_bytes(bytes[..8].try_into().unwrap());
    // Rates in thousandths, up to a quarter of the datagrams each.
    let rate = |b: u8| u32::from(b) * 250 / 255;
    let rates = Rates {
        drop: rate(bytes[8]),
        duplicate: rate(bytes[9]),
        replay: rate(bytes[10]),
        modify: rate(bytes[11]),
        inject: rate(bytes[12]),
    };
    let keyed = bytes[13] & 1 == 1;
    if let Err(broken) = scenario(seed, rates, keyed) {
        panic!("seed {seed} {rates:?} keyed {keyed}: {broken}");
    }
});
