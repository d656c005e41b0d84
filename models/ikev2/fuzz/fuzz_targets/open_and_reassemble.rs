//! Any bytes through SK/SKF opening (model crypto, so the fuzzer can forge valid ICVs
//! rarely but reach the parser) and through the reassembler.
#![no_main]
use ikev2::crypto::{AeadAlg, ModelCrypto};
use ikev2::protect::{self, Opened, Reassembler};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut r = Reassembler::default();
    for (i, chunk) in data.split(|&b| b == 0xff).enumerate() {
        if let Ok(Opened::Fragment {
            header,
            number,
            total,
            first,
            chunk,
        }) = protect::open(&ModelCrypto, AeadAlg::AesGcm16_256, &[0; 36], chunk)
        {
            let _ = r.insert(i as u64, header, number, total, first, chunk);
        }
        if chunk.len() >= 6 {
            let n = u16::from_be_bytes([chunk[0], chunk[1]]);
            let t = u16::from_be_bytes([chunk[2], chunk[3]]);
            let h = ikev2::Header {
                spi_i: 1,
                spi_r: 2,
                exchange: chunk[4],
                flags: 0,
                message_id: chunk[5] as u32,
            };
            let _ = r.insert(i as u64 * 1_000_000_000, h, n, t, 0, chunk[6..].to_vec());
        }
    }
});
