//! The handshake between two endpoints over a virtual link: keys, fragmentation,
//! loss and retransmission, PPKs, tampering, COOKIE and INVALID_KE_PAYLOAD, deletes,
//! dead peer detection, Child SA rekeys and their collisions.

mod common;

use common::{MS, Pair, PpkSource, SEC};
use ikev2::consts::{exchange, notify};
use ikev2::endpoint::{DowngradeReason, Event, FailReason, PpkOutcome, PpkPolicy, Start};

fn established_keys(p: &Pair, i: usize) -> (&ikev2::keys::IkeKeys, &PpkOutcome, &str) {
    match p.established(i) {
        Some(Event::IkeSaEstablished {
            keys,
            ppk,
            proposal,
            ..
        }) => (keys, ppk, proposal),
        _ => panic!("side {i} not established: {:?}", p.events[i]),
    }
}

fn fail_reason(p: &Pair, i: usize) -> &FailReason {
    match p.failed(i) {
        Some((_, Event::IkeSaFailed { reason, .. })) => reason,
        _ => panic!("side {i} did not fail: {:?}", p.events[i]),
    }
}

#[test]
fn identical_keys_for_every_combination() {
    let mains = ["x25519", "mlkem768"];
    let extras: [&[&str]; 4] = [
        &[],
        &["mlkem512"],
        &["mlkem512", "mlkem768"],
        &["mlkem512", "mlkem768", "mlkem1024"],
    ];
    let policies = [
        PpkPolicy::Disabled,
        PpkPolicy::Optional,
        PpkPolicy::Required,
    ];
    let mut seed = 0;
    for main in mains {
        for extra in extras {
            for policy in policies {
                seed += 1;
                let mut proposal = format!("aes256gcm16-prfsha256-{main}");
                for (i, m) in extra.iter().enumerate() {
                    proposal += &format!("-ke{}_{m}", i + 1);
                }
                let mut p = Pair::new(seed, |_, peer| {
                    *peer = peer.clone().with_ike(&[&proposal]).unwrap();
                    peer.ppk = policy;
                });
                let source = PpkSource::with("2f1c5a4e-qkd-key-0001", &[0x42; 32]);
                p.ppk = [source.clone(), source];
                p.handshake(10 * SEC);
                let (ka, ppk_a, prop_a) = established_keys(&p, 0);
                let (kb, ppk_b, prop_b) = established_keys(&p, 1);
                assert_eq!(ka, kb, "{proposal} {policy:?}: keys differ");
                assert_eq!((prop_a, prop_b), (proposal.as_str(), proposal.as_str()));
                assert_eq!(ppk_a, ppk_b);
                let expect_ppk = policy != PpkPolicy::Disabled;
                assert_eq!(
                    matches!(ppk_a, PpkOutcome::Used { .. }),
                    expect_ppk,
                    "{ppk_a:?}"
                );
                // One IKE_INTERMEDIATE per additional key exchange, then IKE_AUTH.
                let kinds: Vec<u8> = p.exchanges(0).iter().map(|e| e.0).collect();
                let mut expect = vec![exchange::IKE_SA_INIT];
                expect.extend(extra.iter().map(|_| exchange::IKE_INTERMEDIATE));
                expect.push(exchange::IKE_AUTH);
                assert_eq!(kinds, expect);
                let (ca, cb) = (p.child(0).unwrap(), p.child(1).unwrap());
                assert_eq!(
                    (ca.encr_out.clone(), ca.encr_in.clone()),
                    (cb.encr_in.clone(), cb.encr_out.clone())
                );
                assert_eq!((ca.spi_out, ca.spi_in), (cb.spi_in, cb.spi_out));
                assert_eq!(ca.encr_out.len(), 36);
            }
        }
    }
}

#[test]
fn fragment_counts_match_the_digest() {
    // (IKE proposal, fragment size = MTU) -> fragments of the IKE_INTERMEDIATE request
    // and response, as in the digest's table (IPv4, port 500).
    for (proposal, mtu, req, resp) in [
        ("aes256gcm16-prfsha256-x25519-ke1_mlkem768", 576, 3, 3),
        ("aes256gcm16-prfsha256-x25519-ke1_mlkem768", 1280, 1, 1),
        ("aes256gcm16-prfsha256-x25519-ke1_mlkem768", 1500, 1, 1),
        ("aes256gcm16-prfsha256-x25519-ke1_mlkem1024", 576, 4, 4),
        ("aes256gcm16-prfsha256-x25519-ke1_mlkem1024", 1280, 2, 2),
        ("aes256gcm16-prfsha256-x25519-ke1_mlkem1024", 1500, 2, 2),
    ] {
        let mut p = Pair::new(3, |_, peer| {
            *peer = peer
                .clone()
                .with_ike(&[proposal])
                .unwrap()
                .fragment_size_for_mtu(mtu);
        });
        p.links[0].mtu = mtu;
        p.links[1].mtu = mtu;
        p.handshake(10 * SEC);
        established_keys(&p, 0);
        let inter: Vec<_> = p
            .exchanges(0)
            .into_iter()
            .filter(|e| e.0 == exchange::IKE_INTERMEDIATE)
            .collect();
        assert_eq!(
            inter,
            vec![(exchange::IKE_INTERMEDIATE, req, resp, 0)],
            "{proposal} at MTU {mtu}"
        );
    }
}

