//! The static Huffman code of HPACK (RFC 7541 §5.2 and Appendix B).
//!
//! The code is canonical: codes of equal length are consecutive in symbol
//! order and every length continues where the previous one stopped. So the
//! code lengths alone define it, and all tables below are derived from them
//! at compile time (no start-up cost, no lazy initialisation on a hot path).

/// Why a Huffman-coded string literal was rejected (RFC 7541 §5.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum HuffmanError {
    #[error("the EOS symbol appears inside the string")]
    Eos,
    #[error("the padding is longer than 7 bits")]
    PaddingTooLong,
    #[error("the padding is not the most significant bits of EOS (all ones)")]
    PaddingNotOnes,
}

/// Length in bits of the code of each symbol: bytes 0..=255, then EOS (256).
/// Transcribed from the `len` column of RFC 7541 Appendix B.
#[rustfmt::skip]
const CODE_LENGTHS: [u8; 257] = [
    // 0x00..=0x0f
    13, 23, 28, 28, 28, 28, 28, 28, 28, 24, 30, 28, 28, 30, 28, 28,
    // 0x10..=0x1f
    28, 28, 28, 28, 28, 28, 30, 28, 28, 28, 28, 28, 28, 28, 28, 28,
    // ' ' ! " # $ % & ' ( ) * + , - . /
     6, 10, 10, 12, 13,  6,  8, 11, 10, 10,  8, 11,  8,  6,  6,  6,
    // 0 1 2 3 4 5 6 7 8 9 : ; < = > ?
     5,  5,  5,  6,  6,  6,  6,  6,  6,  6,  7,  8, 15,  6, 12, 10,
    // @ A B C D E F G H I J K L M N O
    13,  6,  7,  7,  7,  7,  7,  7,  7,  7,  7,  7,  7,  7,  7,  7,
    // P Q R S T U V W X Y Z [ \ ] ^ _
     7,  7,  7,  7,  7,  7,  7,  7,  8,  7,  8, 13, 19, 13, 14,  6,
    // ` a b c d e f g h i j k l m n o
    15,  5,  6,  5,  6,  5,  6,  6,  6,  5,  7,  7,  6,  6,  6,  5,
    // p q r s t u v w x y z { | } ~ DEL
     6,  7,  6,  5,  5,  6,  7,  7,  7,  7,  7, 15, 11, 14, 13, 28,
    // 0x80..=0x8f
    20, 22, 20, 20, 22, 22, 22, 23, 22, 23, 23, 23, 23, 23, 24, 23,
    // 0x90..=0x9f
    24, 24, 22, 23, 24, 23, 23, 23, 23, 21, 22, 23, 22, 23, 23, 24,
    // 0xa0..=0xaf
    22, 21, 20, 22, 22, 23, 23, 21, 23, 22, 22, 24, 21, 22, 23, 23,
    // 0xb0..=0xbf
    21, 21, 22, 21, 23, 22, 23, 23, 20, 22, 22, 22, 23, 22, 22, 23,
    // 0xc0..=0xcf
    26, 26, 20, 19, 22, 23, 22, 25, 26, 26, 26, 27, 27, 26, 24, 25,
    // 0xd0..=0xdf
    19, 21, 26, 27, 27, 26, 27, 24, 21, 21, 26, 26, 28, 27, 27, 27,
    // 0xe0..=0xef
    20, 24, 20, 21, 22, 21, 21, 23, 22, 22, 25, 25, 24, 24, 26, 23,
    // 0xf0..=0xff
    26, 27, 26, 26, 27, 27, 27, 27, 27, 28, 27, 27, 27, 27, 27, 26,
    // EOS
    30,
];

const EOS: u16 = 256;
const MAX_LEN: usize = 30;
/// Bits resolved by one lookup in `Tables::primary`: every code of 10 bits
/// or fewer, which covers letters, digits and the usual header punctuation.
const PRIMARY_BITS: u32 = 10;

