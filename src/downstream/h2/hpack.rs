//! HPACK header compression (RFC 7541) for the HTTP/2 server: a decoder for
//! request header blocks, with the connection's dynamic table, and an encoder
//! for response header blocks that never uses the dynamic table.

use std::collections::VecDeque;
use std::fmt;
use std::ops::Range;

use super::huffman;

/// Why a header block was rejected. Every variant is a connection error of
/// type COMPRESSION_ERROR (RFC 7540 §4.3).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DecodeError {
    #[error("header block ends inside a field representation")]
    Truncated,
    #[error("integer does not fit in 32 bits or has too many continuation bytes")]
    IntegerOverflow,
    #[error("index {0} is 0 or beyond the static and dynamic tables")]
    InvalidIndex(u32),
    #[error("dynamic table size update to {requested} exceeds the maximum of {max}")]
    SizeUpdateTooLarge { requested: u32, max: usize },
    #[error("dynamic table size update after the first field of a header block")]
    SizeUpdateNotAtStart,
    #[error("string literal of {len} octets is longer than the rest of the header block")]
    StringTooLong { len: u32 },
    #[error("invalid Huffman-coded string: {0}")]
    Huffman(#[from] huffman::HuffmanError),
}

/// Outcome of a failed [`Decoder::decode`]: the block was invalid, or the
/// field callback asked to stop.
#[derive(Debug, PartialEq, Eq)]
pub enum Decoded<E> {
    Hpack(DecodeError),
    Stop(E),
}

impl<E> From<DecodeError> for Decoded<E> {
    fn from(e: DecodeError) -> Self {
        Decoded::Hpack(e)
    }
}

impl<E: fmt::Display> fmt::Display for Decoded<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Decoded::Hpack(e) => write!(f, "HPACK decoding error: {e}"),
            Decoded::Stop(e) => e.fmt(f),
        }
    }
}

/// The three literal representations (RFC 7541 §6.2).
#[derive(Clone, Copy, PartialEq, Eq)]
enum Literal {
    Indexed,
    NotIndexed,
    NeverIndexed,
}

/// The static table, RFC 7541 Appendix A: entry `i` here is index `i + 1`.
static STATIC_TABLE: [(&[u8], &[u8]); 61] = [
    (b":authority", b""),
    (b":method", b"GET"),
    (b":method", b"POST"),
    (b":path", b"/"),
    (b":path", b"/index.html"),
    (b":scheme", b"http"),
    (b":scheme", b"https"),
    (b":status", b"200"),
    (b":status", b"204"),
    (b":status", b"206"),
    (b":status", b"304"),
    (b":status", b"400"),
    (b":status", b"404"),
    (b":status", b"500"),
    (b"accept-charset", b""),
    (b"accept-encoding", b"gzip, deflate"),
    (b"accept-language", b""),
    (b"accept-ranges", b""),
    (b"accept", b""),
    (b"access-control-allow-origin", b""),
    (b"age", b""),
    (b"allow", b""),
    (b"authorization", b""),
    (b"cache-control", b""),
    (b"content-disposition", b""),
    (b"content-encoding", b""),
    (b"content-language", b""),
    (b"content-length", b""),
    (b"content-location", b""),
    (b"content-range", b""),
    (b"content-type", b""),
    (b"cookie", b""),
    (b"date", b""),
    (b"etag", b""),
    (b"expect", b""),
    (b"expires", b""),
    (b"from", b""),
    (b"host", b""),
    (b"if-match", b""),
    (b"if-modified-since", b""),
    (b"if-none-match", b""),
    (b"if-range", b""),
    (b"if-unmodified-since", b""),
    (b"last-modified", b""),
    (b"link", b""),
    (b"location", b""),
    (b"max-forwards", b""),
    (b"proxy-authenticate", b""),
    (b"proxy-authorization", b""),
    (b"range", b""),
    (b"referer", b""),
    (b"refresh", b""),
    (b"retry-after", b""),
    (b"server", b""),
    (b"set-cookie", b""),
    (b"strict-transport-security", b""),
    (b"transfer-encoding", b""),
    (b"user-agent", b""),
    (b"vary", b""),
    (b"via", b""),
    (b"www-authenticate", b""),
];

const STATIC_LEN: u32 = STATIC_TABLE.len() as u32;

/// RFC 7541 §4.1: an entry costs its octets plus 32 of estimated overhead.
const ENTRY_OVERHEAD: usize = 32;

/// Lowest static table index whose name is `name`, or 0.
fn static_name_index(name: &[u8]) -> usize {
    // Dispatching on the length first keeps this to one or two short
    // comparisons for the common response headers.
    match name.len() {
        3 => match name {
            b"age" => 21,
            b"via" => 60,
            _ => 0,
        },
        4 => match name {
            b"date" => 33,
            b"etag" => 34,
            b"from" => 37,
            b"host" => 38,
            b"link" => 45,
            b"vary" => 59,
            _ => 0,
        },
        5 => match name {
            b":path" => 4,
            b"allow" => 22,
            b"range" => 50,
            _ => 0,
        },
        6 => match name {
            b"accept" => 19,
            b"cookie" => 32,
            b"expect" => 35,
            b"server" => 54,
            _ => 0,
        },
        7 => match name {
            b":method" => 2,
            b":scheme" => 6,
            b":status" => 8,
            b"expires" => 36,
            b"referer" => 51,
            b"refresh" => 52,
            _ => 0,
        },
        8 => match name {
            b"if-match" => 39,
            b"if-range" => 42,
            b"location" => 46,
            _ => 0,
        },
        10 => match name {
            b":authority" => 1,
            b"set-cookie" => 55,
            b"user-agent" => 58,
            _ => 0,
        },
        11 => match name {
            b"retry-after" => 53,
            _ => 0,
        },
        12 => match name {
            b"content-type" => 31,
            b"max-forwards" => 47,
            _ => 0,
        },
        13 => match name {
            b"accept-ranges" => 18,
            b"authorization" => 23,
            b"cache-control" => 24,
            b"content-range" => 30,
            b"if-none-match" => 41,
            b"last-modified" => 44,
            _ => 0,
        },
        14 => match name {
            b"accept-charset" => 15,
            b"content-length" => 28,
            _ => 0,
        },
        15 => match name {
            b"accept-encoding" => 16,
            b"accept-language" => 17,
            _ => 0,
        },
        16 => match name {
            b"content-encoding" => 26,
            b"content-language" => 27,
            b"content-location" => 29,
            b"www-authenticate" => 61,
            _ => 0,
        },
        17 => match name {
            b"if-modified-since" => 40,
            b"transfer-encoding" => 57,
            _ => 0,
        },
        18 => match name {
            b"proxy-authenticate" => 48,
            _ => 0,
        },
        19 => match name {
            b"content-disposition" => 25,
            b"if-unmodified-since" => 43,
            b"proxy-authorization" => 49,
            _ => 0,
        },
        25 => match name {
            b"strict-transport-security" => 56,
            _ => 0,
        },
        27 => match name {
            b"access-control-allow-origin" => 20,
            _ => 0,
        },
        _ => 0,
    }
}

