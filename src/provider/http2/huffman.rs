//! HPACK's Huffman code (RFC 7541 Appendix B) for the HTTP/2 client.
//!
//! Decoding only: the client sends its strings raw (see `hpack`), and a
//! server may Huffman-code what it sends back. The code is canonical (the
//! codes of one length are consecutive, in symbol order), so it is decoded
//! from the code lengths alone: a string's bits are read until they form a
//! code of some length, which maps to its symbol by its distance from the
//! first code of that length. The lengths are the RFC's table, as in the
//! h2 crate (MIT); `tests` checks they give the RFC's codes.

/// The code length of each symbol 0..=255 (EOS, 256, is 30 bits of ones).
const LENGTHS: [u8; 256] = [
    13, 23, 28, 28, 28, 28, 28, 28, 28, 24, 30, 28, 28, 30, 28, 28, 28, 28, 28, 28, 28, 28, 30, 28,
    28, 28, 28, 28, 28, 28, 28, 28, 6, 10, 10, 12, 13, 6, 8, 11, 10, 10, 8, 11, 8, 6, 6, 6, 5, 5,
    5, 6, 6, 6, 6, 6, 6, 6, 7, 8, 15, 6, 12, 10, 13, 6, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7,
    7, 7, 7, 7, 7, 7, 7, 7, 8, 7, 8, 13, 19, 13, 14, 6, 15, 5, 6, 5, 6, 5, 6, 6, 6, 5, 7, 7, 6, 6,
    6, 5, 6, 7, 6, 5, 5, 6, 7, 7, 7, 7, 7, 15, 11, 14, 13, 28, 20, 22, 20, 20, 22, 22, 22, 23, 22,
    23, 23, 23, 23, 23, 24, 23, 24, 24, 22, 23, 24, 23, 23, 23, 23, 21, 22, 23, 22, 23, 23, 24, 22,
    21, 20, 22, 22, 23, 23, 21, 23, 22, 22, 24, 21, 22, 23, 23, 21, 21, 22, 21, 23, 22, 23, 23, 20,
    22, 22, 22, 23, 22, 22, 23, 26, 26, 20, 19, 22, 23, 22, 25, 26, 26, 26, 27, 27, 26, 24, 25, 19,
    21, 26, 27, 27, 26, 27, 24, 21, 21, 26, 26, 28, 27, 27, 27, 20, 24, 20, 21, 22, 21, 21, 23, 22,
    22, 25, 25, 24, 24, 26, 23, 26, 27, 26, 26, 27, 27, 27, 27, 27, 28, 27, 27, 27, 27, 27, 26,
];

/// The longest code (EOS's).
const MAX_LEN: usize = 30;

/// The canonical decoding tables, built once from [`LENGTHS`].
struct Tables {
    /// First code of each length (index = length).
    first: [u32; MAX_LEN + 1],
    /// Number of codes of each length (EOS included at 30).
    count: [u32; MAX_LEN + 1],
    /// Where each length's symbols start in `symbols`.
    offset: [u32; MAX_LEN + 1],
    /// The symbols sorted by (length, symbol); 256 is EOS.
    symbols: [u16; 257],
}

fn tables() -> &'static Tables {
    static TABLES: std::sync::OnceLock<Tables> = std::sync::OnceLock::new();
    TABLES.get_or_init(|| {
        let mut count = [0u32; MAX_LEN + 1];
        for &l in &LENGTHS {
            count[usize::from(l)] += 1;
        }
        count[MAX_LEN] += 1; // EOS
        let mut first = [0u32; MAX_LEN + 1];
        let mut offset = [0u32; MAX_LEN + 1];
        let (mut code, mut at) = (0u32, 0u32);
        for len in 1..=MAX_LEN {
            first[len] = code;
            offset[len] = at;
            code = (code + count[len]) << 1;
            at += count[len];
        }
        let mut symbols = [0u16; 257];
        let mut next = offset;
        for sym in 0..=256usize {
            let len = LENGTHS.get(sym).map_or(MAX_LEN, |&l| usize::from(l));
            symbols[next[len] as usize] = sym as u16;
            next[len] += 1;
        }
        Tables {
            first,
            count,
            offset,
            symbols,
        }
    })
}

