//! Lower-case hexadecimal, the text form of every id, hash and key.

use crate::error::Error;

/// Encodes bytes as lower-case hex.
pub fn encode(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut text = String::with_capacity(bytes.len() * 2);
    let digit = |nibble: u8| char::from(*DIGITS.get(usize::from(nibble)).unwrap_or(&b'?'));
    for byte in bytes {
        text.push(digit(byte >> 4));
        text.push(digit(byte & 0x0f));
    }
    text
}

/// Decodes hex (either case) into bytes.
pub fn decode(text: &str) -> Result<Vec<u8>, Error> {
    let digits = text.as_bytes();
    if !digits.len().is_multiple_of(2) {
        return Err(Error::Hex {
            reason: "odd number of digits",
        });
    }
    digits
        .chunks_exact(2)
        .map(|pair| match pair {
            [high, low] => Ok((nibble(*high)? << 4) | nibble(*low)?),
            _ => Err(Error::Hex {
                reason: "odd number of digits",
            }),
        })
        .collect()
}

/// Decodes exactly `N` bytes of hex.
pub fn decode_array<const N: usize>(text: &str) -> Result<[u8; N], Error> {
    let bytes = decode(text)?;
    <[u8; N]>::try_from(bytes.as_slice()).map_err(|_| Error::Hex {
        reason: "wrong number of digits",
    })
}

fn nibble(digit: u8) -> Result<u8, Error> {
    match digit {
        b'0'..=b'9' => Ok(digit - b'0'),
        b'a'..=b'f' => Ok(digit - b'a' + 10),
        b'A'..=b'F' => Ok(digit - b'A' + 10),
        _ => Err(Error::Hex {
            reason: "not a hex digit",
        }),
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn hex_round_trips(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
            prop_assert_eq!(super::decode(&super::encode(&bytes)).unwrap(), bytes);
        }

        #[test]
        fn hex_decode_never_panics(text in ".{0,40}") {
            let _ = super::decode(&text);
        }
    }

    #[test]
    fn hex_rejects_bad_digits() {
        assert!(super::decode("0g").is_err());
        assert!(super::decode("abc").is_err());
        assert!(super::decode_array::<2>("abcdef").is_err());
        assert_eq!(super::decode("00FFa0").unwrap(), vec![0x00, 0xff, 0xa0]);
    }
}