/// Reads an integer with an N-bit prefix (RFC 7541 §5.1) at `*pos`.
fn read_int(block: &[u8], pos: &mut usize, prefix_bits: u32) -> Result<u32, DecodeError> {
    let mask = ((1u32 << prefix_bits) - 1) as u8;
    let first = *block.get(*pos).ok_or(DecodeError::Truncated)?;
    *pos += 1;
    if first & mask != mask {
        return Ok(u32::from(first & mask));
    }
    let mut value = u64::from(mask);
    // Five continuation bytes carry 35 bits, enough for any u32; a sixth
    // could only add zeros, which only a peer probing for bugs would send.
    for shift in [0, 7, 14, 21, 28] {
        let b = *block.get(*pos).ok_or(DecodeError::Truncated)?;
        *pos += 1;
        value += u64::from(b & 0x7f) << shift;
        let Ok(v) = u32::try_from(value) else {
            return Err(DecodeError::IntegerOverflow);
        };
        if b & 0x80 == 0 {
            return Ok(v);
        }
    }
    Err(DecodeError::IntegerOverflow)
}

/// Writes `value` as an integer with an N-bit prefix, `flags` holding the
/// representation's bits above the prefix.
fn write_int(dst: &mut Vec<u8>, flags: u8, prefix_bits: u32, value: usize) {
    let max = (1usize << prefix_bits) - 1;
    if value < max {
        dst.push(flags | value as u8);
        return;
    }
    dst.push(flags | max as u8);
    let mut rest = value - max;
    while rest >= 0x80 {
        dst.push(0x80 | (rest & 0x7f) as u8);
        rest >>= 7;
    }
    dst.push(rest as u8);
}

/// A string literal's octets: still in the block (or static), or Huffman
/// decoded into the scratch buffer, which may grow before the field is done.
enum Str<'b> {
    Slice(&'b [u8]),
    Scratch(Range<usize>),
}

impl<'b> Str<'b> {
    fn get<'s>(&self, scratch: &'s [u8]) -> &'s [u8]
    where
        'b: 's,
    {
        match self {
            Str::Slice(s) => s,
            // The range was filled by read_string: always in bounds.
            Str::Scratch(r) => scratch.get(r.clone()).unwrap_or_default(),
        }
    }
}

/// Reads a string literal (RFC 7541 §5.2) at `*pos`, Huffman-decoding it
/// into `scratch` if needed.
fn read_string<'b>(
    block: &'b [u8],
    pos: &mut usize,
    scratch: &mut Vec<u8>,
) -> Result<Str<'b>, DecodeError> {
    let huffman = *block.get(*pos).ok_or(DecodeError::Truncated)? & 0x80 != 0;
    let len = read_int(block, pos, 7)?;
    let bytes = usize::try_from(len)
        .ok()
        .and_then(|len| pos.checked_add(len))
        .and_then(|end| block.get(*pos..end))
        .ok_or(DecodeError::StringTooLong { len })?;
    *pos += bytes.len();
    if huffman {
        let start = scratch.len();
        huffman::decode(bytes, scratch)?;
        Ok(Str::Scratch(start..scratch.len()))
    } else {
        Ok(Str::Slice(bytes))
    }
}

/// Where the name of a field to insert comes from. A dynamic entry is named
/// by position because inserting may evict it (RFC 7541 §4.4).
enum NameSrc<'a> {
    Bytes(&'a [u8]),
    Entry(usize),
}

#[derive(Clone, Copy)]
struct Entry {
    /// Logical offset of the name, value following it (see `DynTable::base`).
    start: usize,
    name_len: usize,
    value_len: usize,
}

impl Entry {
    fn size(&self) -> usize {
        self.name_len + self.value_len + ENTRY_OVERHEAD
    }
}

/// The dynamic table. Entries' octets are appended to one buffer, oldest
/// first; eviction only drops metadata, and the dead prefix of the buffer is
/// reclaimed when appending would take the buffer past twice the maximum
/// size. Live octets never exceed the maximum, so each compaction moves at
/// most that much after at least that much was appended: amortised O(1) per
/// octet, and no allocation once the buffer and deque have grown.
struct DynTable {
    bytes: Vec<u8>,
    /// Logical offset of `bytes[0]`: compaction moves octets without
    /// touching every entry's offset.
    base: usize,
    /// Newest first, so dynamic index 62 is `entries[0]`.
    entries: VecDeque<Entry>,
    /// Sum of the entries' sizes.
    size: usize,
    max_size: usize,
}

impl DynTable {
    fn new(max_size: usize) -> Self {
        Self {
            bytes: Vec::new(),
            base: 0,
            entries: VecDeque::new(),
            size: 0,
            max_size,
        }
    }

    /// Entry `i`, 0 being the newest.
    fn get(&self, i: usize) -> Option<(&[u8], &[u8])> {
        let e = self.entries.get(i)?;
        let start = e.start.checked_sub(self.base)?;
        let name_end = start + e.name_len;
        let name = self.bytes.get(start..name_end)?;
        let value = self.bytes.get(name_end..name_end + e.value_len)?;
        Some((name, value))
    }

    fn set_max_size(&mut self, max_size: usize) {
        self.max_size = max_size;
        self.evict_to(max_size);
    }

    fn evict_to(&mut self, size: usize) {
        while self.size > size {
            let Some(e) = self.entries.pop_back() else {
                break;
            };
            self.size -= e.size();
        }
        if self.entries.is_empty() {
            self.bytes.clear();
            self.base = 0;
            self.size = 0;
        }
    }

    fn insert(&mut self, name: NameSrc<'_>, value: &[u8]) {
        let name_len = match name {
            NameSrc::Bytes(n) => n.len(),
            NameSrc::Entry(i) => self.entries.get(i).map_or(0, |e| e.name_len),
        };
        let size = name_len
            .saturating_add(value.len())
            .saturating_add(ENTRY_OVERHEAD);
        if size > self.max_size {
            self.evict_to(0);
            return;
        }
        if self.bytes.len() + name_len + value.len() > 2 * self.max_size {
            self.compact();
        }
        let start = self.base + self.bytes.len();
        match name {
            NameSrc::Bytes(n) => self.bytes.extend_from_slice(n),
            NameSrc::Entry(i) => {
                // Copied before evicting, as the entry may be the one evicted.
                if let Some(e) = self.entries.get(i) {
                    let from = e.start - self.base;
                    self.bytes.extend_from_within(from..from + e.name_len);
                }
            }
        }
        self.bytes.extend_from_slice(value);
        self.entries.push_front(Entry {
            start,
            name_len,
            value_len: value.len(),
        });
        self.size += size;
        self.evict_to(self.max_size);
    }

