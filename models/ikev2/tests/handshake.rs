//! The handshake between two endpoints over a virtual link: keys, fragmentation,
//! loss and retransmission, PPKs, tampering, COOKIE and INVALID_KE_PAYLOAD, deletes,
//! dead peer detection. (Exchanges after the handshake are in `rekeys.rs`.)

use ikev2::consts::{exchange, notify};
use ikev2::endpoint::{DowngradeReason, Event, FailReason, PpkOutcome, PpkPolicy};
use ikev2::testing::{MS, Pair, PpkSource, SEC, established_keys, fail_reason, key_set, reseal};

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
                assert_eq!((ca.encr_out, ca.encr_in), (cb.encr_in, cb.encr_out));
                assert_eq!((ca.spi_out, ca.spi_in), (cb.spi_in, cb.spi_out));
                assert_eq!(ca.encr_out.len(), 36);
            }
        }
    }
}

#[test]
fn fragment_counts_match_the_arithmetic() {
    // (IKE proposal, fragment size = MTU) -> fragments of the IKE_INTERMEDIATE request
    // and response (IPv4, port 500): each SKF fragment carries at most MTU - 20 - 8 -
    // 61 bytes of the inner payloads (SKF overhead: 28 + 8 + 8 + 1 + 16).
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
    let sent = std::rc::Rc::new(std::cell::RefCell::new(Vec::new()));
    let log = sent.clone();
    p.links[0].tamper = Some(Box::new(move |_, d| log.borrow_mut().push(d.clone())));
    p.handshake(10 * SEC);
    assert_eq!(established_keys(&p, 0).0, established_keys(&p, 1).0);
    assert_eq!(p.eps[1].stats().cookies_sent, 1);
    // The first IKE_SA_INIT was answered with the COOKIE; the exchange was restarted.
    assert_eq!(p.exchanges(0)[0].0, exchange::IKE_SA_INIT);
    // RFC 7296 2.6: the retry is the COOKIE first and every other payload unchanged
    // (the same key share and nonce).
    let sent = sent.borrow();
    let decode = |d: &[u8]| ikev2::message::Message::decode(d).unwrap().payloads;
    let (first, retry) = (decode(&sent[0]), decode(&sent[1]));
    assert!(
        matches!(&retry[0], ikev2::message::Payload::Notify(n) if n.kind == ikev2::consts::notify::COOKIE)
    );
    assert_eq!(retry[1..], first[..]);
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

    // No common IKE proposal: NO_PROPOSAL_CHOSEN, and the initiator gives up when its
    // first retransmission is due (4 s), not after every retransmission (165 s).
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
    assert_eq!(p.failed(0).unwrap().0, 4 * SEC);
    assert_eq!(p.eps[0].stats().init_errors_held, 1);
    assert_eq!(p.links[0].offered, 1, "no retransmission");

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

#[test]
fn an_empty_ppk_identity_is_refused_cleanly() {
    use ikev2::message::{Message, Payload};
    // X25519 only and no fragmentation, so IKE_AUTH is one message under the first keys;
    // a first run with the same seed learns them.
    let setup = || {
        let mut p = Pair::new(31, |_, peer| {
            *peer = peer
                .clone()
                .with_ike(&["aes256gcm16-prfsha256-x25519"])
                .unwrap();
            peer.fragmentation = false;
            peer.ppk = PpkPolicy::Optional;
        });
        p.ppk = [
            PpkSource::with("key-1", &[1; 32]),
            PpkSource::with("key-1", &[1; 32]),
        ];
        p
    };
    let mut learn = setup();
    learn.handshake(10 * SEC);
    let entry = key_set(&learn, 0, false);
    // On the way, the initiator's PPK_IDENTITY loses its data (sealed again with the
    // initiator's key, so only that is wrong).
    let mut p = setup();
    p.links[0].tamper = Some(Box::new(move |_, d| {
        let Ok(msg) = Message::decode(d) else { return };
        if msg.header.exchange != exchange::IKE_AUTH || msg.header.is_response() {
            return;
        }
        reseal(d, entry.aead, &entry.sk_ei, |_, payloads| {
            for pl in payloads.iter_mut() {
                if let Payload::Notify(n) = pl
                    && n.kind == notify::PPK_IDENTITY
                {
                    n.data.clear();
                }
            }
        });
    }));
    p.handshake(10 * SEC);
    // The responder neither panics nor takes the empty ID for a key: without a usable
    // PPK ID, only NO_PPK_AUTH (optional policy) can bring the SA up, downgraded.
    let (_, ppk, _) = established_keys(&p, 1);
    assert!(matches!(ppk, PpkOutcome::Downgraded { .. }), "{ppk:?}");
}

#[test]
fn a_required_responder_refuses_an_initiator_without_ppk_support() {
    // The initiator has PPKs off (sends no USE_PPK); the responder requires one.
    let mut p = Pair::new(32, |i, peer| {
        peer.ppk = [PpkPolicy::Disabled, PpkPolicy::Required][i];
    });
    p.ppk = [PpkSource::default(), PpkSource::with("key-1", &[1; 32])];
    p.handshake(10 * SEC);
    assert_eq!(
        fail_reason(&p, 0),
        &FailReason::AuthenticationFailed { by_peer: true }
    );
    assert_eq!(
        fail_reason(&p, 1),
        &FailReason::AuthenticationFailed { by_peer: false }
    );
    assert!(p.established(1).is_none());
}

#[test]
fn a_responder_that_moved_to_port_4500_forgets_its_sa_entirely() {
    // With UDP encapsulation forced, the responder's SA moves to port 4500 after
    // IKE_SA_INIT; once deleted, nothing of it may stay behind: the same IKE_SA_INIT
    // again is a new request, not a retransmission of a gone SA.
    let mut p = Pair::new(33, |i, peer| peer.nat_t = i == 0);
    let first = std::rc::Rc::new(std::cell::RefCell::new(Vec::new()));
    let keep = first.clone();
    p.links[0].tamper = Some(Box::new(move |n, d| {
        if n == 0 {
            *keep.borrow_mut() = d.clone();
        }
    }));
    p.handshake(10 * SEC);
    let Some(Event::IkeSaEstablished { sa, .. }) = p.established(0).cloned() else {
        panic!()
    };
    p.eps[0].delete(p.now, sa);
    while p.step() {}
    assert_eq!(p.eps[1].sa_count(), 0);
    let dropped = p.eps[1].stats().dropped_unexpected;
    let init = first.borrow().clone();
    p.eps[1].handle_datagram(p.now, p.addrs[0], &init);
    assert_eq!(p.eps[1].stats().dropped_unexpected, dropped);
    assert_eq!(p.eps[1].sa_count(), 1, "answered as a new IKE_SA_INIT");
}

#[test]
fn an_unknown_critical_payload_is_answered_not_ignored() {
    use ikev2::message::{Message, Payload};
    let unknown = Payload::Other {
        kind: 200,
        critical: true,
        body: vec![],
    };
    // In IKE_SA_INIT: the responder answers UNSUPPORTED_CRITICAL_PAYLOAD at once, and
    // the initiator gives up on it when its first retransmission is due (the answer is
    // unauthenticated, so it waits that long for a valid one) instead of
    // retransmitting into silence.
    let mut p = Pair::new(34, |_, _| {});
    let extra = unknown.clone();
    p.links[0].tamper = Some(Box::new(move |n, d| {
        if n == 0 {
            let mut m = Message::decode(d).unwrap();
            m.payloads.push(extra.clone());
            *d = m.encode();
        }
    }));
    p.handshake(10 * SEC);
    assert_eq!(
        fail_reason(&p, 0),
        &FailReason::PeerError {
            notify: notify::UNSUPPORTED_CRITICAL_PAYLOAD
        }
    );
    assert_eq!(p.failed(0).unwrap().0, 4 * SEC);
    // Inside SK, in an INFORMATIONAL request of an established SA: refused, and the
    // IKE SA goes on at both ends.
    let mut p = Pair::new(35, |_, peer| {
        *peer = peer
            .clone()
            .with_ike(&["aes256gcm16-prfsha256-x25519"])
            .unwrap();
        peer.fragmentation = false;
    });
    p.handshake(10 * SEC);
    let entry = key_set(&p, 0, true);
    p.links[0].tamper = Some(Box::new(move |_, d| {
        let Ok(msg) = Message::decode(d) else { return };
        if msg.header.exchange != exchange::INFORMATIONAL || msg.header.is_response() {
            return;
        }
        reseal(d, entry.aead, &entry.sk_ei, |_, payloads| {
            payloads.push(unknown.clone())
        });
    }));
    let Some(Event::IkeSaEstablished { sa, .. }) = p.established(0).cloned() else {
        panic!()
    };
    p.eps[0].check_liveness(p.now, sa);
    for _ in 0..20 {
        p.step();
    }
    assert!(p.failed(0).is_none() && p.failed(1).is_none());
    assert_eq!((p.eps[0].sa_count(), p.eps[1].sa_count()), (1, 1));
    assert!(p.eps[1].stats().dropped_malformed == 0);
}

#[test]
fn esn_is_negotiated_into_the_child_sa() {
    for (esp, esn) in [("aes256gcm16-esn", true), ("aes256gcm16", false)] {
        let mut p = Pair::new(36, |_, peer| *peer = peer.clone().with_esp(&[esp]).unwrap());
        p.handshake(10 * SEC);
        assert_eq!(
            (p.child(0).unwrap().esn, p.child(1).unwrap().esn),
            (esn, esn),
            "{esp}"
        );
    }
}

#[test]
fn a_child_sa_error_in_ike_auth_leaves_the_ike_sa_up() {
    use ikev2::message::{Message, Notify, Payload};
    for kind in [
        notify::SINGLE_PAIR_REQUIRED,
        notify::INTERNAL_ADDRESS_FAILURE,
        notify::FAILED_CP_REQUIRED,
    ] {
        let setup = || {
            Pair::new(37, |_, peer| {
                *peer = peer
                    .clone()
                    .with_ike(&["aes256gcm16-prfsha256-x25519"])
                    .unwrap();
                peer.fragmentation = false;
            })
        };
        let mut learn = setup();
        learn.handshake(10 * SEC);
        let entry = key_set(&learn, 1, false);
        // The responder's IKE_AUTH response loses its Child SA and says `kind` instead.
        let mut p = setup();
        p.links[1].tamper = Some(Box::new(move |_, d| {
            let Ok(msg) = Message::decode(d) else { return };
            if msg.header.exchange != exchange::IKE_AUTH || !msg.header.is_response() {
                return;
            }
            reseal(d, entry.aead, &entry.sk_er, |_, payloads| {
                payloads.retain(|p| matches!(p, Payload::IdR { .. } | Payload::Auth { .. }));
                payloads.push(Payload::Notify(Notify::new(kind, vec![])));
            });
        }));
        p.handshake(10 * SEC);
        // The initiator has its IKE SA (the responder's AUTH still verifies), without a
        // Child SA, and reports why.
        assert!(p.established(0).is_some(), "{kind}: {:?}", p.events[0]);
        assert!(p.failed(0).is_none());
        assert!(
            p.events[0]
                .iter()
                .any(|e| matches!(e.1, Event::ChildSaFailed { notify: n, .. } if n == kind)),
            "{kind}"
        );
    }
}

#[test]
fn a_forged_refusal_of_ike_sa_init_does_not_stop_the_real_answer() {
    use ikev2::message::{Message, Notify, Payload};
    // An attacker on the path answers the initiator's IKE_SA_INIT first, with
    // NO_PROPOSAL_CHOSEN; the real response comes 20 ms later and is used (RFC 7296
    // 2.21.1), and the handshake completes.
    let mut p = Pair::new(36, |_, _| {});
    let request = std::rc::Rc::new(std::cell::RefCell::new(Vec::new()));
    let seen = request.clone();
    p.links[0].tamper = Some(Box::new(move |n, d| {
        if n == 0 {
            *seen.borrow_mut() = d.clone();
        }
    }));
    p.eps[0].initiate(p.now, 0);
    p.step();
    let mut forged = Message::decode(&request.borrow()).unwrap();
    forged.header.flags = ikev2::consts::flags::RESPONSE;
    forged.header.spi_r = 0x0bad_0bad_0bad_0bad;
    forged.payloads = vec![Payload::Notify(Notify::new(
        notify::NO_PROPOSAL_CHOSEN,
        vec![],
    ))];
    let (now, from) = (p.now, p.addrs[1]);
    p.eps[0].handle_datagram(now, from, &forged.encode());
    while p.now < 10 * SEC && !(p.done(0) && p.done(1)) {
        if !p.step() {
            break;
        }
    }
    established_keys(&p, 0);
    assert!(p.failed(0).is_none());
    assert_eq!(p.eps[0].stats().init_errors_held, 1);
}

#[test]
fn an_unprotected_copy_of_an_answered_request_is_counted_not_answered() {
    use ikev2::consts::flags;
    use ikev2::message::{Header, Message, Notify, Payload};
    // After IKE_AUTH the responder keeps its answer for retransmissions;
    // a message with that ID but no SK payload is no retransmission: it is refused and
    // counted, and nothing is sent.
    let mut p = Pair::new(37, |_, _| {});
    p.handshake(10 * SEC);
    established_keys(&p, 1);
    let k = key_set(&p, 1, false);
    // IKE_AUTH's message ID: the initiator's exchanges so far, less one.
    let auth_mid = p.exchanges(0).len() as u32 - 1;
    let forged = Message {
        header: Header {
            spi_i: k.spi_i,
            spi_r: k.spi_r,
            exchange: exchange::IKE_AUTH,
            flags: flags::INITIATOR,
            message_id: auth_mid,
        },
        payloads: vec![Payload::Notify(Notify::new(
            notify::AUTHENTICATION_FAILED,
            vec![],
        ))],
    };
    let before = p.eps[1].stats().clone();
    let (now, from) = (p.now, p.addrs[0]);
    p.eps[1].handle_datagram(now, from, &forged.encode());
    let after = p.eps[1].stats();
    assert_eq!(
        after.dropped_malformed,
        before.dropped_malformed + 1,
        "{before:?} {after:?}"
    );
    assert_eq!(after.responses_resent, before.responses_resent);
    assert!(p.eps[1].poll_transmit().is_none());
}
