//! Two endpoints through handshakes, rekeys, new and deleted Child SAs while an attacker
//! on the path drops, duplicates, replays, modifies and injects datagrams. In half the
//! cases it holds the keys of every IKE SA (read from the keylog as the endpoints
//! derive them) and seals its changes again, so they pass the ICV and reach the
//! exchanges: payloads dropped, duplicated, reordered, notify data and types, nonces,
//! key shares, message IDs, exchange types, SPIs and flags changed. Never a panic;
//! every datagram delivered is counted as received; without the keys, no two ends of
//! an IKE or Child SA hold different keys. A fixed case budget keeps it in CI.

use ikev2::endpoint::Event;
use ikev2::testing::attack::{Rates, scenario};
use proptest::prelude::*;

fn rates() -> impl Strategy<Value = Rates> {
    (0u32..150, 0u32..100, 0u32..100, 0u32..200, 0u32..100).prop_map(
        |(drop, duplicate, replay, modify, inject)| Rates {
            drop,
            duplicate,
            replay,
            modify,
            inject,
        },
    )
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn an_attacker_on_the_path_cannot_crash_an_endpoint_or_split_its_keys(
        seed in 0u64..1_000_000_000,
        rates in rates(),
        keyed in any::<bool>(),
    ) {
        scenario(seed, rates, keyed).map_err(TestCaseError::fail)?;
    }
}

/// The attacker acts at all: a heavy case makes the endpoints reject and count
/// messages, and retransmit.
#[test]
fn the_attacker_is_felt() {
    let rates = Rates {
        drop: 100,
        duplicate: 100,
        replay: 100,
        modify: 200,
        inject: 100,
    };
    for keyed in [false, true] {
        let p = scenario(7, rates, keyed).unwrap();
        let (s0, s1) = (p.eps[0].stats(), p.eps[1].stats());
        let rejected = |s: &ikev2::endpoint::EndpointStats| {
            s.dropped_malformed
                + s.dropped_integrity
                + s.dropped_unexpected
                + s.dropped_unknown_spi
                + s.init_errors_held
        };
        assert!(rejected(s0) + rejected(s1) > 10, "{s0:?} {s1:?}");
        assert!(s0.retransmissions + s1.retransmissions > 0, "{s0:?} {s1:?}");
    }
}

/// Without an attacker the same script establishes, rekeys and adds Child SAs: the
/// cases above exercise those exchanges, not only a handshake.
#[test]
fn without_an_attacker_the_script_runs_every_exchange() {
    let none = Rates {
        drop: 0,
        duplicate: 0,
        replay: 0,
        modify: 0,
        inject: 0,
    };
    let p = scenario(11, none, false).unwrap();
    let count = |f: fn(&Event) -> bool| {
        (0..2)
            .map(|i| p.events[i].iter().filter(|e| f(&e.1)).count())
            .sum::<usize>()
    };
    assert_eq!(count(|e| matches!(e, Event::IkeSaEstablished { .. })), 2);
    assert!(
        count(|e| matches!(e, Event::IkeSaRekeyed { .. })) >= 2,
        "{:?}",
        p.events[0]
    );
    assert!(count(|e| matches!(e, Event::ChildSaRekeyed { .. } | Event::ChildSaReady { .. })) >= 4);
    assert!(p.failed(0).is_none() && p.failed(1).is_none());
}