struct Tables {
    /// Code of each symbol, right-aligned.
    codes: [u32; 257],
    /// Symbols in canonical order: by code length, then by symbol.
    sorted: [u16; 257],
    /// First (smallest) code of each length, right-aligned.
    first: [u32; MAX_LEN + 1],
    /// Position in `sorted` of the first symbol of each length.
    offset: [u16; MAX_LEN + 1],
    /// Exclusive upper bound of the 32-bit windows (next input bits,
    /// MSB first) that start with a code of this length or shorter. Canonical
    /// codes make this increasing, so a window's code length is the smallest
    /// length whose limit exceeds it. u64 because the last limit is 2^32.
    limit: [u64; MAX_LEN + 1],
    /// Indexed by the next PRIMARY_BITS input bits: `len << 9 | symbol` for
    /// codes that short, 0 when the code is longer.
    primary: [u16; 1 << PRIMARY_BITS],
}

static TABLES: Tables = build_tables();

const fn build_tables() -> Tables {
    let mut count = [0u16; MAX_LEN + 1];
    let mut s = 0;
    while s < CODE_LENGTHS.len() {
        count[CODE_LENGTHS[s] as usize] += 1;
        s += 1;
    }

    let mut first = [0u32; MAX_LEN + 1];
    let mut offset = [0u16; MAX_LEN + 1];
    let mut limit = [0u64; MAX_LEN + 1];
    let mut code: u64 = 0;
    let mut off = 0u16;
    let mut len = 1;
    while len <= MAX_LEN {
        first[len] = code as u32;
        offset[len] = off;
        code += count[len] as u64;
        off += count[len];
        limit[len] = code << (32 - len);
        code <<= 1;
        len += 1;
    }
    // A complete prefix code uses up the whole code space: the longest
    // codes end exactly at all ones. A transcription error in
    // CODE_LENGTHS almost surely breaks this and fails the build.
    assert!(limit[MAX_LEN] == 1 << 32);

    let mut sorted = [0u16; 257];
    let mut codes = [0u32; 257];
    let mut next = offset;
    s = 0;
    while s < CODE_LENGTHS.len() {
        let l = CODE_LENGTHS[s] as usize;
        let i = next[l];
        sorted[i as usize] = s as u16;
        codes[s] = first[l] + (i - offset[l]) as u32;
        next[l] += 1;
        s += 1;
    }

    let mut primary = [0u16; 1 << PRIMARY_BITS];
    s = 0;
    while s < CODE_LENGTHS.len() {
        let l = CODE_LENGTHS[s] as u32;
        if l <= PRIMARY_BITS {
            let start = (codes[s] << (PRIMARY_BITS - l)) as usize;
            let n = 1usize << (PRIMARY_BITS - l);
            let mut k = 0;
            while k < n {
                primary[start + k] = ((l as u16) << 9) | s as u16;
                k += 1;
            }
        }
        s += 1;
    }

    Tables {
        codes,
        sorted,
        first,
        offset,
        limit,
        primary,
    }
}

/// Symbol and code length of the code at the head of `window` (the next 32
/// input bits, MSB first).
#[inline]
fn lookup(window: u64) -> (u16, u32) {
    let t = &TABLES;
    let head = (window >> (32 - PRIMARY_BITS)) as usize;
    if let Some(&e) = t.primary.get(head)
        && e != 0
    {
        return (e & 0x1ff, u32::from(e >> 9));
    }
    for len in PRIMARY_BITS as usize + 1..=MAX_LEN {
        if window < t.limit[len] {
            let code = (window >> (32 - len)) as u32;
            let i = usize::from(t.offset[len]) + code.wrapping_sub(t.first[len]) as usize;
            // Always in range by construction; EOS turns a broken invariant
            // into a rejected string rather than a panic.
            let sym = t.sorted.get(i).copied().unwrap_or(EOS);
            return (sym, len as u32);
        }
    }
    // limit[MAX_LEN] is 2^32, above any 32-bit window.
    (EOS, MAX_LEN as u32)
}