#[test]
fn ten_percent_loss_is_survived_by_retransmission() {
    let mut retransmitted = 0;
    for seed in 0..20 {
        let mut p = Pair::new(100 + seed, |_, peer| {
            *peer = peer
                .clone()
                .with_ike(&["aes256gcm16-prfsha256-x25519-ke1_mlkem1024"])
                .unwrap();
        });
        p.links[0].loss_ppm = 100_000;
        p.links[1].loss_ppm = 100_000;
        p.handshake(200 * SEC);
        let (ka, ..) = established_keys(&p, 0);
        assert_eq!(ka, established_keys(&p, 1).0, "seed {seed}");
        retransmitted += p.exchanges(0).iter().map(|e| e.3).sum::<u32>();
    }
    assert!(
        retransmitted > 0,
        "20 handshakes at 10 % loss without one retransmission"
    );
}

#[test]
fn total_loss_fails_when_the_backoff_says() {
    let mut p = Pair::new(5, |_, _| {});
    p.links[0].loss_ppm = 1_000_000;
    p.handshake(1000 * SEC);
    assert_eq!(
        fail_reason(&p, 0),
        &FailReason::RetransmitTimeout {
            exchange: exchange::IKE_SA_INIT
        }
    );
    // Sends at 0, 4, 11.2, 24.16, 47.488, 89.4784 s; gives up 75.58272 s later.
    assert_eq!(p.failed(0).unwrap().0, 165_061_120_000);
    assert_eq!(p.links[0].offered, 6);
    assert!(p.events[1].is_empty());
}

#[test]
fn ppk_mismatch_fails_both_sides_and_installs_nothing() {
    let mut p = Pair::new(6, |_, peer| peer.ppk = PpkPolicy::Required);
    p.ppk = [
        PpkSource::with("key-1", &[1; 32]),
        PpkSource::with("key-1", &[2; 32]),
    ];
    p.handshake(60 * SEC);
    assert_eq!(
        fail_reason(&p, 0),
        &FailReason::AuthenticationFailed { by_peer: true }
    );
    assert_eq!(
        fail_reason(&p, 1),
        &FailReason::AuthenticationFailed { by_peer: false }
    );
    assert!(p.child(0).is_none() && p.child(1).is_none());
    assert!(p.established(0).is_none() && p.established(1).is_none());
}

#[test]
fn missing_ppk_fails_when_required_and_downgrades_when_optional() {
    // The responder has no key under the ID the initiator sends.
    let mut p = Pair::new(7, |_, peer| peer.ppk = PpkPolicy::Required);
    p.ppk = [PpkSource::with("key-9", &[1; 32]), PpkSource::default()];
    p.handshake(60 * SEC);
    assert!(p.failed(0).is_some() && p.failed(1).is_some());
    assert!(p.child(1).is_none());

    let mut p = Pair::new(8, |_, peer| peer.ppk = PpkPolicy::Optional);
    p.ppk = [PpkSource::with("key-9", &[1; 32]), PpkSource::default()];
    p.handshake(60 * SEC);
    let (ka, ppk_a, _) = established_keys(&p, 0);
    let (kb, ppk_b, _) = established_keys(&p, 1);
    assert_eq!(ka, kb);
    assert_eq!(
        ppk_a,
        &PpkOutcome::Downgraded {
            reason: DowngradeReason::PeerHadNoKey
        }
    );
    assert_eq!(
        ppk_b,
        &PpkOutcome::Downgraded {
            reason: DowngradeReason::PeerHadNoKey
        }
    );

    // The initiator's own KME has nothing: optional goes on without, required stops.
    let mut p = Pair::new(9, |_, peer| peer.ppk = PpkPolicy::Optional);
    p.handshake(60 * SEC);
    assert_eq!(
        established_keys(&p, 0).1,
        &PpkOutcome::Downgraded {
            reason: DowngradeReason::NoKeyHere
        }
    );
    let mut p = Pair::new(10, |_, peer| peer.ppk = PpkPolicy::Required);
    p.handshake(60 * SEC);
    assert_eq!(fail_reason(&p, 0), &FailReason::PpkUnavailable);
}

#[test]
fn a_tampered_fragment_is_dropped_and_the_retransmission_completes() {
    let mut p = Pair::new(11, |_, peer| {
        *peer = peer
            .clone()
            .with_ike(&["aes256gcm16-prfsha256-x25519-ke1_mlkem1024"])
            .unwrap();
    });
    // Datagram 0 is IKE_SA_INIT; 1 and 2 are the two IKE_INTERMEDIATE fragments.
    p.links[0].tamper = Some(Box::new(|n, d| {
        if n == 2 {
            let at = d.len() - 20;
            d[at] ^= 0x01;
        }
    }));
    p.handshake(60 * SEC);
    established_keys(&p, 1);
    assert_eq!(p.eps[1].stats().dropped_integrity, 1);
    let inter = p
        .exchanges(0)
        .into_iter()
        .find(|e| e.0 == exchange::IKE_INTERMEDIATE)
        .unwrap();
    assert_eq!((inter.1, inter.3), (2, 1), "two fragments, resent once");

    // A tampered response: the initiator drops it, retransmits, and the responder
    // replays its cached response.
    let mut p = Pair::new(12, |_, _| {});
    p.links[1].tamper = Some(Box::new(|n, d| {
        if n == 1 {
            d[40] ^= 0x80;
        }
    }));
    p.handshake(60 * SEC);
    established_keys(&p, 0);
    assert_eq!(p.eps[0].stats().dropped_integrity, 1);
    assert_eq!(p.eps[1].stats().responses_resent, 1);
}

