//! Round trips, byte-exact encodings and typed errors of the codec.

use super::*;
use crate::consts::{exchange, flags, notify};
use proptest::prelude::*;

fn hex(s: &str) -> Vec<u8> {
    let s: String = s.split_whitespace().collect();
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

#[test]
fn encodes_a_hybrid_proposal_byte_for_byte() {
    // AES-GCM-16/256, PRF SHA2-256, X25519, ADDKE1 = ML-KEM-768 (RFC 7296 section
    // 3.3, RFC 9370 section 2.2.1: ADDKE1 is transform type 6).
    let p = Proposal {
        number: 1,
        protocol: 1,
        spi: vec![],
        transforms: vec![
            Transform {
                kind: 1,
                id: 20,
                attributes: vec![Attribute::Tv {
                    kind: 14,
                    value: 256,
                }],
            },
            Transform::new(2, 5),
            Transform::new(4, 31),
            Transform::new(6, 36),
        ],
    };
    let mut out = Vec::new();
    Payload::Sa(vec![p.clone()]).emit(0, &mut out);
    assert_eq!(
        out[4..],
        hex(
            "00 00 00 2C 01 01 00 04  03 00 00 0C 01 00 00 14 80 0E 01 00
             03 00 00 08 02 00 00 05  03 00 00 08 04 00 00 1F  00 00 00 08 06 00 00 24"
        )[..]
    );
    let mut n = Vec::new();
    Payload::Notify(Notify::new(notify::IKEV2_FRAGMENTATION_SUPPORTED, vec![])).emit(0, &mut n);
    assert_eq!(n, hex("00 00 00 08 00 00 40 2E"));
}

fn sample() -> Message {
    Message {
        header: Header {
            spi_i: 0x0102030405060708,
            spi_r: 0,
            exchange: exchange::IKE_SA_INIT,
            flags: flags::INITIATOR,
            message_id: 0,
        },
        payloads: vec![
            Payload::Ke {
                method: 31,
                data: vec![9; 32],
            },
            Payload::Nonce(vec![7; 32]),
            Payload::Notify(Notify::new(notify::USE_PPK, vec![])),
            Payload::Other {
                kind: 200,
                critical: false,
                body: vec![1, 2, 3],
            },
        ],
    }
}

#[test]
fn round_trips_and_reports_errors_with_offsets() {
    let m = sample();
    let bytes = m.encode();
    assert_eq!(bytes.len(), 28 + 40 + 36 + 8 + 7);
    assert_eq!(Message::decode(&bytes).unwrap(), m);

    // Truncated message: the Length field no longer matches.
    let e = Message::decode(&bytes[..bytes.len() - 1]).unwrap_err();
    assert_eq!((e.offset, e.context), (24, "IKE header"));

    // An unknown payload marked critical.
    let mut crit = bytes.clone();
    let unknown_at = bytes.len() - 7;
    crit[unknown_at + 1] = 0x80;
    let e = Message::decode(&crit).unwrap_err();
    assert_eq!(e.kind, DecodeErrorKind::UnsupportedCriticalPayload(200));
    assert_eq!(e.offset, unknown_at);

    // A payload length running past the end.
    let mut long = bytes.clone();
    long[28 + 3] = 200;
    let e = Message::decode(&long).unwrap_err();
    assert!(matches!(e.kind, DecodeErrorKind::Truncated { .. }), "{e}");
    assert_eq!(e.context, "KE payload");

    // IKEv1 or IKEv3 headers are refused.
    let mut v3 = bytes.clone();
    v3[17] = 0x30;
    assert_eq!(
        Message::decode(&v3).unwrap_err().kind,
        DecodeErrorKind::UnsupportedMajorVersion(3)
    );
}

#[test]
fn sk_must_be_last() {
    let mut m = sample();
    m.payloads = vec![Payload::Sk {
        first: pt::IDI,
        body: vec![0; 40],
    }];
    let mut bytes = m.encode();
    assert_eq!(Message::decode(&bytes).unwrap(), m);
    // Bytes after SK (whose Next Payload names the inner chain) are rejected.
    bytes.extend_from_slice(&[0, 0, 0, 4]);
    let len = bytes.len() as u32;
    bytes[24..28].copy_from_slice(&len.to_be_bytes());
    assert_eq!(
        Message::decode(&bytes).unwrap_err().kind,
        DecodeErrorKind::TrailingBytes(4)
    );
}

fn bytes_up_to(n: usize) -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(any::<u8>(), 0..n)
}

fn selector() -> impl Strategy<Value = TrafficSelector> {
    (
        any::<u8>(),
        any::<u16>(),
        any::<u16>(),
        any::<bool>(),
        any::<[u8; 16]>(),
        any::<[u8; 16]>(),
    )
        .prop_map(|(proto, sp, ep, v6, a, b)| {
            let (start, end) = if v6 {
                (IpAddr::from(a), IpAddr::from(b))
            } else {
                (
                    IpAddr::from(<[u8; 4]>::try_from(&a[..4]).unwrap()),
                    IpAddr::from(<[u8; 4]>::try_from(&b[..4]).unwrap()),
                )
            };
            TrafficSelector {
                ip_protocol: proto,
                start_port: sp,
                end_port: ep,
                start,
                end,
            }
        })
}