/// Decodes the Huffman-coded string `src`, appending the bytes to `dst`.
pub fn decode(src: &[u8], dst: &mut Vec<u8>) -> Result<(), HuffmanError> {
    // The shortest code has 5 bits: one reservation is enough.
    dst.reserve(src.len() * 8 / 5);
    let mut bytes = src.iter();
    // Input bits not yet consumed are the low `nbits` bits of `acc`; bits
    // above them are stale and masked off when reading.
    let mut acc: u64 = 0;
    let mut nbits: u32 = 0;
    loop {
        while nbits <= 56 {
            match bytes.next() {
                Some(&b) => {
                    acc = (acc << 8) | u64::from(b);
                    nbits += 8;
                }
                None => break,
            }
        }
        if nbits == 0 {
            return Ok(());
        }
        // Near the end, fill the window with ones: the code found is then
        // longer than the remaining input exactly when that input is not a
        // whole code, i.e. when it can only be padding.
        let window = if nbits >= 32 {
            (acc >> (nbits - 32)) & 0xffff_ffff
        } else {
            ((acc << (32 - nbits)) | ((1u64 << (32 - nbits)) - 1)) & 0xffff_ffff
        };
        let (sym, len) = lookup(window);
        if len > nbits {
            let rest = (1u64 << nbits) - 1;
            if acc & rest != rest {
                return Err(HuffmanError::PaddingNotOnes);
            }
            if nbits > 7 {
                return Err(HuffmanError::PaddingTooLong);
            }
            return Ok(());
        }
        if sym == EOS {
            return Err(HuffmanError::Eos);
        }
        dst.push(sym as u8);
        nbits -= len;
    }
}

/// Huffman-codes `src`, appending the result (padded with ones) to `dst`.
#[cfg_attr(not(test), allow(dead_code))]
pub fn encode(src: &[u8], dst: &mut Vec<u8>) {
    dst.reserve(encoded_len(src));
    let mut acc: u64 = 0;
    let mut nbits: u32 = 0;
    for &b in src {
        let len = u32::from(CODE_LENGTHS[usize::from(b)]);
        // Fewer than 8 pending bits plus at most 30 new ones: no bit of
        // interest is shifted out of the u64.
        acc = (acc << len) | u64::from(TABLES.codes[usize::from(b)]);
        nbits += len;
        while nbits >= 8 {
            nbits -= 8;
            dst.push((acc >> nbits) as u8);
        }
    }
    if nbits > 0 {
        dst.push(((acc << (8 - nbits)) as u8) | (0xff >> nbits));
    }
}