#[test]
fn a_busy_responder_demands_a_cookie_and_gets_it() {
    let mut p = Pair::new(13, |_, _| {});
    // Rebuild the responder with a zero threshold: every IKE_SA_INIT needs a cookie.
    let peer = p.eps[1].peers()[0].clone();
    let mut config = ikev2::endpoint::EndpointConfig::new(p.addrs[1]);
    config.cookie_threshold = 0;
    p.eps[1] = ikev2::endpoint::Endpoint::new(
        config,
        vec![peer],
        Box::new(ikev2::crypto::RealCrypto),
        Box::new(<rand_chacha::ChaCha20Rng as rand_core::SeedableRng>::seed_from_u64(99)),
    );
    p.handshake(10 * SEC);
    assert_eq!(established_keys(&p, 0).0, established_keys(&p, 1).0);
    assert_eq!(p.eps[1].stats().cookies_sent, 1);
    // The first IKE_SA_INIT was answered with the COOKIE; the exchange was restarted.
    assert_eq!(p.exchanges(0)[0].0, exchange::IKE_SA_INIT);
}

#[test]
fn invalid_ke_payload_makes_the_initiator_retry_with_the_requested_method() {
    let mut p = Pair::new(14, |i, peer| {
        let proposal = if i == 0 {
            "aes256gcm16-prfsha256-x25519-mlkem768"
        } else {
            "aes256gcm16-prfsha256-mlkem768"
        };
        *peer = peer.clone().with_ike(&[proposal]).unwrap();
    });
    p.handshake(10 * SEC);
    let (_, _, proposal) = established_keys(&p, 0);
    assert_eq!(proposal, "aes256gcm16-prfsha256-mlkem768");
    // Two IKE_SA_INIT requests went out: X25519 first, then ML-KEM-768.
    assert_eq!(p.links[0].offered, 3);
}

#[test]
fn childless_and_no_proposal() {
    let mut p = Pair::new(15, |_, peer| peer.childless = true);
    p.handshake(10 * SEC);
    established_keys(&p, 0);
    assert!(p.child(0).is_none() && p.child(1).is_none());

    // No common IKE proposal: NO_PROPOSAL_CHOSEN, and the initiator gives up at once.
    let mut p = Pair::new(16, |i, peer| {
        let proposal = if i == 0 {
            "aes256gcm16-prfsha512-x25519"
        } else {
            "aes256gcm16-prfsha256-x25519"
        };
        *peer = peer.clone().with_ike(&[proposal]).unwrap();
    });
    p.handshake(10 * SEC);
    assert_eq!(
        fail_reason(&p, 0),
        &FailReason::NoProposalChosen { by_peer: true }
    );
    assert!(p.failed(0).unwrap().0 < 100 * MS);

    // No common ESP proposal: the IKE SA comes up, the Child SA does not.
    let mut p = Pair::new(17, |i, peer| {
        let esp = if i == 0 { "aes128gcm16" } else { "aes256gcm16" };
        *peer = peer.clone().with_esp(&[esp]).unwrap();
    });
    p.handshake(10 * SEC);
    established_keys(&p, 0);
    assert!(p.events[0].iter().any(|e| matches!(
        e.1,
        Event::ChildSaFailed {
            notify: notify::NO_PROPOSAL_CHOSEN,
            ..
        }
    )));
}

#[test]
fn half_open_responder_sas_expire() {
    let mut p = Pair::new(18, |_, _| {});
    // Everything after the first IKE_SA_INIT from the initiator is lost.
    p.links[0].tamper = Some(Box::new(|n, d| {
        if n > 0 {
            d.truncate(3);
        }
    }));
    p.handshake(200 * SEC);
    assert_eq!(fail_reason(&p, 1), &FailReason::HalfOpenTimeout);
    assert_eq!(p.failed(1).unwrap().0, 30 * SEC + 10 * MS);
    assert_eq!(p.eps[1].sa_count(), 0);
}

#[test]
fn forced_encapsulation_moves_ike_to_port_4500() {
    for forcing in [0, 1] {
        let mut p = Pair::new(19, |i, peer| peer.nat_t = i == forcing);
        p.handshake(10 * SEC);
        assert_eq!(established_keys(&p, 0).0, established_keys(&p, 1).0);
        // IKE_SA_INIT from port 500; everything after it from 4500, both ways.
        assert_eq!(p.links[0].ports[0], 500);
        assert!(
            p.links[0].ports[1..].iter().all(|&port| port == 4500),
            "{:?}",
            p.links[0].ports
        );
        assert_eq!(p.links[1].ports[0], 500);
        assert!(
            p.links[1].ports[1..].iter().all(|&port| port == 4500),
            "{:?}",
            p.links[1].ports
        );
    }
}

#[test]
fn an_established_sa_is_deleted_on_both_sides() {
    let mut p = Pair::new(20, |_, _| {});
    p.handshake(10 * SEC);
    let Some(Event::IkeSaEstablished { sa, .. }) = p.established(0).cloned() else {
        panic!()
    };
    p.eps[0].delete(p.now, sa);
    while p.step() {}
    assert!(
        p.events[0]
            .iter()
            .any(|e| matches!(e.1, Event::IkeSaDeleted { by_peer: false, .. }))
    );
    assert!(
        p.events[1]
            .iter()
            .any(|e| matches!(e.1, Event::IkeSaDeleted { by_peer: true, .. }))
    );
    assert_eq!((p.eps[0].sa_count(), p.eps[1].sa_count()), (0, 0));
}