    /// Drops the octets of evicted entries, all before the oldest live one.
    fn compact(&mut self) {
        let Some(oldest) = self.entries.back() else {
            self.bytes.clear();
            self.base = 0;
            return;
        };
        let dead = oldest.start - self.base;
        self.bytes.drain(..dead);
        self.base = oldest.start;
    }
}

/// A field's name while its value is being read.
enum Name<'b> {
    Str(Str<'b>),
    Dynamic(usize),
}

/// Decodes header blocks for one connection (its dynamic table lives here).
pub struct Decoder {
    table: DynTable,
    /// Largest size a dynamic table size update may ask for.
    max_table_size: usize,
    /// Huffman-decoded name and value of the current field.
    scratch: Vec<u8>,
}

impl Decoder {
    /// `max_table_size` is our SETTINGS_HEADER_TABLE_SIZE (4096 by default):
    /// the largest size a peer's table size update may ask for. It is also
    /// the table's initial maximum size.
    pub fn new(max_table_size: usize) -> Self {
        Self {
            table: DynTable::new(max_table_size),
            max_table_size,
            scratch: Vec::new(),
        }
    }

    /// Decodes one complete header block (HEADERS + CONTINUATION payloads
    /// already joined), calling `field(name, value)` for each field in order.
    /// Names and values are borrowed from `block` when the literal is raw,
    /// from a scratch buffer (reused between calls) when it was Huffman
    /// coded, or from the tables.
    ///
    /// After `Err(Hpack(_))` the decoder's state is unusable: the connection
    /// must end with GOAWAY COMPRESSION_ERROR. After `Err(Stop(_))` (the
    /// callback's error, returned at once) the rest of the block was not
    /// processed, so its table insertions are missing and the decoder is out
    /// of sync with the peer's encoder: only keep the connection if no
    /// further block will be decoded.
    pub fn decode<E>(
        &mut self,
        block: &[u8],
        mut field: impl FnMut(&[u8], &[u8], bool) -> Result<(), E>,
    ) -> Result<(), Decoded<E>> {
        let mut pos = 0;
        let mut at_start = true;
        while let Some(&b) = block.get(pos) {
            if b & 0x80 != 0 {
                // Indexed header field (§6.1).
                let index = read_int(block, &mut pos, 7)?;
                let (name, value) = self.entry(index)?;
                field(name, value, false).map_err(Decoded::Stop)?;
            } else if b & 0x40 != 0 {
                // Literal with incremental indexing (§6.2.1).
                self.literal(block, &mut pos, 6, Literal::Indexed, &mut field)?;
            } else if b & 0x20 != 0 {
                // Dynamic table size update (§6.3); §4.2 allows these only
                // before the first field, any number of them.
                if !at_start {
                    return Err(DecodeError::SizeUpdateNotAtStart.into());
                }
                let requested = read_int(block, &mut pos, 5)?;
                let size = usize::try_from(requested).unwrap_or(usize::MAX);
                if size > self.max_table_size {
                    return Err(DecodeError::SizeUpdateTooLarge {
                        requested,
                        max: self.max_table_size,
                    }
                    .into());
                }
                self.table.set_max_size(size);
                continue;
            } else {
                // Literal without indexing (0000) or never indexed (0001,
                // §6.2.2-3). The latter is passed on, so that a value the client
                // asked never to be indexed stays so on the next hop (§7.1.3).
                let kind = if b & 0x10 != 0 {
                    Literal::NeverIndexed
                } else {
                    Literal::NotIndexed
                };
                self.literal(block, &mut pos, 4, kind, &mut field)?;
            }
            at_start = false;
        }
        Ok(())
    }

    /// Field at `index` in the static then dynamic table.
    fn entry(&self, index: u32) -> Result<(&[u8], &[u8]), DecodeError> {
        let found = if index <= STATIC_LEN {
            index
                .checked_sub(1)
                .and_then(|i| STATIC_TABLE.get(i as usize).copied())
        } else {
            self.table.get((index - STATIC_LEN - 1) as usize)
        };
        found.ok_or(DecodeError::InvalidIndex(index))
    }

    fn literal<E, F>(
        &mut self,
        block: &[u8],
        pos: &mut usize,
        prefix_bits: u32,
        kind: Literal,
        field: &mut F,
    ) -> Result<(), Decoded<E>>
    where
        F: FnMut(&[u8], &[u8], bool) -> Result<(), E>,
    {
        let index = kind == Literal::Indexed;
        let never = kind == Literal::NeverIndexed;
        let Self { table, scratch, .. } = self;
        scratch.clear();
        let name_index = read_int(block, pos, prefix_bits)?;
        let name = if name_index == 0 {
            Name::Str(read_string(block, pos, scratch)?)
        } else if name_index <= STATIC_LEN {
            let (n, _) = *STATIC_TABLE
                .get((name_index - 1) as usize)
                .ok_or(DecodeError::InvalidIndex(name_index))?;
            Name::Str(Str::Slice(n))
        } else {
            let i = (name_index - STATIC_LEN - 1) as usize;
            if table.get(i).is_none() {
                return Err(DecodeError::InvalidIndex(name_index).into());
            }
            Name::Dynamic(i)
        };
        let value = read_string(block, pos, scratch)?;
        let scratch: &[u8] = scratch;
        let value = value.get(scratch);
        match name {
            Name::Str(name) => {
                let name = name.get(scratch);
                field(name, value, never).map_err(Decoded::Stop)?;
                if index {
                    table.insert(NameSrc::Bytes(name), value);
                }
            }
            Name::Dynamic(i) => {
                let (name, _) = table.get(i).ok_or(DecodeError::InvalidIndex(name_index))?;
                field(name, value, never).map_err(Decoded::Stop)?;
                if index {
                    table.insert(NameSrc::Entry(i), value);
                }
            }
        }
        Ok(())
    }

    #[cfg(test)]
    fn table_size(&self) -> usize {
        self.table.size
    }

    /// The dynamic table's entries, newest first.
    #[cfg(test)]
    fn table_entries(&self) -> Vec<(Vec<u8>, Vec<u8>)> {
        (0..self.table.entries.len())
            .map(|i| {
                let (n, v) = self.table.get(i).unwrap();
                (n.to_vec(), v.to_vec())
            })
            .collect()
    }
}

/// Encodes response header blocks. It never inserts into the dynamic table
/// (CPU over bytes: no lookups, no evictions), so the first block it writes
/// starts with a dynamic table size update to 0, which stays valid whatever
/// SETTINGS_HEADER_TABLE_SIZE the peer sends later.
pub struct Encoder {
    first: bool,
}

impl Default for Encoder {
    fn default() -> Self {
        Self::new()
    }
}

impl Encoder {
    pub fn new() -> Self {
        Self { first: true }
    }

