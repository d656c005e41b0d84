//! IKE_SA_INIT sizes against their arithmetic: one proposal, a 32-byte nonce, and the
//! fragmentation and IKE_INTERMEDIATE notifies (header 28, SA payload, KE 8 + key
//! share, Nonce 4 + 32, each notify 8).

use ikev2::consts::{exchange, flags, notify};
use ikev2::crypto::KeMethod;
use ikev2::message::{Header, Message, Notify, Payload};
use ikev2::proposal::ProposalSpec;

fn ike_sa_init(proposal: &str, method: KeMethod, response: bool) -> Vec<u8> {
    let p = ProposalSpec::parse_ike(proposal).unwrap();
    let ke_len = if response {
        method.responder_len()
    } else {
        method.initiator_len()
    };
    Message {
        header: Header {
            spi_i: 0x0102_0304_0506_0708,
            spi_r: if response { 9 } else { 0 },
            exchange: exchange::IKE_SA_INIT,
            flags: if response {
                flags::RESPONSE
            } else {
                flags::INITIATOR
            },
            message_id: 0,
        },
        payloads: vec![
            Payload::Sa(vec![p.to_wire(1, vec![])]),
            Payload::Ke {
                method: method.id(),
                data: vec![0; ke_len],
            },
            Payload::Nonce(vec![0; 32]),
            Payload::Notify(Notify::new(notify::IKEV2_FRAGMENTATION_SUPPORTED, vec![])),
            Payload::Notify(Notify::new(notify::INTERMEDIATE_EXCHANGE_SUPPORTED, vec![])),
        ],
    }
    .encode()
}

#[test]
fn ike_sa_init_sizes_match_the_arithmetic() {
    for (proposal, method, request, response) in [
        (
            "aes256gcm16-prfsha256-x25519-ke1_mlkem768",
            KeMethod::X25519,
            168,
            168,
        ),
        (
            "aes256gcm16-prfsha256-mlkem512",
            KeMethod::MlKem512,
            928,
            896,
        ),
        (
            "aes256gcm16-prfsha256-mlkem768",
            KeMethod::MlKem768,
            1312,
            1216,
        ),
        (
            "aes256gcm16-prfsha256-mlkem1024",
            KeMethod::MlKem1024,
            1696,
            1696,
        ),
    ] {
        assert_eq!(
            ike_sa_init(proposal, method, false).len(),
            request,
            "{proposal} request"
        );
        assert_eq!(
            ike_sa_init(proposal, method, true).len(),
            response,
            "{proposal} response"
        );
    }
}