#[test]
fn dead_peer_detection_checks_a_quiet_peer_and_fails_a_dead_one() {
    let dpd = |i: usize, peer: &mut ikev2::endpoint::PeerConfig| {
        if i == 0 {
            peer.timers.dpd_delay_ns = Some(30 * SEC);
        }
    };
    // A live but quiet peer: an empty INFORMATIONAL every 30 s, each answered.
    let mut p = Pair::new(22, dpd);
    p.handshake(10 * SEC);
    while p.now < 100 * SEC && p.step() {}
    let after_auth: Vec<_> = p
        .exchanges(0)
        .into_iter()
        .skip_while(|e| e.0 != exchange::IKE_AUTH)
        .skip(1)
        .collect();
    assert_eq!(after_auth, [(exchange::INFORMATIONAL, 1, 1, 0); 3]);
    assert!(p.failed(0).is_none() && p.failed(1).is_none());
    assert!(
        p.exchanges(1)
            .iter()
            .all(|e| e.0 != exchange::INFORMATIONAL)
    );

    // A dead peer (nothing comes back): the check at 30 s is retransmitted on the usual
    // schedule and the SA fails 165.06112 s later.
    let mut p = Pair::new(22, dpd);
    p.handshake(10 * SEC);
    let heard = p.now;
    p.links[1].loss_ppm = 1_000_000;
    let offered = p.links[0].offered;
    while p.now < 1000 * SEC && p.failed(0).is_none() && p.step() {}
    assert_eq!(
        fail_reason(&p, 0),
        &FailReason::RetransmitTimeout {
            exchange: exchange::INFORMATIONAL
        }
    );
    assert_eq!(p.failed(0).unwrap().0, heard + 30 * SEC + 165_061_120_000);
    assert_eq!(p.links[0].offered - offered, 6);
}

fn rekeyed_children(p: &Pair, i: usize) -> Vec<(u32, ikev2::endpoint::ChildSa)> {
    p.events[i]
        .iter()
        .filter_map(|e| match &e.1 {
            Event::ChildSaRekeyed {
                old_spi_in, child, ..
            } => Some((*old_spi_in, child.clone())),
            _ => None,
        })
        .collect()
}

fn deleted(p: &Pair, i: usize) -> Vec<u32> {
    p.events[i]
        .iter()
        .filter_map(|e| match &e.1 {
            Event::ChildSaDeleted { spi_in, .. } => Some(*spi_in),
            _ => None,
        })
        .collect()
}

#[test]
fn child_sas_rekey_with_and_without_pfs_from_either_side() {
    for (esp, rekeyer) in [
        ("aes256gcm16", 0),
        ("aes256gcm16-x25519", 0),
        ("aes128gcm16-mlkem768", 1),
    ] {
        let mut p = Pair::new(21, |_, peer| *peer = peer.clone().with_esp(&[esp]).unwrap());
        p.handshake(10 * SEC);
        let first = [p.child(0).unwrap().clone(), p.child(1).unwrap().clone()];
        let sa = match p.events[rekeyer]
            .iter()
            .find(|e| matches!(e.1, Event::IkeSaEstablished { .. }))
            .unwrap()
            .1
        {
            Event::IkeSaEstablished { sa, .. } => sa,
            _ => unreachable!(),
        };
        p.eps[rekeyer].rekey_child(p.now, sa, first[rekeyer].spi_in);
        while p.step() {}
        let (ra, rb) = (rekeyed_children(&p, 0), rekeyed_children(&p, 1));
        assert_eq!((ra.len(), rb.len()), (1, 1), "{esp}: {:?}", p.events);
        let (a, b) = (&ra[0].1, &rb[0].1);
        // Both sides hold the same new keys, with new SPIs, and different keys than before.
        assert_eq!(
            (&a.encr_out, &a.encr_in, a.spi_out, a.spi_in),
            (&b.encr_in, &b.encr_out, b.spi_in, b.spi_out),
            "{esp}"
        );
        assert_ne!(a.encr_out, first[0].encr_out);
        assert_ne!(a.spi_in, first[0].spi_in);
        assert_eq!(
            (ra[0].0, rb[0].0),
            (first[0].spi_in, first[1].spi_in),
            "the old SA each side names"
        );
        assert_eq!(a.proposal, esp.to_string());
        // The old pair is deleted on both sides.
        assert_eq!(
            (deleted(&p, 0), deleted(&p, 1)),
            (vec![first[0].spi_in], vec![first[1].spi_in]),
            "{esp}"
        );
    }
}

#[test]
fn a_child_sa_deleted_at_its_hard_lifetime_goes_on_both_sides_and_the_ike_sa_stays() {
    let mut p = Pair::new(22, |_, _| {});
    p.handshake(10 * SEC);
    let first = p.child(1).unwrap().clone();
    let Some(Event::IkeSaEstablished { sa, .. }) = p.established(1).cloned() else {
        panic!()
    };
    assert_eq!(
        p.eps[1].delete_child(p.now, sa, first.spi_in),
        Start::Started
    );
    // One Delete at a time: a second request waits for the first.
    assert_eq!(p.eps[1].delete_child(p.now, sa, first.spi_in), Start::Busy);
    while p.step() {}
    assert_eq!(deleted(&p, 1), vec![first.spi_in]);
    assert_eq!(deleted(&p, 0), vec![first.spi_out]);
    assert!(live_children(&p, 0).is_empty() && live_children(&p, 1).is_empty());
    let Some(Event::IkeSaEstablished { sa: sa0, .. }) = p.established(0).cloned() else {
        panic!()
    };
    assert!(p.eps[0].is_established(sa0) && p.eps[1].is_established(sa));
    assert_eq!(p.eps[1].delete_child(p.now, sa, first.spi_in), Start::Gone);
}