    /// Starts a block: writes the size update the first time.
    pub fn begin(&mut self, dst: &mut Vec<u8>) {
        if self.first {
            self.first = false;
            dst.push(0x20);
        }
    }

    /// `:status`: the fully indexed static entry for 200, 204, 206, 304, 400,
    /// 404, 500; otherwise a literal without indexing with name index 8.
    pub fn status(&mut self, status: u16, dst: &mut Vec<u8>) {
        let index: u8 = match status {
            200 => 8,
            204 => 9,
            206 => 10,
            304 => 11,
            400 => 12,
            404 => 13,
            500 => 14,
            _ => 0,
        };
        if index != 0 {
            dst.push(0x80 | index);
            return;
        }
        // Status codes have 3 digits; the general case costs nothing and
        // keeps an out-of-range u16 a valid (if odd) field.
        let mut buf = [0u8; 20];
        let digits = crate::wire::itoa_u64(u64::from(status), &mut buf);
        dst.push(0x08);
        dst.push(digits.len() as u8);
        dst.extend_from_slice(digits);
    }

    /// One field (name already lowercase). Literal without indexing, or never
    /// indexed when `sensitive`, naming the static entry when there is one.
    /// Strings are raw, never Huffman: cheaper to write, and a proxy's values
    /// are mostly short.
    pub fn field(&mut self, name: &[u8], value: &[u8], sensitive: bool, dst: &mut Vec<u8>) {
        let flags = if sensitive { 0x10 } else { 0x00 };
        let index = static_name_index(name);
        dst.reserve(name.len() + value.len() + 8);
        write_int(dst, flags, 4, index);
        if index == 0 {
            write_int(dst, 0, 7, name.len());
            dst.extend_from_slice(name);
        }
        write_int(dst, 0, 7, value.len());
        dst.extend_from_slice(value);
    }
}

#[cfg(test)]
mod tests {
    use super::super::huffman::HuffmanError;
    use super::*;

    type Fields = Vec<(String, String)>;

    fn unhex(s: &str) -> Vec<u8> {
        let digits: Vec<u8> = s.bytes().filter(|b| !b.is_ascii_whitespace()).collect();
        digits
            .chunks(2)
            .map(|p| u8::from_str_radix(std::str::from_utf8(p).unwrap(), 16).unwrap())
            .collect()
    }

    fn owned(name: &[u8], value: &[u8]) -> (String, String) {
        (
            String::from_utf8(name.to_vec()).unwrap(),
            String::from_utf8(value.to_vec()).unwrap(),
        )
    }

    fn decode(d: &mut Decoder, block: &[u8]) -> Result<Fields, DecodeError> {
        let mut out = Vec::new();
        d.decode(block, |n, v, _| {
            out.push(owned(n, v));
            Ok::<(), ()>(())
        })
        .map_err(|e| match e {
            Decoded::Hpack(e) => e,
            Decoded::Stop(()) => unreachable!(),
        })?;
        Ok(out)
    }

    fn pairs(list: &[(&str, &str)]) -> Fields {
        list.iter()
            .map(|&(n, v)| (n.to_string(), v.to_string()))
            .collect()
    }

    fn table(d: &Decoder) -> Fields {
        d.table_entries().iter().map(|(n, v)| owned(n, v)).collect()
    }

