//! A streaming base64 decoder for parts sent with `Content-Transfer-Encoding: base64`.
//! It keeps at most three pending characters between chunks and skips line breaks.

use base64::Engine as _;

#[derive(Default)]
pub struct Base64Decoder {
    pending: Vec<u8>,
}

impl Base64Decoder {
    pub fn decode_chunk(&mut self, chunk: &[u8]) -> Result<Vec<u8>, base64::DecodeError> {
        self.pending.extend(chunk.iter().copied().filter(|b| !b.is_ascii_whitespace()));
        let usable = self.pending.len() / 4 * 4;
        let out = base64::engine::general_purpose::STANDARD.decode(&self.pending[..usable])?;
        self.pending.drain(..usable);
        Ok(out)
    }

    pub fn finish(self) -> Result<Vec<u8>, base64::DecodeError> {
        if self.pending.is_empty() {
            return Ok(Vec::new());
        }
        base64::engine::general_purpose::STANDARD.decode(&self.pending)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    proptest::proptest! {
        #[test]
        fn matches_whole_decoding(data in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..300), split in 1usize..50) {
            let encoded = base64::engine::general_purpose::STANDARD.encode(&data);
            let wrapped: Vec<u8> = encoded.as_bytes().chunks(76).flat_map(|l| l.iter().copied().chain(*b"\r\n")).collect();
            let mut decoder = Base64Decoder::default();
            let mut out = Vec::new();
            for chunk in wrapped.chunks(split) {
                out.extend(decoder.decode_chunk(chunk).unwrap());
            }
            out.extend(decoder.finish().unwrap());
            proptest::prop_assert_eq!(out, data);
        }
    }
}