#[test]
fn an_additional_child_sa_comes_up_with_create_child_sa_with_and_without_pfs() {
    for (esp, creator) in [("aes256gcm16", 0), ("aes128gcm16-mlkem768", 1)] {
        let mut p = Pair::new(23, |_, peer| *peer = peer.clone().with_esp(&[esp]).unwrap());
        p.handshake(10 * SEC);
        let Some(Event::IkeSaEstablished { sa, .. }) = p.established(creator).cloned() else {
            panic!()
        };
        assert_eq!(p.eps[creator].create_child(p.now, sa), Start::Started);
        while p.step() {}
        let (a, b) = (live_children(&p, 0), live_children(&p, 1));
        assert_eq!((a.len(), b.len()), (2, 2), "{esp}: {:?}", p.events[creator]);
        // The new pair matches across the sides, with its own SPIs and keys.
        let (na, nb) = (&a[1], &b[1]);
        assert_eq!(
            (na.spi_out, &na.encr_out),
            (nb.spi_in, &nb.encr_in),
            "{esp}"
        );
        assert_eq!(
            (na.spi_in, &na.encr_in),
            (nb.spi_out, &nb.encr_out),
            "{esp}"
        );
        assert_ne!(na.encr_out, a[0].encr_out);
        assert_eq!(
            (na.local_ts.clone(), na.remote_ts.clone()),
            (nb.remote_ts.clone(), nb.local_ts.clone())
        );
        // No Delete: both pairs stay.
        assert!(deleted(&p, 0).is_empty() && deleted(&p, 1).is_empty());
    }
}

/// Child SAs endpoint `i` holds at the end: made (IKE_AUTH or rekey) and not deleted.
fn live_children(p: &Pair, i: usize) -> Vec<ikev2::endpoint::ChildSa> {
    let mut live = Vec::new();
    for (_, e) in &p.events[i] {
        match e {
            Event::ChildSaReady { child, .. } | Event::ChildSaRekeyed { child, .. } => {
                live.push(child.clone())
            }
            Event::ChildSaDeleted { spi_in, .. } => live.retain(|c| c.spi_in != *spi_in),
            _ => {}
        }
    }
    live
}

#[test]
fn simultaneous_child_rekeys_leave_the_same_single_pair_on_both_sides() {
    // Which exchange wins depends on the nonces, so on the seed: see both outcomes.
    let mut winners = std::collections::BTreeSet::new();
    for seed in 30..40 {
        let mut p = Pair::new(seed, |_, peer| {
            *peer = peer.clone().with_esp(&["aes256gcm16-x25519"]).unwrap()
        });
        p.handshake(10 * SEC);
        let first = [p.child(0).unwrap().clone(), p.child(1).unwrap().clone()];
        for (i, child) in first.iter().enumerate() {
            let Some(Event::IkeSaEstablished { sa, .. }) = p.established(i).cloned() else {
                panic!()
            };
            p.eps[i].rekey_child(p.now, sa, child.spi_in);
        }
        while p.step() {}
        // Both exchanges completed on both sides, then two Deletes: the old pair and
        // the loser's new one.
        let (ra, rb) = (rekeyed_children(&p, 0), rekeyed_children(&p, 1));
        assert_eq!((ra.len(), rb.len()), (2, 2), "seed {seed}: {:?}", p.events);
        assert_eq!((deleted(&p, 0).len(), deleted(&p, 1).len()), (2, 2));
        let (a, b) = (live_children(&p, 0), live_children(&p, 1));
        assert_eq!((a.len(), b.len()), (1, 1), "seed {seed}");
        let (a, b) = (&a[0], &b[0]);
        assert_eq!(
            (&a.encr_out, &a.encr_in, a.spi_out, a.spi_in),
            (&b.encr_in, &b.encr_out, b.spi_in, b.spi_out),
            "seed {seed}"
        );
        assert_ne!(a.spi_in, first[0].spi_in);
        // Side 0 answered side 1's request before its own response came back: its
        // first rekeyed event is side 1's SA, its second its own.
        winners.insert(ra.iter().position(|r| r.1.spi_in == a.spi_in).unwrap());
    }
    assert_eq!(winners.len(), 2, "one side won every time");
}

#[test]
fn simultaneous_ike_sa_rekeys_leave_the_same_single_successor_on_both_sides() {
    // Plain and hybrid (each crossing rekey then runs its own IKE_FOLLOWUP_KE); which
    // exchange wins depends on the nonces, so on the seed: see both outcomes.
    for ike in [
        "aes256gcm16-prfsha256-x25519",
        "aes256gcm16-prfsha256-x25519-ke1_mlkem768",
    ] {
        let mut winners = std::collections::BTreeSet::new();
        for seed in 50..60 {
            let mut p = Pair::new(seed, |_, peer| {
                *peer = peer.clone().with_ike(&[ike]).unwrap()
            });
            p.handshake(10 * SEC);
            let first = [p.child(0).unwrap().clone(), p.child(1).unwrap().clone()];
            for i in 0..2 {
                let Some(Event::IkeSaEstablished { sa, .. }) = p.established(i).cloned() else {
                    panic!()
                };
                assert_eq!(p.eps[i].rekey_ike(p.now, sa), Start::Started);
            }
            while p.step() {}
            // One successor each, the same on both sides, holding the Child SA.
            assert_eq!(
                (p.eps[0].sa_count(), p.eps[1].sa_count()),
                (1, 1),
                "{ike} seed {seed}"
            );
            let rekeyed = |i: usize| {
                let r: Vec<_> = p.events[i]
                    .iter()
                    .filter_map(|e| match &e.1 {
                        Event::IkeSaRekeyed {
                            new, keys, keylog, ..
                        } => Some((*new, keys.clone(), (keylog.spi_i, keylog.spi_r))),
                        _ => None,
                    })
                    .collect();
                assert_eq!(r.len(), 1, "{ike} seed {seed} side {i}: {:?}", p.events[i]);
                r[0].clone()
            };
            let (a, b) = (rekeyed(0), rekeyed(1));
            assert_eq!((&a.1, a.2), (&b.1, b.2), "{ike} seed {seed}");
            // Both rekeys ran to the end (none refused): each side deleted the old SA
            // and the losing successor.
            for i in 0..2 {
                let ev = &p.events[i];
                assert!(
                    !ev.iter()
                        .any(|e| matches!(e.1, Event::IkeSaRekeyFailed { .. }))
                );
                let deleted = ev
                    .iter()
                    .filter(|e| matches!(e.1, Event::IkeSaDeleted { .. }))
                    .count();
                assert_eq!(deleted, 2, "{ike} seed {seed} side {i}: {ev:?}");
            }
            // Who initiated the surviving exchange: its initiator's SPI comes first.
            winners.insert(a.2.0 == a.0);
            // The Child SA lives on in the successor: rekeying it there works.
            p.eps[0].rekey_child(p.now, a.0, first[0].spi_in);
            while p.step() {}
            let (ra, rb) = (rekeyed_children(&p, 0), rekeyed_children(&p, 1));
            assert_eq!((ra.len(), rb.len()), (1, 1), "{ike} seed {seed}");
            assert_eq!(ra[0].1.encr_out, rb[0].1.encr_in);
        }
        assert_eq!(winners.len(), 2, "{ike}: one side won every time");
    }
}