fn transform() -> impl Strategy<Value = Transform> {
    let attr = prop_oneof![
        (0u16..0x8000, any::<u16>()).prop_map(|(kind, value)| Attribute::Tv { kind, value }),
        (0u16..0x8000, bytes_up_to(8)).prop_map(|(kind, value)| Attribute::Tlv { kind, value }),
    ];
    (any::<u8>(), any::<u16>(), prop::collection::vec(attr, 0..3)).prop_map(
        |(kind, id, attributes)| Transform {
            kind,
            id,
            attributes,
        },
    )
}

fn proposal() -> impl Strategy<Value = Proposal> {
    (
        any::<u8>(),
        any::<u8>(),
        bytes_up_to(9),
        prop::collection::vec(transform(), 0..6),
    )
        .prop_map(|(number, protocol, spi, transforms)| Proposal {
            number,
            protocol,
            spi,
            transforms,
        })
}

fn payload() -> impl Strategy<Value = Payload> {
    prop_oneof![
        prop::collection::vec(proposal(), 1..4).prop_map(Payload::Sa),
        (any::<u16>(), bytes_up_to(64)).prop_map(|(method, data)| Payload::Ke { method, data }),
        bytes_up_to(64).prop_map(Payload::Nonce),
        (any::<u8>(), bytes_up_to(9), any::<u16>(), bytes_up_to(32)).prop_map(
            |(protocol, spi, kind, data)| Payload::Notify(Notify {
                protocol,
                spi,
                kind,
                data
            })
        ),
        (any::<u8>(), 0u8..9, 0usize..4).prop_flat_map(|(protocol, size, n)| {
            prop::collection::vec(prop::collection::vec(any::<u8>(), size as usize), n).prop_map(
                move |spis| Payload::Delete {
                    protocol,
                    spi_size: size,
                    spis,
                },
            )
        }),
        (any::<u8>(), bytes_up_to(32)).prop_map(|(id_type, data)| Payload::IdI { id_type, data }),
        (any::<u8>(), bytes_up_to(32)).prop_map(|(id_type, data)| Payload::IdR { id_type, data }),
        (any::<u8>(), bytes_up_to(64)).prop_map(|(method, data)| Payload::Auth { method, data }),
        prop::collection::vec(selector(), 0..4).prop_map(Payload::TsI),
        prop::collection::vec(selector(), 0..4).prop_map(Payload::TsR),
        bytes_up_to(32).prop_map(Payload::VendorId),
        (
            prop_oneof![Just(37u8), Just(38), Just(47), Just(48), 54u8..=255],
            any::<bool>(),
            bytes_up_to(16)
        )
            .prop_map(|(kind, c, body)| Payload::Other {
                kind,
                critical: c && is_defined_type(kind),
                body
            }),
    ]
}

fn message() -> impl Strategy<Value = Message> {
    let encrypted = prop_oneof![
        Just(None),
        (any::<u8>(), bytes_up_to(64)).prop_map(|(first, body)| Some(Payload::Sk { first, body })),
        (any::<u8>(), 1u16..10, 0u16..10, bytes_up_to(64)).prop_map(|(first, n, extra, body)| {
            Some(Payload::Skf {
                first,
                number: n,
                total: n + extra,
                body,
            })
        }),
    ];
    (
        any::<(u64, u64, u8, u8, u32)>(),
        prop::collection::vec(payload(), 0..6),
        encrypted,
    )
        .prop_map(
            |((spi_i, spi_r, exchange, flags, message_id), mut payloads, enc)| {
                payloads.extend(enc);
                Message {
                    header: Header {
                        spi_i,
                        spi_r,
                        exchange,
                        flags,
                        message_id,
                    },
                    payloads,
                }
            },
        )
}

proptest! {
    #[test]
    fn every_message_round_trips(m in message()) {
        let bytes = m.encode();
        let back = Message::decode(&bytes).unwrap();
        prop_assert_eq!(&back, &m);
        prop_assert_eq!(back.encode(), bytes);
    }

    #[test]
    fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..400)) {
        if let Ok(m) = Message::decode(&bytes) {
            // Whatever decodes re-encodes to the same length.
            prop_assert_eq!(m.encode().len(), bytes.len());
        }
    }

    #[test]
    fn mutated_messages_never_panic(m in message(), at in any::<prop::sample::Index>(), v in any::<u8>()) {
        let mut bytes = m.encode();
        let i = at.index(bytes.len());
        bytes[i] = v;
        let _ = Message::decode(&bytes);
    }
}
