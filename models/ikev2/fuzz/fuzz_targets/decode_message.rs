//! Any bytes: decoding never panics, and whatever decodes re-encodes to the same bytes
//! when it was canonical.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(m) = ikev2::Message::decode(data) {
        let again = m.encode();
        assert_eq!(again.len(), data.len());
        assert_eq!(ikev2::Message::decode(&again).as_ref(), Ok(&m));
    }
    let _ = ikev2::message::decode_payloads(
        data.first().copied().unwrap_or(0),
        data.get(1..).unwrap_or(&[]),
        0,
    );
});