#[test]
fn ike_sas_rekey_from_either_side_and_keep_their_child_sas() {
    for rekeyer in [0, 1] {
        let mut p = Pair::new(40 + rekeyer as u64, |_, peer| {
            *peer = peer
                .clone()
                .with_ike(&["aes256gcm16-prfsha256-x25519"])
                .unwrap()
                .with_esp(&["aes256gcm16-x25519"])
                .unwrap()
        });
        p.handshake(10 * SEC);
        let sa_of = |p: &Pair, i: usize| match p.established(i) {
            Some(Event::IkeSaEstablished { sa, keys, .. }) => (*sa, keys.clone()),
            _ => panic!(),
        };
        let (old, old_keys) = sa_of(&p, rekeyer);
        p.eps[rekeyer].rekey_ike(p.now, old);
        while p.step() {}
        let rekeyed = |p: &Pair, i: usize| {
            p.events[i]
                .iter()
                .find_map(|e| match &e.1 {
                    Event::IkeSaRekeyed { old, new, keys, .. } => Some((*old, *new, keys.clone())),
                    _ => None,
                })
                .unwrap_or_else(|| panic!("side {i} not rekeyed: {:?}", p.events[i]))
        };
        let (a, b) = (rekeyed(&p, 0), rekeyed(&p, 1));
        assert_eq!(a.2, b.2, "both sides derive the same new keys");
        assert_ne!(a.2, old_keys);
        assert_ne!((a.0, b.0), (a.1, b.1), "new SPIs");
        // The old IKE SA is gone on both sides; one SA each remains.
        for (i, (old, ..)) in [(0, &a), (1, &b)] {
            assert!(
                p.events[i]
                    .iter()
                    .any(|e| matches!(e.1, Event::IkeSaDeleted { sa, .. } if sa == *old)),
                "side {i}"
            );
        }
        assert_eq!((p.eps[0].sa_count(), p.eps[1].sa_count()), (1, 1));
        // The Child SA moved over: rekeying it runs on the new IKE SA (message IDs
        // from 0, keys from the new SK_d) and both sides agree.
        let first = p.child(0).unwrap().clone();
        p.eps[0].rekey_child(p.now, a.1, first.spi_in);
        while p.step() {}
        let (ra, rb) = (rekeyed_children(&p, 0), rekeyed_children(&p, 1));
        assert_eq!((ra.len(), rb.len()), (1, 1), "{:?}", p.events[0]);
        assert_eq!(
            (&ra[0].1.encr_out, ra[0].1.spi_out),
            (&rb[0].1.encr_in, rb[0].1.spi_in)
        );
        // And the new IKE SA deletes cleanly.
        p.eps[1].delete(p.now, b.1);
        while p.step() {}
        assert_eq!((p.eps[0].sa_count(), p.eps[1].sa_count()), (0, 0));
    }
}