    struct Step<'a> {
        hex: &'a str,
        fields: &'a [(&'a str, &'a str)],
        /// Dynamic table after the block, newest first.
        table: &'a [(&'a str, &'a str)],
        size: usize,
    }

    fn run(d: &mut Decoder, steps: &[Step<'_>]) {
        for (i, s) in steps.iter().enumerate() {
            let got = decode(d, &unhex(s.hex)).unwrap();
            assert_eq!(got, pairs(s.fields), "fields of block {i}");
            assert_eq!(table(d), pairs(s.table), "table after block {i}");
            assert_eq!(d.table_size(), s.size, "table size after block {i}");
        }
    }

    use super::super::huffman::tests::Rng;

    // RFC 7541 Appendix C.1.
    #[test]
    fn integer_examples() {
        let mut pos = 0;
        assert_eq!(read_int(&[0xea], &mut pos, 5), Ok(10));
        assert_eq!(pos, 1);
        let mut pos = 0;
        assert_eq!(read_int(&[0x1f, 0x9a, 0x0a], &mut pos, 5), Ok(1337));
        assert_eq!(pos, 3);
        let mut pos = 0;
        assert_eq!(read_int(&[42], &mut pos, 8), Ok(42));
        let mut out = Vec::new();
        write_int(&mut out, 0xe0, 5, 10);
        write_int(&mut out, 0, 5, 1337);
        write_int(&mut out, 0, 8, 42);
        assert_eq!(out, [0xea, 0x1f, 0x9a, 0x0a, 42]);
    }

    #[test]
    fn integer_round_trip() {
        let values = [
            0,
            1,
            14,
            15,
            16,
            30,
            31,
            62,
            63,
            126,
            127,
            128,
            254,
            255,
            256,
            1 << 14,
            (1 << 21) + 5,
            u32::MAX as usize - 1,
            u32::MAX as usize,
        ];
        for prefix in 1..=8 {
            for &v in &values {
                let mut buf = Vec::new();
                write_int(&mut buf, 0, prefix, v);
                let mut pos = 0;
                assert_eq!(
                    read_int(&buf, &mut pos, prefix),
                    Ok(v as u32),
                    "{v}/{prefix}"
                );
                assert_eq!(pos, buf.len());
            }
        }
    }

    #[test]
    fn integer_errors() {
        let mut pos = 0;
        assert_eq!(read_int(&[0x1f], &mut pos, 5), Err(DecodeError::Truncated));
        let mut pos = 0;
        assert_eq!(
            read_int(&[0x1f, 0x80], &mut pos, 5),
            Err(DecodeError::Truncated)
        );
        // u32::MAX + 1 with an 8-bit prefix.
        let mut buf = Vec::new();
        write_int(&mut buf, 0, 8, u32::MAX as usize + 1);
        let mut pos = 0;
        assert_eq!(
            read_int(&buf, &mut pos, 8),
            Err(DecodeError::IntegerOverflow)
        );
        let mut pos = 0;
        let huge = [0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f];
        assert_eq!(
            read_int(&huge, &mut pos, 8),
            Err(DecodeError::IntegerOverflow)
        );
        // Six continuation bytes, even if they only add zeros.
        let mut pos = 0;
        let long = [0xff, 0x80, 0x80, 0x80, 0x80, 0x80, 0x00];
        assert_eq!(
            read_int(&long, &mut pos, 8),
            Err(DecodeError::IntegerOverflow)
        );
        // Through the decoder.
        let mut d = Decoder::new(4096);
        assert_eq!(decode(&mut d, &[0xff]), Err(DecodeError::Truncated));
        let mut d = Decoder::new(4096);
        assert_eq!(
            decode(&mut d, &[0xff, 0xff, 0xff, 0xff, 0xff, 0x0f]),
            Err(DecodeError::IntegerOverflow)
        );
        let mut d = Decoder::new(4096);
        assert_eq!(
            decode(&mut d, &[0x0f, 0x80, 0x80, 0x80, 0x80, 0x80, 0x01]),
            Err(DecodeError::IntegerOverflow)
        );
    }

    // RFC 7541 Appendix C.2.
    #[test]
    fn rfc7541_c2_literals() {
        let mut d = Decoder::new(4096);
        run(
            &mut d,
            &[Step {
                hex: "400a 6375 7374 6f6d 2d6b 6579 0d63 7573 746f 6d2d 6865 6164 6572",
                fields: &[("custom-key", "custom-header")],
                table: &[("custom-key", "custom-header")],
                size: 55,
            }],
        );
        let mut d = Decoder::new(4096);
        run(
            &mut d,
            &[Step {
                hex: "040c 2f73 616d 706c 652f 7061 7468",
                fields: &[(":path", "/sample/path")],
                table: &[],
                size: 0,
            }],
        );
        let mut d = Decoder::new(4096);
        run(
            &mut d,
            &[Step {
                hex: "1008 7061 7373 776f 7264 0673 6563 7265 74",
                fields: &[("password", "secret")],
                table: &[],
                size: 0,
            }],
        );
        let mut d = Decoder::new(4096);
        run(
            &mut d,
            &[Step {
                hex: "82",
                fields: &[(":method", "GET")],
                table: &[],
                size: 0,
            }],
        );
    }

    const REQ1: &[(&str, &str)] = &[
        (":method", "GET"),
        (":scheme", "http"),
        (":path", "/"),
        (":authority", "www.example.com"),
    ];
    const REQ2: &[(&str, &str)] = &[
        (":method", "GET"),
        (":scheme", "http"),
        (":path", "/"),
        (":authority", "www.example.com"),
        ("cache-control", "no-cache"),
    ];
    const REQ3: &[(&str, &str)] = &[
        (":method", "GET"),
        (":scheme", "https"),
        (":path", "/index.html"),
        (":authority", "www.example.com"),
        ("custom-key", "custom-value"),
    ];
    const REQ_TABLE1: &[(&str, &str)] = &[(":authority", "www.example.com")];
    const REQ_TABLE2: &[(&str, &str)] = &[
        ("cache-control", "no-cache"),
        (":authority", "www.example.com"),
    ];
    const REQ_TABLE3: &[(&str, &str)] = &[
        ("custom-key", "custom-value"),
        ("cache-control", "no-cache"),
        (":authority", "www.example.com"),
    ];

    // RFC 7541 Appendix C.3.
    #[test]
    fn rfc7541_c3_requests() {
        let mut d = Decoder::new(4096);
        run(
            &mut d,
            &[
                Step {
                    hex: "8286 8441 0f77 7777 2e65 7861 6d70 6c65 2e63 6f6d",
                    fields: REQ1,
                    table: REQ_TABLE1,
                    size: 57,
                },
                Step {
                    hex: "8286 84be 5808 6e6f 2d63 6163 6865",
                    fields: REQ2,
                    table: REQ_TABLE2,
                    size: 110,
                },
                Step {
                    hex: "8287 85bf 400a 6375 7374 6f6d 2d6b 6579 \
                          0c63 7573 746f 6d2d 7661 6c75 65",
                    fields: REQ3,
                    table: REQ_TABLE3,
                    size: 164,
                },
            ],
        );
    }

    // RFC 7541 Appendix C.4.
    #[test]
    fn rfc7541_c4_requests_huffman() {
        let mut d = Decoder::new(4096);
        run(
            &mut d,
            &[
                Step {
                    hex: "8286 8441 8cf1 e3c2 e5f2 3a6b a0ab 90f4 ff",
                    fields: REQ1,
                    table: REQ_TABLE1,
                    size: 57,
                },
                Step {
                    hex: "8286 84be 5886 a8eb 1064 9cbf",
                    fields: REQ2,
                    table: REQ_TABLE2,
                    size: 110,
                },
                Step {
                    hex: "8287 85bf 4088 25a8 49e9 5ba9 7d7f 8925 \
                          a849 e95b b8e8 b4bf",
                    fields: REQ3,
                    table: REQ_TABLE3,
                    size: 164,
                },
            ],
        );
    }

    const DATE1: &str = "Mon, 21 Oct 2013 20:13:21 GMT";
    const DATE2: &str = "Mon, 21 Oct 2013 20:13:22 GMT";
    const LOCATION: &str = "https://www.example.com";
    const COOKIE: &str = "foo=ASDJKHQKBZXOQWEOPIUAXQWEOIU; max-age=3600; version=1";
    const RESP1: &[(&str, &str)] = &[
        (":status", "302"),
        ("cache-control", "private"),
        ("date", DATE1),
        ("location", LOCATION),
    ];
    const RESP2: &[(&str, &str)] = &[
        (":status", "307"),
        ("cache-control", "private"),
        ("date", DATE1),
        ("location", LOCATION),
    ];
    const RESP3: &[(&str, &str)] = &[
        (":status", "200"),
        ("cache-control", "private"),
        ("date", DATE2),
        ("location", LOCATION),
        ("content-encoding", "gzip"),
        ("set-cookie", COOKIE),
    ];
    const RESP_TABLE1: &[(&str, &str)] = &[
        ("location", LOCATION),
        ("date", DATE1),
        ("cache-control", "private"),
        (":status", "302"),
    ];
    const RESP_TABLE2: &[(&str, &str)] = &[
        (":status", "307"),
        ("location", LOCATION),
        ("date", DATE1),
        ("cache-control", "private"),
    ];
    const RESP_TABLE3: &[(&str, &str)] = &[
        ("set-cookie", COOKIE),
        ("content-encoding", "gzip"),
        ("date", DATE2),
    ];

    // RFC 7541 Appendix C.5: SETTINGS_HEADER_TABLE_SIZE 256, no size update.
    #[test]
    fn rfc7541_c5_responses_with_eviction() {
        let mut d = Decoder::new(256);
        run(
            &mut d,
            &[
                Step {
                    hex: "4803 3330 3258 0770 7269 7661 7465 611d \
                          4d6f 6e2c 2032 3120 4f63 7420 3230 3133 \
                          2032 303a 3133 3a32 3120 474d 546e 1768 \
                          7474 7073 3a2f 2f77 7777 2e65 7861 6d70 \
                          6c65 2e63 6f6d",
                    fields: RESP1,
                    table: RESP_TABLE1,
                    size: 222,
                },
                Step {
                    hex: "4803 3330 37c1 c0bf",
                    fields: RESP2,
                    table: RESP_TABLE2,
                    size: 222,
                },
                Step {
                    hex: "88c1 611d 4d6f 6e2c 2032 3120 4f63 7420 \
                          3230 3133 2032 303a 3133 3a32 3220 474d \
                          54c0 5a04 677a 6970 7738 666f 6f3d 4153 \
                          444a 4b48 514b 425a 584f 5157 454f 5049 \
                          5541 5851 5745 4f49 553b 206d 6178 2d61 \
                          6765 3d33 3630 303b 2076 6572 7369 6f6e \
                          3d31",
                    fields: RESP3,
                    table: RESP_TABLE3,
                    size: 215,
                },
            ],
        );
    }

    // RFC 7541 Appendix C.6.
    #[test]
    fn rfc7541_c6_responses_huffman_with_eviction() {
        let mut d = Decoder::new(256);
        run(
            &mut d,
            &[
                Step {
                    hex: "4882 6402 5885 aec3 771a 4b61 96d0 7abe \
                          9410 54d4 44a8 2005 9504 0b81 66e0 82a6 \
                          2d1b ff6e 919d 29ad 1718 63c7 8f0b 97c8 \
                          e9ae 82ae 43d3",
                    fields: RESP1,
                    table: RESP_TABLE1,
                    size: 222,
                },
                Step {
                    hex: "4883 640e ffc1 c0bf",
                    fields: RESP2,
                    table: RESP_TABLE2,
                    size: 222,
                },
                Step {
                    hex: "88c1 6196 d07a be94 1054 d444 a820 0595 \
                          040b 8166 e084 a62d 1bff c05a 839b d9ab \
                          77ad 94e7 821d d7f2 e6c7 b335 dfdf cd5b \
                          3960 d5af 2708 7f36 72c1 ab27 0fb5 291f \
                          9587 3160 65c0 03ed 4ee5 b106 3d50 07",
                    fields: RESP3,
                    table: RESP_TABLE3,
                    size: 215,
                },
            ],
        );
    }

    #[test]
    fn index_errors() {
        let mut d = Decoder::new(4096);
        assert_eq!(decode(&mut d, &[0x80]), Err(DecodeError::InvalidIndex(0)));
        let mut d = Decoder::new(4096);
        assert_eq!(decode(&mut d, &[0xbe]), Err(DecodeError::InvalidIndex(62)));
        // Literal naming a missing dynamic entry.
        let mut d = Decoder::new(4096);
        assert_eq!(
            decode(&mut d, &[0x7e, 0x01, b'x']),
            Err(DecodeError::InvalidIndex(62))
        );
        let mut d = Decoder::new(4096);
        assert_eq!(
            decode(&mut d, &[0x0f, 0x2f, 0x01, b'x']),
            Err(DecodeError::InvalidIndex(62))
        );
        // 61 and 62 valid once something was inserted, 63 not.
        let mut d = Decoder::new(4096);
        assert_eq!(
            decode(&mut d, &unhex("4103 6162 63bd be")).unwrap(),
            pairs(&[
                (":authority", "abc"),
                ("www-authenticate", ""),
                (":authority", "abc"),
            ])
        );
        assert_eq!(decode(&mut d, &[0xbf]), Err(DecodeError::InvalidIndex(63)));
        // Huge index.
        let mut d = Decoder::new(4096);
        assert_eq!(
            decode(&mut d, &[0xff, 0xff, 0xff, 0xff, 0xff, 0x0e]),
            Err(DecodeError::InvalidIndex(0xf000_007e))
        );
    }

    #[test]
    fn size_updates() {
        // 4096 = 31 + 97 + 31 * 128.
        let mut d = Decoder::new(4096);
        assert_eq!(decode(&mut d, &[0x3f, 0xe1, 0x1f]), Ok(vec![]));
        let mut d = Decoder::new(4096);
        assert_eq!(
            decode(&mut d, &[0x3f, 0xe2, 0x1f]),
            Err(DecodeError::SizeUpdateTooLarge {
                requested: 4097,
                max: 4096
            })
        );
        let mut d = Decoder::new(0);
        assert_eq!(
            decode(&mut d, &[0x21]),
            Err(DecodeError::SizeUpdateTooLarge {
                requested: 1,
                max: 0
            })
        );
        let mut d = Decoder::new(4096);
        assert_eq!(
            decode(&mut d, &[0x82, 0x20]),
            Err(DecodeError::SizeUpdateNotAtStart)
        );
        // Several in a row at the start are fine; the last one wins.
        let mut d = Decoder::new(4096);
        assert_eq!(
            decode(&mut d, &[0x20, 0x3f, 0x11, 0x82]),
            Ok(pairs(&[(":method", "GET")]))
        );
        assert_eq!(d.table.max_size, 48);
        // A size update at the start of a later block is also fine.
        assert_eq!(decode(&mut d, &[0x20]), Ok(vec![]));
    }

    #[test]
    fn size_update_evicts() {
        let mut d = Decoder::new(4096);
        decode(
            &mut d,
            &unhex("8286 8441 0f77 7777 2e65 7861 6d70 6c65 2e63 6f6d"),
        )
        .unwrap();
        decode(&mut d, &unhex("8286 84be 5808 6e6f 2d63 6163 6865")).unwrap();
        assert_eq!(d.table_size(), 110);
        // Down to 100: only the newest (53) fits.
        assert_eq!(decode(&mut d, &[0x3f, 0x45, 0xbe]).unwrap().len(), 1);
        assert_eq!(table(&d), pairs(&[("cache-control", "no-cache")]));
        assert_eq!(d.table_size(), 53);
        assert_eq!(decode(&mut d, &[0x20]), Ok(vec![]));
        assert_eq!(d.table_size(), 0);
        assert_eq!(decode(&mut d, &[0xbe]), Err(DecodeError::InvalidIndex(62)));
    }

    #[test]
    fn oversized_entry_empties_table() {
        let mut d = Decoder::new(100);
        decode(&mut d, &unhex("4003 6162 6303 6465 66")).unwrap();
        assert_eq!(table(&d), pairs(&[("abc", "def")]));
        // 3 + 66 + 32 = 101 > 100: the table empties, the field still decodes.
        let mut block = unhex("4003 6162 6342");
        block.extend_from_slice(&[b'v'; 66]);
        let fields = decode(&mut d, &block).unwrap();
        assert_eq!(fields.len(), 1);
        assert_eq!(d.table_size(), 0);
        assert_eq!(table(&d), pairs(&[]));
    }

    // RFC 7541 §4.4: the new entry's name may belong to the entry it evicts.
    #[test]
    fn insert_naming_the_evicted_entry() {
        let mut d = Decoder::new(100);
        // custom-key: v1 (size 44).
        decode(&mut d, &unhex("400a 6375 7374 6f6d 2d6b 6579 0276 31")).unwrap();
        // Name from index 62 with a 30-octet value: 72 + 44 > 100.
        let mut block = vec![0x7e, 30];
        block.extend_from_slice(&[b'w'; 30]);
        let fields = decode(&mut d, &block).unwrap();
        let value = "w".repeat(30);
        assert_eq!(fields, pairs(&[("custom-key", &value)]));
        assert_eq!(table(&d), pairs(&[("custom-key", &value)]));
        assert_eq!(d.table_size(), 72);
    }

    #[test]
    fn string_errors() {
        let mut d = Decoder::new(4096);
        assert_eq!(
            decode(&mut d, &[0x40, 0x0a, b'c']),
            Err(DecodeError::StringTooLong { len: 10 })
        );
        let mut d = Decoder::new(4096);
        assert_eq!(
            decode(&mut d, &[0x04, 0x05, b'/', b'a']),
            Err(DecodeError::StringTooLong { len: 5 })
        );
        let mut d = Decoder::new(4096);
        assert_eq!(
            decode(&mut d, &[0x7f, 0xff, 0xff, 0xff, 0xff, 0x0e]),
            Err(DecodeError::InvalidIndex(0xf000_003e))
        );
        let mut block = vec![0x04];
        write_int(&mut block, 0x80, 7, u32::MAX as usize);
        block.extend_from_slice(b"abc");
        let mut d = Decoder::new(4096);
        assert_eq!(
            decode(&mut d, &block),
            Err(DecodeError::StringTooLong { len: u32::MAX })
        );
        // Name or value length missing.
        let mut d = Decoder::new(4096);
        assert_eq!(decode(&mut d, &[0x40]), Err(DecodeError::Truncated));
        let mut d = Decoder::new(4096);
        assert_eq!(decode(&mut d, &[0x04]), Err(DecodeError::Truncated));
        let mut d = Decoder::new(4096);
        assert_eq!(
            decode(&mut d, &[0x00, 0x01, b'a']),
            Err(DecodeError::Truncated)
        );
    }

    #[test]
    fn huffman_errors() {
        let mut d = Decoder::new(4096);
        assert_eq!(
            decode(&mut d, &[0x04, 0x81, 0xff]),
            Err(DecodeError::Huffman(HuffmanError::PaddingTooLong))
        );
        let mut d = Decoder::new(4096);
        assert_eq!(
            decode(&mut d, &[0x04, 0x81, 0x00]),
            Err(DecodeError::Huffman(HuffmanError::PaddingNotOnes))
        );
        let mut d = Decoder::new(4096);
        assert_eq!(
            decode(&mut d, &[0x00, 0x84, 0xff, 0xff, 0xff, 0xff, 0x00]),
            Err(DecodeError::Huffman(HuffmanError::Eos))
        );
    }

    #[test]
    fn never_indexed_literals_are_reported_as_such() {
        // RFC 7541 C.2.3 (never indexed, new name), then the same with the static name
        // `authorization` (index 23), then without indexing and with indexing.
        let block = unhex(
            "1008 7061 7373 776f 7264 0673 6563 7265 74  1f08 0178  00 0178 0179  40 0178 0179",
        );
        let mut d = Decoder::new(4096);
        let mut seen = Vec::new();
        d.decode(&block, |n, _, never| {
            seen.push((String::from_utf8_lossy(n).into_owned(), never));
            Ok::<(), ()>(())
        })
        .unwrap();
        let want = [
            ("password", true),
            ("authorization", true),
            ("x", false),
            ("x", false),
        ];
        let want: Vec<(String, bool)> = want.iter().map(|(n, b)| (n.to_string(), *b)).collect();
        assert_eq!(seen, want);
    }

    #[test]
    fn callback_error_stops() {
        let mut d = Decoder::new(4096);
        let mut seen = 0;
        let r = d.decode(&unhex("8286 84"), |_, _, _| {
            seen += 1;
            if seen == 2 { Err("stop") } else { Ok(()) }
        });
        assert_eq!(r, Err(Decoded::Stop("stop")));
        assert_eq!(seen, 2);
    }

    #[test]
    fn huffman_name_and_value_in_one_field() {
        let mut block = vec![0x10];
        for s in ["x-custom-name", "a value, with some: punctuation!"] {
            let len = super::super::huffman::encoded_len(s.as_bytes());
            write_int(&mut block, 0x80, 7, len);
            super::super::huffman::encode(s.as_bytes(), &mut block);
        }
        let mut d = Decoder::new(4096);
        assert_eq!(
            decode(&mut d, &block).unwrap(),
            pairs(&[("x-custom-name", "a value, with some: punctuation!")])
        );
    }

    /// Random blocks of insertions against a plain model of the table, to
    /// exercise eviction and the buffer compaction.
    #[test]
    fn dynamic_table_matches_model() {
        let mut rng = Rng(0x1234_5678_9abc_def1);
        let max = 300;
        let mut d = Decoder::new(max);
        let mut model: VecDeque<(Vec<u8>, Vec<u8>)> = VecDeque::new();
        let mut model_max = max;
        for _ in 0..2000 {
            let mut block = Vec::new();
            let mut expect = Vec::new();
            if rng.below(8) == 0 {
                model_max = rng.below(max as u64 + 1) as usize;
                write_int(&mut block, 0x20, 5, model_max);
                let mut size: usize = model.iter().map(|(n, v)| n.len() + v.len() + 32).sum();
                while size > model_max {
                    let (n, v) = model.pop_back().unwrap();
                    size -= n.len() + v.len() + 32;
                }
            }
            for _ in 0..rng.below(5) {
                let vlen = rng.below(120) as usize;
                let value: Vec<u8> = (0..vlen).map(|_| b'a' + rng.below(26) as u8).collect();
                let choice = rng.below(3);
                let name: Vec<u8> = if choice == 0 && !model.is_empty() {
                    let i = rng.below(model.len() as u64) as usize;
                    write_int(&mut block, 0x40, 6, 62 + i);
                    model[i].0.clone()
                } else if choice == 1 {
                    let i = rng.below(61) as usize;
                    write_int(&mut block, 0x40, 6, i + 1);
                    STATIC_TABLE[i].0.to_vec()
                } else {
                    let n: Vec<u8> = (0..1 + rng.below(20))
                        .map(|_| b'a' + rng.below(26) as u8)
                        .collect();
                    block.push(0x40);
                    write_int(&mut block, 0, 7, n.len());
                    block.extend_from_slice(&n);
                    n
                };
                write_int(&mut block, 0, 7, value.len());
                block.extend_from_slice(&value);
                expect.push(owned(&name, &value));
                let entry_size = name.len() + value.len() + 32;
                model.push_front((name, value));
                let mut size: usize = model.iter().map(|(n, v)| n.len() + v.len() + 32).sum();
                if entry_size > model_max {
                    model.clear();
                    size = 0;
                }
                while size > model_max {
                    let (n, v) = model.pop_back().unwrap();
                    size -= n.len() + v.len() + 32;
                }
            }
            // Indexed references to every entry read back what was stored.
            for (i, (n, v)) in model.iter().enumerate() {
                write_int(&mut block, 0x80, 7, 62 + i);
                expect.push(owned(n, v));
            }
            assert_eq!(decode(&mut d, &block).unwrap(), expect);
            let want: Fields = model.iter().map(|(n, v)| owned(n, v)).collect();
            assert_eq!(table(&d), want);
            assert!(d.table.bytes.len() <= 2 * max);
        }
    }

    #[test]
    fn static_name_index_is_lowest_static_match() {
        for (i, &(name, _)) in STATIC_TABLE.iter().enumerate() {
            let lowest = STATIC_TABLE.iter().position(|&(n, _)| n == name).unwrap() + 1;
            assert_eq!(static_name_index(name), lowest, "{:?} at {}", name, i + 1);
        }
        assert_eq!(static_name_index(b"content-length"), 28);
        assert_eq!(static_name_index(b"date"), 33);
        assert_eq!(static_name_index(b"server"), 54);
        assert_eq!(static_name_index(b"content-type"), 31);
        for name in [
            &b""[..],
            b"x",
            b"dat",
            b"datf",
            b"Date",
            b"x-request-id",
            b"alt-svc",
        ] {
            assert_eq!(static_name_index(name), 0, "{name:?}");
        }
    }

    #[test]
    fn encoder_writes_size_update_once() {
        let mut e = Encoder::new();
        let mut first = Vec::new();
        e.begin(&mut first);
        e.status(200, &mut first);
        assert_eq!(first, [0x20, 0x88]);
        let mut second = Vec::new();
        e.begin(&mut second);
        e.status(200, &mut second);
        assert_eq!(second, [0x88]);
        // The update to 0 is accepted even by a decoder with no table.
        let mut d = Decoder::new(0);
        assert_eq!(decode(&mut d, &first), Ok(pairs(&[(":status", "200")])));
    }

    #[test]
    fn encoder_exact_bytes() {
        let mut e = Encoder::default();
        let mut out = Vec::new();
        e.field(b"content-length", b"42", false, &mut out);
        assert_eq!(out, [0x0f, 0x0d, 0x02, b'4', b'2']);
        out.clear();
        e.field(b"date", b"x", false, &mut out);
        assert_eq!(out, [0x0f, 0x12, 0x01, b'x']);
        out.clear();
        e.field(b"age", b"1", true, &mut out);
        assert_eq!(out, [0x1f, 0x06, 0x01, b'1']);
        out.clear();
        e.field(b"x-a", b"", false, &mut out);
        assert_eq!(out, [0x00, 0x03, b'x', b'-', b'a', 0x00]);
        out.clear();
        e.field(b"x-a", b"b", true, &mut out);
        assert_eq!(out, [0x10, 0x03, b'x', b'-', b'a', 0x01, b'b']);
        out.clear();
        e.status(418, &mut out);
        assert_eq!(out, [0x08, 0x03, b'4', b'1', b'8']);
    }

    #[test]
    fn encoder_round_trip() {
        let long_value = "v".repeat(300);
        let long_name = format!("x-{}", "n".repeat(200));
        let fields: Vec<(&str, &str, bool)> = vec![
            ("content-type", "text/html; charset=utf-8", false),
            ("content-length", "1234", false),
            ("date", DATE1, false),
            ("server", "proxy", false),
            ("set-cookie", COOKIE, true),
            ("x-request-id", "abc-123", false),
            ("x-secret", "hunter2", true),
            ("www-authenticate", "Basic realm=\"x\"", false),
            ("access-control-allow-origin", "*", false),
            ("x-empty", "", false),
            ("cache-control", &long_value, false),
            (&long_name, "y", false),
            (&long_name, &long_value, true),
        ];
        let mut e = Encoder::new();
        let mut d = Decoder::new(4096);
        for round in 0..3 {
            let mut block = Vec::new();
            e.begin(&mut block);
            assert_eq!(block.first() == Some(&0x20), round == 0);
            e.status(if round == 1 { 503 } else { 200 }, &mut block);
            for &(n, v, s) in &fields {
                e.field(n.as_bytes(), v.as_bytes(), s, &mut block);
            }
            let mut want = vec![(
                ":status".to_string(),
                if round == 1 { "503" } else { "200" }.to_string(),
            )];
            want.extend(
                fields
                    .iter()
                    .map(|&(n, v, _)| (n.to_string(), v.to_string())),
            );
            assert_eq!(decode(&mut d, &block).unwrap(), want);
            assert_eq!(d.table_size(), 0);
        }
    }

    #[test]
    fn all_status_codes_round_trip() {
        let mut e = Encoder::new();
        let mut d = Decoder::new(4096);
        for status in (100..=999u16).chain([0, 7, 42, 1000, 65535]) {
            let mut block = Vec::new();
            e.begin(&mut block);
            e.status(status, &mut block);
            let indexed = [200, 204, 206, 304, 400, 404, 500].contains(&status);
            let skip = usize::from(status == 100);
            assert_eq!(block.len() - skip == 1, indexed, "{status}");
            assert_eq!(
                decode(&mut d, &block).unwrap(),
                vec![(":status".to_string(), status.to_string())]
            );
        }
    }

    fn must_not_panic(d: &mut Decoder, input: &[u8]) -> bool {
        d.decode(input, |n, v, never| {
            std::hint::black_box((n, v, never));
            Ok::<(), ()>(())
        })
        .is_ok()
    }

    #[test]
    fn random_input_never_panics() {
        let mut rng = Rng(0xdead_beef_cafe_f00d);
        let mut d = Decoder::new(4096);
        let mut ok = 0;
        for _ in 0..10_000 {
            let len = rng.below(64) as usize;
            let input: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
            if must_not_panic(&mut d, &input) {
                ok += 1;
            } else {
                d = Decoder::new(4096);
            }
        }
        // Some random blocks are valid (e.g. a lone indexed static field).
        assert!(ok > 0);
    }

    #[test]
    fn mutated_valid_blocks_never_panic() {
        let seeds = [
            unhex("8286 8441 8cf1 e3c2 e5f2 3a6b a0ab 90f4 ff"),
            unhex("8287 85bf 4088 25a8 49e9 5ba9 7d7f 8925 a849 e95b b8e8 b4bf"),
            unhex("4882 6402 5885 aec3 771a 4b61 96d0 7abe 9410 54d4 44a8 2005"),
            unhex("3f e1 1f 4003 6162 6303 6465 66 be"),
        ];
        let mut rng = Rng(42);
        for _ in 0..10_000 {
            let mut input = seeds[rng.below(seeds.len() as u64) as usize].clone();
            for _ in 0..1 + rng.below(4) {
                let i = rng.below(input.len() as u64) as usize;
                input[i] ^= 1 << rng.below(8);
            }
            input.truncate(rng.below(input.len() as u64 + 1) as usize);
            let mut d = Decoder::new(256);
            must_not_panic(&mut d, &input);
        }
    }
}
