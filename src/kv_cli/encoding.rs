//! How `kv` reads keys and values from its arguments and writes them out:
//! as text (the default), hex, or base64, so binary data can pass through a
//! shell and into JSON.

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use bytes::Bytes;

/// The encoding of keys and values on the command line and in output.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Encoding {
    /// Bytes as they are; text output writes them raw.
    #[default]
    Text,
    /// Lowercase hexadecimal, two digits a byte.
    Hex,
    /// Standard base64 with padding.
    Base64,
}

impl Encoding {
    /// The bytes an argument stands for.
    pub fn decode(self, text: &str) -> Result<Bytes, String> {
        match self {
            Encoding::Text => Ok(Bytes::copy_from_slice(text.as_bytes())),
            Encoding::Hex => decode_hex(text).map(Bytes::from),
            Encoding::Base64 => BASE64
                .decode(text)
                .map(Bytes::from)
                .map_err(|e| format!("{text:?} is not base64: {e}")),
        }
    }

    /// `bytes` as text for a terminal or JSON. Text encoding needs UTF-8 for
    /// JSON; raw output goes through [`Encoding::raw`] instead.
    pub fn encode(self, bytes: &[u8]) -> Result<String, String> {
        match self {
            Encoding::Text => String::from_utf8(bytes.to_vec()).map_err(|_| {
                "a key or value is binary (not UTF-8): use --hex or --base64".to_owned()
            }),
            Encoding::Hex => Ok(bytes.iter().map(|b| format!("{b:02x}")).collect()),
            Encoding::Base64 => Ok(BASE64.encode(bytes)),
        }
    }

    /// `bytes` for plain output: raw bytes for text, else encoded.
    pub fn raw(self, bytes: &[u8]) -> Vec<u8> {
        match self {
            Encoding::Text => bytes.to_vec(),
            other => other.encode(bytes).unwrap_or_default().into_bytes(),
        }
    }
}

fn decode_hex(text: &str) -> Result<Vec<u8>, String> {
    if !text.len().is_multiple_of(2) {
        return Err(format!("{text:?} is not hex: odd number of digits"));
    }
    (0..text.len())
        .step_by(2)
        .map(|at| {
            text.get(at..at + 2)
                .and_then(|pair| u8::from_str_radix(pair, 16).ok())
                .ok_or_else(|| format!("{text:?} is not hex"))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_encoding_round_trips_binary() {
        let bytes = [0u8, 1, 0x7f, 0x80, 0xff];
        for encoding in [Encoding::Hex, Encoding::Base64] {
            let text = encoding.encode(&bytes).unwrap();
            assert_eq!(
                encoding.decode(&text).unwrap(),
                Bytes::copy_from_slice(&bytes)
            );
        }
        assert_eq!(Encoding::Hex.encode(&bytes).unwrap(), "00017f80ff");
        assert!(Encoding::Text.encode(&bytes).is_err());
        assert!(Encoding::Hex.decode("abc").is_err());
        assert!(Encoding::Hex.decode("zz").is_err());
        assert!(Encoding::Base64.decode("***").is_err());
    }
}