#[test]
fn hybrid_rekeys_run_their_additional_key_exchanges_in_ike_followup_ke() {
    // IKE SA: X25519 in CREATE_CHILD_SA, ML-KEM-768 in one IKE_FOLLOWUP_KE; Child SA:
    // X25519 plus two additional key exchanges, two IKE_FOLLOWUP_KEs. Either side.
    for rekeyer in [0, 1] {
        let mut p = Pair::new(50 + rekeyer as u64, |_, peer| {
            *peer = peer
                .clone()
                .with_ike(&["aes256gcm16-prfsha256-x25519-ke1_mlkem768"])
                .unwrap()
                .with_esp(&["aes256gcm16-x25519-ke1_mlkem512-ke2_mlkem768"])
                .unwrap()
        });
        p.handshake(10 * SEC);
        let Some(Event::IkeSaEstablished { sa, .. }) = p.established(rekeyer).cloned() else {
            panic!()
        };
        assert_eq!(p.eps[rekeyer].rekey_ike(p.now, sa), Start::Started);
        while p.step() {}
        let rekeyed = |p: &Pair, i: usize| {
            p.events[i]
                .iter()
                .find_map(|e| match &e.1 {
                    Event::IkeSaRekeyed { new, keys, .. } => Some((*new, keys.clone())),
                    _ => None,
                })
                .unwrap_or_else(|| panic!("side {i} not rekeyed: {:?}", p.events[i]))
        };
        let (a, b) = (rekeyed(&p, 0), rekeyed(&p, 1));
        assert_eq!(a.1, b.1, "both sides derive the same IKE keys");
        let followups = |p: &Pair, i: usize| {
            p.exchanges(i)
                .iter()
                .filter(|e| e.0 == exchange::IKE_FOLLOWUP_KE)
                .count()
        };
        assert_eq!(followups(&p, rekeyer), 1);
        // The Child SA, rekeyed over the new IKE SA.
        let new_sa = if rekeyer == 0 { a.0 } else { b.0 };
        let child = p.child(rekeyer).unwrap().clone();
        assert_eq!(
            p.eps[rekeyer].rekey_child(p.now, new_sa, child.spi_in),
            Start::Started
        );
        while p.step() {}
        assert_eq!(followups(&p, rekeyer), 3);
        let (ra, rb) = (rekeyed_children(&p, 0), rekeyed_children(&p, 1));
        assert_eq!((ra.len(), rb.len()), (1, 1), "{:?}", p.events[rekeyer]);
        let (ca, cb) = (&ra[0].1, &rb[0].1);
        assert_eq!(
            (&ca.encr_out, &ca.encr_in, ca.spi_out),
            (&cb.encr_in, &cb.encr_out, cb.spi_in)
        );
        assert_eq!(ca.proposal, "aes256gcm16-x25519-ke1_mlkem512-ke2_mlkem768");
        assert_eq!((p.eps[0].sa_count(), p.eps[1].sa_count()), (1, 1));
    }
}

#[test]
fn a_followup_under_an_unknown_link_is_answered_state_not_found() {
    use ikev2::crypto::RealCrypto;
    use ikev2::message::{Message, Payload, encode_payloads};
    use ikev2::protect::{self, Opened};
    // A hybrid Child SA rekey: X25519 in CREATE_CHILD_SA, ML-KEM-768 in IKE_FOLLOWUP_KE,
    // unfragmented so that one datagram carries the whole request.
    let mut p = Pair::new(24, |_, peer| {
        *peer = peer
            .clone()
            .with_esp(&["aes256gcm16-x25519-ke1_mlkem768"])
            .unwrap();
        peer.fragmentation = false;
    });
    for l in &mut p.links {
        l.mtu = 9000;
    }
    p.handshake(10 * SEC);
    // The initiator's sending key of the IKE SA (its last key set).
    let entry = p.events[0]
        .iter()
        .rev()
        .find_map(|e| match &e.1 {
            Event::Keys { entry, .. } => Some(entry.clone()),
            _ => None,
        })
        .unwrap();
    // On the way, the IKE_FOLLOWUP_KE request's link gets one bit flipped, and the
    // message is sealed again with the sender's key, so only the link is wrong.
    let tampered = std::rc::Rc::new(std::cell::Cell::new(0));
    let seen = tampered.clone();
    p.links[0].tamper = Some(Box::new(move |_, d| {
        let Ok(msg) = Message::decode(d) else { return };
        if msg.header.exchange != exchange::IKE_FOLLOWUP_KE || msg.header.is_response() {
            return;
        }
        let Ok(Opened::Whole {
            header,
            first,
            inner,
        }) = protect::open(&RealCrypto, entry.aead, &entry.sk_ei, d)
        else {
            return;
        };
        let mut payloads = protect::decode_inner(first, &inner).unwrap();
        for pl in &mut payloads {
            if let Payload::Notify(n) = pl
                && n.kind == notify::ADDITIONAL_KEY_EXCHANGE
            {
                n.data[0] ^= 1;
            }
        }
        let mut inner = Vec::new();
        encode_payloads(&payloads, &mut inner);
        let mut iv = 1 << 40;
        *d = protect::seal(
            &RealCrypto,
            entry.aead,
            &entry.sk_ei,
            &mut iv,
            &header,
            first,
            &inner,
        );
        seen.set(seen.get() + 1);
    }));
    let Some(Event::IkeSaEstablished { sa, .. }) = p.established(0).cloned() else {
        panic!()
    };
    let child = p.child(0).unwrap().clone();
    assert_eq!(
        p.eps[0].rekey_child(p.now, sa, child.spi_in),
        Start::Started
    );
    while p.step() {}
    assert_eq!(tampered.get(), 1, "the request was not seen");
    // The responder knows no pending exchange under that link: STATE_NOT_FOUND, and the
    // rekey fails at the initiator; the old Child SA stays on both sides.
    assert!(
        p.events[0].iter().any(|e| matches!(
            e.1,
            Event::ChildSaFailed { notify: n, .. } if n == notify::STATE_NOT_FOUND
        )),
        "{:?}",
        p.events[0]
    );
    assert!(rekeyed_children(&p, 0).is_empty());
    assert_eq!(live_children(&p, 0).len(), 1);
}