/// Length in bytes of `src` once Huffman-coded.
#[cfg_attr(not(test), allow(dead_code))]
pub fn encoded_len(src: &[u8]) -> usize {
    let bits: usize = src
        .iter()
        .map(|&b| usize::from(CODE_LENGTHS[usize::from(b)]))
        .sum();
    bits.div_ceil(8)
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;

    fn unhex(s: &str) -> Vec<u8> {
        let digits: Vec<u8> = s.bytes().filter(|b| !b.is_ascii_whitespace()).collect();
        digits
            .chunks(2)
            .map(|p| u8::from_str_radix(std::str::from_utf8(p).unwrap(), 16).unwrap())
            .collect()
    }

    fn encoded(src: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        encode(src, &mut out);
        out
    }

    fn decoded(src: &[u8]) -> Result<Vec<u8>, HuffmanError> {
        let mut out = Vec::new();
        decode(src, &mut out).map(|()| out)
    }

    /// Packs (code, length) pairs MSB first, padding the last byte with ones
    /// or zeros.
    fn pack(codes: &[(u64, u32)], pad_ones: bool) -> Vec<u8> {
        let mut bits: Vec<bool> = Vec::new();
        for &(code, len) in codes {
            for i in (0..len).rev() {
                bits.push(code >> i & 1 == 1);
            }
        }
        while !bits.len().is_multiple_of(8) {
            bits.push(pad_ones);
        }
        bits.chunks(8)
            .map(|c| c.iter().fold(0u8, |a, &b| a << 1 | u8::from(b)))
            .collect()
    }

    /// A seeded xorshift64* for the randomised tests here and in `hpack`.
    pub(in crate::downstream::h2) struct Rng(pub(in crate::downstream::h2) u64);
    impl Rng {
        pub(in crate::downstream::h2) fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
        }
        pub(in crate::downstream::h2) fn below(&mut self, n: u64) -> u64 {
            self.next() % n
        }
    }

    #[test]
    fn known_codes_from_appendix_b() {
        let cases: &[(usize, u32, u8)] = &[
            (b'0' as usize, 0b00000, 5),
            (b'a' as usize, 0b00011, 5),
            (b't' as usize, 0x9, 5),
            (b' ' as usize, 0b010100, 6),
            (b':' as usize, 0x5c, 7),
            (b'X' as usize, 0xfc, 8),
            (b'!' as usize, 0x3f8, 10),
            (b'|' as usize, 0x7fc, 11),
            (b'<' as usize, 0x7ffc, 15),
            (b'\\' as usize, 0x7fff0, 19),
            (0, 0x1ff8, 13),
            (1, 0x7f_ffd8, 23),
            (9, 0xff_ffea, 24),
            (10, 0x3fff_fffc, 30),
            (22, 0x3fff_fffe, 30),
            (127, 0xfff_fffc, 28),
            (128, 0xf_ffe6, 20),
            (199, 0x1ff_ffec, 25),
            (203, 0x7ff_ffde, 27),
            (249, 0xfff_fffe, 28),
            (255, 0x3ff_ffee, 26),
            (256, 0x3fff_ffff, 30),
        ];
        for &(sym, code, len) in cases {
            assert_eq!(TABLES.codes[sym], code, "code of symbol {sym}");
            assert_eq!(CODE_LENGTHS[sym], len, "length of symbol {sym}");
        }
    }

    #[test]
    fn primary_table_agrees_with_slow_path() {
        for (sym, &len) in CODE_LENGTHS.iter().enumerate() {
            let len = u32::from(len);
            let window = u64::from(TABLES.codes[sym]) << (32 - len);
            assert_eq!(lookup(window), (sym as u16, len), "symbol {sym}");
            // Any following bits must not change the result.
            let tail = (1u64 << (32 - len)) - 1;
            assert_eq!(lookup(window | tail), (sym as u16, len), "symbol {sym}");
        }
    }

    #[test]
    fn rfc7541_appendix_c_strings() {
        let cases: &[(&str, &str)] = &[
            ("www.example.com", "f1e3 c2e5 f23a 6ba0 ab90 f4ff"),
            ("no-cache", "a8eb 1064 9cbf"),
            ("custom-key", "25a8 49e9 5ba9 7d7f"),
            ("custom-value", "25a8 49e9 5bb8 e8b4 bf"),
            ("302", "6402"),
            ("307", "640e ff"),
            ("private", "aec3 771a 4b"),
            (
                "Mon, 21 Oct 2013 20:13:21 GMT",
                "d07a be94 1054 d444 a820 0595 040b 8166 e082 a62d 1bff",
            ),
            (
                "https://www.example.com",
                "9d29 ad17 1863 c78f 0b97 c8e9 ae82 ae43 d3",
            ),
            ("gzip", "9bd9 ab"),
            (
                "foo=ASDJKHQKBZXOQWEOPIUAXQWEOIU; max-age=3600; version=1",
                "94e7 821d d7f2 e6c7 b335 dfdf cd5b 3960 d5af 2708 7f36 72c1 \
                 ab27 0fb5 291f 9587 3160 65c0 03ed 4ee5 b106 3d50 07",
            ),
        ];
        for &(text, hex) in cases {
            let code = unhex(hex);
            assert_eq!(encoded(text.as_bytes()), code, "encoding {text:?}");
            assert_eq!(encoded_len(text.as_bytes()), code.len(), "{text:?}");
            assert_eq!(
                decoded(&code).unwrap(),
                text.as_bytes(),
                "decoding {text:?}"
            );
        }
    }

    #[test]
    fn round_trip_every_byte() {
        for b in 0..=255u8 {
            let code = encoded(&[b]);
            assert_eq!(code.len(), encoded_len(&[b]));
            assert_eq!(decoded(&code).unwrap(), [b], "byte {b}");
        }
        let all: Vec<u8> = (0..=255u8).collect();
        let code = encoded(&all);
        assert_eq!(code.len(), encoded_len(&all));
        assert_eq!(decoded(&code).unwrap(), all);
    }

    #[test]
    fn round_trip_random_strings() {
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        for _ in 0..2000 {
            let len = (rng.next() % 200) as usize;
            // Half ASCII text, half arbitrary bytes (long codes).
            let ascii = rng.next().is_multiple_of(2);
            let src: Vec<u8> = (0..len)
                .map(|_| {
                    let r = rng.next() as u8;
                    if ascii { b' ' + r % 95 } else { r }
                })
                .collect();
            let code = encoded(&src);
            assert_eq!(code.len(), encoded_len(&src));
            assert_eq!(decoded(&code).unwrap(), src);
        }
    }

    #[test]
    fn decode_appends() {
        let mut out = b"ab".to_vec();
        decode(&unhex("6402"), &mut out).unwrap();
        assert_eq!(out, b"ab302");
        decode(&[], &mut out).unwrap();
        assert_eq!(out, b"ab302");
    }

    #[test]
    fn rejects_eos() {
        let eos = (0x3fff_ffff, 30);
        let a = (0b00011, 5);
        assert_eq!(decoded(&pack(&[eos], true)), Err(HuffmanError::Eos));
        assert_eq!(decoded(&pack(&[a, eos], true)), Err(HuffmanError::Eos));
        assert_eq!(decoded(&pack(&[a, eos, a], true)), Err(HuffmanError::Eos));
        assert_eq!(decoded(&[0xff; 4]), Err(HuffmanError::Eos));
    }

    #[test]
    fn rejects_long_padding() {
        // 8 or more bits of ones: a whole byte that only holds padding.
        assert_eq!(decoded(&[0xff]), Err(HuffmanError::PaddingTooLong));
        assert_eq!(decoded(&[0x1f, 0xff]), Err(HuffmanError::PaddingTooLong));
        assert_eq!(decoded(&[0xff; 3]), Err(HuffmanError::PaddingTooLong));
        // 7 bits of ones is the most allowed: '0' + 3 bits, then 'a' + 3 bits.
        assert_eq!(decoded(&[0x07]).unwrap(), b"0");
        assert_eq!(decoded(&[0x1f]).unwrap(), b"a");
        // 'j' (7 bits) + one pad bit.
        assert_eq!(decoded(&[0xe9]).unwrap(), b"j");
    }

    #[test]
    fn rejects_padding_not_ones() {
        // '0' followed by 000.
        assert_eq!(decoded(&[0x00]), Err(HuffmanError::PaddingNotOnes));
        // 'a' followed by 110.
        assert_eq!(decoded(&[0x1e]), Err(HuffmanError::PaddingNotOnes));
        // ')' (10 bits) cut after 8 bits.
        assert_eq!(decoded(&[0xfe]), Err(HuffmanError::PaddingNotOnes));
        let a = (0b00011, 5);
        assert_eq!(
            decoded(&pack(&[a, a, a], false)),
            Err(HuffmanError::PaddingNotOnes)
        );
        assert_eq!(decoded(&pack(&[a, a, a], true)).unwrap(), b"aaa");
    }
}