/// Why a Huffman string does not decode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HuffmanError {
    /// The EOS symbol inside the string (RFC 7541 §5.2).
    Eos,
    /// Padding longer than 7 bits or not all ones.
    Padding,
}

/// Appends the decoding of `src` to `dst`.
pub fn decode(src: &[u8], dst: &mut Vec<u8>) -> Result<(), HuffmanError> {
    let t = tables();
    let (mut code, mut len) = (0u32, 0usize);
    for &byte in src {
        for shift in (0..8).rev() {
            code = (code << 1) | u32::from((byte >> shift) & 1);
            len += 1;
            let at = code.wrapping_sub(t.first[len]);
            if at < t.count[len] {
                let sym = t.symbols[(t.offset[len] + at) as usize];
                if sym == 256 {
                    return Err(HuffmanError::Eos);
                }
                dst.push(sym as u8);
                code = 0;
                len = 0;
            } else if len == MAX_LEN {
                // Cannot happen with a complete code; guards the tables.
                return Err(HuffmanError::Eos);
            }
        }
    }
    // What is left is padding: a prefix of EOS (all ones), under 8 bits.
    if len > 7 || code != (1u32 << len) - 1 {
        return Err(HuffmanError::Padding);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::super::hex;
    use super::*;

    /// The RFC's codes of a few symbols (Appendix B), rebuilt from the lengths.
    #[test]
    fn lengths_give_the_rfc_codes() {
        let t = tables();
        let code_of = |sym: usize| {
            let len = usize::from(LENGTHS[sym]);
            let rank = (0..sym).filter(|&s| usize::from(LENGTHS[s]) == len).count() as u32;
            (t.first[len] + rank, len)
        };
        assert_eq!(code_of(usize::from(b'0')), (0x0, 5));
        assert_eq!(code_of(usize::from(b' ')), (0x14, 6));
        assert_eq!(code_of(usize::from(b'a')), (0x3, 5));
        assert_eq!(code_of(0), (0x1ff8, 13));
        assert_eq!(code_of(255), (0x3ffffee, 26));
        assert_eq!(
            t.first[30], 0x3ffffffc,
            "10, 13, 22 and EOS share length 30"
        );
        assert_eq!(t.count[30], 4);
    }

    /// RFC 7541 Appendix C.4 and C.6.
    #[test]
    fn decodes_the_rfc_examples() {
        for (coded, plain) in [
            ("f1e3 c2e5 f23a 6ba0 ab90 f4ff", "www.example.com"),
            ("a8eb 1064 9cbf", "no-cache"),
            ("25a8 49e9 5ba9 7d7f", "custom-key"),
            ("25a8 49e9 5bb8 e8b4 bf", "custom-value"),
            ("6402", "302"),
            ("aec3 771a 4b", "private"),
        ] {
            let mut out = Vec::new();
            decode(&hex(coded), &mut out).unwrap();
            assert_eq!(String::from_utf8(out).unwrap(), plain);
        }
    }

    #[test]
    fn bad_padding_and_eos_are_refused() {
        let mut out = Vec::new();
        // '0' (00000) then three zero bits: padding must be ones.
        assert_eq!(decode(&[0b0000_0000], &mut out), Err(HuffmanError::Padding));
        // A whole byte of ones: padding longer than 7 bits.
        assert_eq!(
            decode(&[0b0000_0111, 0xff], &mut out),
            Err(HuffmanError::Padding)
        );
        // EOS itself (30 ones) inside the string.
        assert_eq!(
            decode(&[0xff, 0xff, 0xff, 0xfc], &mut out),
            Err(HuffmanError::Eos)
        );
        assert!(decode(&[], &mut out).is_ok());
    }
}