#[test]
fn a_child_sa_already_rekeyed_by_the_peer_is_not_rekeyed_again() {
    for esp in ["aes256gcm16-x25519", "aes256gcm16-x25519-ke1_mlkem768"] {
        let mut p = Pair::new(25, |_, peer| *peer = peer.clone().with_esp(&[esp]).unwrap());
        p.handshake(10 * SEC);
        let first = [p.child(0).unwrap().clone(), p.child(1).unwrap().clone()];
        let sa = |p: &Pair, i: usize| match p.established(i) {
            Some(Event::IkeSaEstablished { sa, .. }) => *sa,
            _ => panic!(),
        };
        assert_eq!(
            p.eps[0].rekey_child(p.now, sa(&p, 0), first[0].spi_in),
            Start::Started
        );
        // Once the request has reached the responder, ask it to rekey the same pair at
        // every step until it holds the successor.
        let received = p.eps[1].stats().datagrams_received;
        let mut answers = Vec::new();
        while p.step() {
            if p.eps[1].stats().datagrams_received == received {
                continue;
            }
            let done = !rekeyed_children(&p, 1).is_empty();
            let s1 = sa(&p, 1);
            answers.push((done, p.eps[1].rekey_child(p.now, s1, first[1].spi_in)));
            if done {
                break;
            }
        }
        // Busy while the peer's IKE_FOLLOWUP_KE runs; never a second rekey once the
        // successor exists.
        assert_eq!(
            answers.last(),
            Some(&(true, Start::Gone)),
            "{esp}: {answers:?}"
        );
        assert!(
            answers.iter().all(|a| a.1 != Start::Started),
            "{esp}: {answers:?}"
        );
        if esp.contains("ke1_") {
            assert!(
                answers.iter().any(|a| a.1 == Start::Busy),
                "{esp}: {answers:?}"
            );
        }
        while p.step() {}
        assert_eq!(
            (live_children(&p, 0).len(), live_children(&p, 1).len()),
            (1, 1)
        );
    }
}

#[test]
fn a_rekey_crossing_the_peers_delete_leaves_both_sides_without_the_child_sa() {
    let mut p = Pair::new(26, |_, peer| {
        *peer = peer.clone().with_esp(&["aes256gcm16-x25519"]).unwrap()
    });
    p.handshake(10 * SEC);
    let first = [p.child(0).unwrap().clone(), p.child(1).unwrap().clone()];
    let sa = |p: &Pair, i: usize| match p.established(i) {
        Some(Event::IkeSaEstablished { sa, .. }) => *sa,
        _ => panic!(),
    };
    // At the same moment: side 0 rekeys the pair, side 1 deletes it (a hard lifetime).
    let (s0, s1) = (sa(&p, 0), sa(&p, 1));
    assert_eq!(
        p.eps[0].rekey_child(p.now, s0, first[0].spi_in),
        Start::Started
    );
    assert_eq!(
        p.eps[1].delete_child(p.now, s1, first[1].spi_in),
        Start::Started
    );
    while p.step() {}
    // The rekey is refused (the pair is being deleted), the Delete goes through: neither
    // side holds a Child SA, neither made a new one, and the IKE SA stays.
    assert!(
        p.events[0].iter().any(|e| matches!(
            e.1,
            Event::ChildSaFailed { notify: n, .. } if n == notify::TEMPORARY_FAILURE
        )),
        "{:?}",
        p.events[0]
    );
    assert!(rekeyed_children(&p, 0).is_empty() && rekeyed_children(&p, 1).is_empty());
    assert!(live_children(&p, 0).is_empty() && live_children(&p, 1).is_empty());
    assert!(p.eps[0].is_established(s0) && p.eps[1].is_established(s1));
    // A rekey of it now finds nothing to rekey.
    assert_eq!(
        p.eps[0].rekey_child(p.now, s0, first[0].spi_in),
        Start::Gone
    );
}

#[test]
fn a_response_claiming_another_exchange_is_dropped() {
    use ikev2::crypto::RealCrypto;
    use ikev2::message::Message;
    use ikev2::protect::{self, Opened};
    let mut p = Pair::new(26, |_, peer| peer.fragmentation = false);
    p.handshake(10 * SEC);
    // The responder's sending key (its last key set).
    let entry = p.events[1]
        .iter()
        .rev()
        .find_map(|e| match &e.1 {
            Event::Keys { entry, .. } => Some(entry.clone()),
            _ => None,
        })
        .unwrap();
    // Every CREATE_CHILD_SA response is sealed again with the responder's key under a
    // header that claims IKE_INTERMEDIATE: authentic, same message ID, wrong exchange.
    let tampered = std::rc::Rc::new(std::cell::Cell::new(0));
    let seen = tampered.clone();
    p.links[1].tamper = Some(Box::new(move |_, d| {
        let Ok(msg) = Message::decode(d) else { return };
        if msg.header.exchange != exchange::CREATE_CHILD_SA || !msg.header.is_response() {
            return;
        }
        let Ok(Opened::Whole {
            mut header,
            first,
            inner,
        }) = protect::open(&RealCrypto, entry.aead, &entry.sk_er, d)
        else {
            return;
        };
        header.exchange = exchange::IKE_INTERMEDIATE;
        let mut iv = 1 << 40;
        *d = protect::seal(
            &RealCrypto,
            entry.aead,
            &entry.sk_er,
            &mut iv,
            &header,
            first,
            &inner,
        );
        seen.set(seen.get() + 1);
    }));
    let Some(Event::IkeSaEstablished { sa, .. }) = p.established(0).cloned() else {
        panic!()
    };
    let child = p.child(0).unwrap().clone();
    let dropped = p.eps[0].stats().dropped_unexpected;
    assert_eq!(
        p.eps[0].rekey_child(p.now, sa, child.spi_in),
        Start::Started
    );
    while p.step() {}
    // Each answer (the first and its replays) is dropped unopened: no IKE_INTERMEDIATE
    // handling, no rekey; the request times out as if unanswered.
    assert!(tampered.get() >= 2, "responses seen: {}", tampered.get());
    assert_eq!(
        p.eps[0].stats().dropped_unexpected - dropped,
        tampered.get() as u64
    );
    assert!(
        !p.events[0]
            .iter()
            .any(|e| matches!(e.1, Event::ChildSaRekeyed { .. }))
    );
    assert_eq!(
        fail_reason(&p, 0),
        &FailReason::RetransmitTimeout {
            exchange: exchange::CREATE_CHILD_SA
        }
    );
}
