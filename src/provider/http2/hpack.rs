//! HPACK (RFC 7541) for the HTTP/2 client: a request encoder and a
//! response decoder, each with its dynamic table.
//!
//! The encoder adds to the table only the headers that repeat from
//! request to request (the ones the caller marks [`Indexing::Incremental`]):
//! after the first request on a connection they go as one-byte indices.
//! Headers sent once (`:path`, `apns-id`, `content-length`) go as raw
//! literals without indexing, sensitive ones never indexed; no string is
//! Huffman-coded (RFC 7541 lets the encoder choose; coding costs CPU on
//! both sides to save a fifth of a string's bytes). The table never evicts
//! what the encoder still means to reuse unless the peer's table is too
//! small, and it follows the peer's SETTINGS_HEADER_TABLE_SIZE.
//!
//! The decoder takes any valid block: indexed fields, literals of the three
//! kinds, Huffman strings, table size updates.

use std::collections::VecDeque;

use super::huffman;

/// RFC 7541 Appendix A, index 1..=61.
const STATIC: [(&str, &str); 61] = [
    (":authority", ""),
    (":method", "GET"),
    (":method", "POST"),
    (":path", "/"),
    (":path", "/index.html"),
    (":scheme", "http"),
    (":scheme", "https"),
    (":status", "200"),
    (":status", "204"),
    (":status", "206"),
    (":status", "304"),
    (":status", "400"),
    (":status", "404"),
    (":status", "500"),
    ("accept-charset", ""),
    ("accept-encoding", "gzip, deflate"),
    ("accept-language", ""),
    ("accept-ranges", ""),
    ("accept", ""),
    ("access-control-allow-origin", ""),
    ("age", ""),
    ("allow", ""),
    ("authorization", ""),
    ("cache-control", ""),
    ("content-disposition", ""),
    ("content-encoding", ""),
    ("content-language", ""),
    ("content-length", ""),
    ("content-location", ""),
    ("content-range", ""),
    ("content-type", ""),
    ("cookie", ""),
    ("date", ""),
    ("etag", ""),
    ("expect", ""),
    ("expires", ""),
    ("from", ""),
    ("host", ""),
    ("if-match", ""),
    ("if-modified-since", ""),
    ("if-none-match", ""),
    ("if-range", ""),
    ("if-unmodified-since", ""),
    ("last-modified", ""),
    ("link", ""),
    ("location", ""),
    ("max-forwards", ""),
    ("proxy-authenticate", ""),
    ("proxy-authorization", ""),
    ("range", ""),
    ("referer", ""),
    ("refresh", ""),
    ("retry-after", ""),
    ("server", ""),
    ("set-cookie", ""),
    ("strict-transport-security", ""),
    ("transfer-encoding", ""),
    ("user-agent", ""),
    ("vary", ""),
    ("via", ""),
    ("www-authenticate", ""),
];

/// The table's size of an entry (RFC 7541 §4.1).
fn entry_size(name: &[u8], value: &[u8]) -> usize {
    name.len() + value.len() + 32
}

/// Why a header block does not decode: a COMPRESSION_ERROR for the
/// connection (RFC 7540 §4.3).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("HPACK: {0}")]
pub struct HpackError(pub &'static str);

/// A dynamic table: newest entry first (index 62).
#[derive(Debug, Default)]
struct Table {
    entries: VecDeque<(Vec<u8>, Vec<u8>)>,
    size: usize,
    max: usize,
    /// Entries ever added: the newest has id `inserted - 1`, and an id
    /// stays with its entry while the entry moves down the table.
    inserted: u64,
}

impl Table {
    fn new(max: usize) -> Table {
        Table {
            max,
            ..Table::default()
        }
    }

    fn get(&self, index: usize) -> Option<(&[u8], &[u8])> {
        if index == 0 {
            return None;
        }
        if let Some((n, v)) = STATIC.get(index - 1) {
            return Some((n.as_bytes(), v.as_bytes()));
        }
        self.entries
            .get(index - 1 - STATIC.len())
            .map(|(n, v)| (n.as_slice(), v.as_slice()))
    }

    fn evict_to(&mut self, max: usize) {
        while self.size > max {
            match self.entries.pop_back() {
                Some((n, v)) => self.size -= entry_size(&n, &v),
                None => break,
            }
        }
    }

    fn resize(&mut self, max: usize) {
        self.max = max;
        self.evict_to(max);
    }

    fn insert(&mut self, name: Vec<u8>, value: Vec<u8>) {
        let size = entry_size(&name, &value);
        if size > self.max {
            // An entry larger than the table empties it (RFC 7541 §4.4).
            self.evict_to(0);
            return;
        }
        self.evict_to(self.max - size);
        self.size += size;
        self.entries.push_front((name, value));
        self.inserted += 1;
    }

    /// The position (0 = newest) of the entry with id `id`, if still there.
    fn position_of(&self, id: u64) -> Option<usize> {
        let back = self.inserted.checked_sub(id + 1)?;
        usize::try_from(back)
            .ok()
            .filter(|&i| i < self.entries.len())
    }
}

/// Reads an integer with an `n`-bit prefix from `src` at `*at`.
fn read_int(src: &[u8], at: &mut usize, n: u32) -> Result<usize, HpackError> {
    let mask = (1usize << n) - 1;
    let first = *src.get(*at).ok_or(HpackError("truncated integer"))?;
    *at += 1;
    let mut value = usize::from(first) & mask;
    if value < mask {
        return Ok(value);
    }
    let mut shift = 0;
    loop {
        let b = *src.get(*at).ok_or(HpackError("truncated integer"))?;
        *at += 1;
        // Values past 2^28 are never legitimate here (sizes, indices).
        if shift > 21 {
            return Err(HpackError("integer too large"));
        }
        value += usize::from(b & 0x7f) << shift;
        shift += 7;
        if b & 0x80 == 0 {
            return Ok(value);
        }
    }
}

/// Appends an integer with an `n`-bit prefix; `flags` are the first byte's
/// bits above the prefix.
fn write_int(dst: &mut Vec<u8>, value: usize, n: u32, flags: u8) {
    let mask = (1usize << n) - 1;
    if value < mask {
        dst.push(flags | value as u8);
        return;
    }
    dst.push(flags | mask as u8);
    let mut rest = value - mask;
    while rest >= 0x80 {
        dst.push(0x80 | (rest & 0x7f) as u8);
        rest >>= 7;
    }
    dst.push(rest as u8);
}

/// A raw (not Huffman-coded) string literal.
fn write_str(dst: &mut Vec<u8>, s: &[u8]) {
    write_int(dst, s.len(), 7, 0);
    dst.extend_from_slice(s);
}

/// Reads a string literal, Huffman-coded or not, into `scratch`; returns it.
fn read_str<'a>(
    src: &'a [u8],
    at: &mut usize,
    scratch: &'a mut Vec<u8>,
) -> Result<&'a [u8], HpackError> {
    let huffman = src.get(*at).ok_or(HpackError("truncated string"))? & 0x80 != 0;
    let len = read_int(src, at, 7)?;
    let end = at
        .checked_add(len)
        .filter(|&e| e <= src.len())
        .ok_or(HpackError("truncated string"))?;
    let raw = &src[*at..end];
    *at = end;
    if !huffman {
        return Ok(raw);
    }
    scratch.clear();
    huffman::decode(raw, scratch).map_err(|_| HpackError("bad Huffman string"))?;
    Ok(scratch.as_slice())
}

/// Decodes the header blocks of one connection's responses.
#[derive(Debug)]
pub struct Decoder {
    table: Table,
    /// The SETTINGS_HEADER_TABLE_SIZE we announced: the most a size update may ask.
    limit: usize,
    name: Vec<u8>,
    value: Vec<u8>,
}

impl Default for Decoder {
    fn default() -> Decoder {
        Decoder::new(4096)
    }
}

impl Decoder {
    /// A decoder whose table may grow to `limit` bytes (what our SETTINGS say).
    pub fn new(limit: usize) -> Decoder {
        Decoder {
            table: Table::new(limit),
            limit,
            name: Vec::new(),
            value: Vec::new(),
        }
    }

    /// Decodes one complete header block, calling `field(name, value)` for
    /// each field in order. An error leaves the connection unusable.
    pub fn decode(
        &mut self,
        block: &[u8],
        mut field: impl FnMut(&[u8], &[u8]),
    ) -> Result<(), HpackError> {
        let mut at = 0;
        let mut fields = 0usize;
        while at < block.len() {
            let b = block[at];
            if b & 0x80 != 0 {
                let index = read_int(block, &mut at, 7)?;
                let (n, v) = self.table.get(index).ok_or(HpackError("bad index"))?;
                field(n, v);
            } else if b & 0xe0 == 0x20 {
                // Dynamic table size update: only before the block's fields.
                if fields > 0 {
                    return Err(HpackError("table size update after a field"));
                }
                let size = read_int(block, &mut at, 5)?;
                if size > self.limit {
                    return Err(HpackError("table size update over the limit"));
                }
                self.table.resize(size);
                continue;
            } else {
                let (prefix, insert) = if b & 0xc0 == 0x40 {
                    (6, true)
                } else {
                    (4, false)
                };
                let index = read_int(block, &mut at, prefix)?;
                let mut name_scratch = std::mem::take(&mut self.name);
                let mut value_scratch = std::mem::take(&mut self.value);
                let result = (|| {
                    let name: Vec<u8> = if index == 0 {
                        read_str(block, &mut at, &mut name_scratch)?.to_vec()
                    } else {
                        let (n, _) = self.table.get(index).ok_or(HpackError("bad index"))?;
                        n.to_vec()
                    };
                    let value = read_str(block, &mut at, &mut value_scratch)?;
                    field(&name, value);
                    if insert {
                        let value = value.to_vec();
                        self.table.insert(name, value);
                    }
                    Ok(())
                })();
                self.name = name_scratch;
                self.value = value_scratch;
                result?;
            }
            fields += 1;
        }
        Ok(())
    }
}

/// How the encoder sends a header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Indexing {
    /// Added to the table (when it fits), then sent as an index while it stays.
    Incremental,
    /// A literal, not added: a value sent once.
    No,
    /// A literal that intermediaries must not index either (secrets, unique ids).
    Never,
}

/// How the field at one position of the last block was sent: a guess for
/// the same position of the next block, checked before it is used.
#[derive(Debug, Clone, Copy)]
enum Hint {
    None,
    /// The dynamic entry with this id.
    Dynamic(u64),
    /// The static entry with this index, name and value.
    Static(usize),
    /// A literal whose name was the static entry `name_index` (0: a name
    /// of its own, `name_len` bytes long).
    Literal {
        name_index: usize,
        name_len: usize,
    },
}

/// Encodes the header blocks of one connection's requests.
///
/// A connection's requests carry the same headers in the same order, so
/// the encoder remembers how it sent the field at each position of the
/// last block and tries that first: one comparison instead of a search
/// through both tables (the search was 12% of the gateway's instructions
/// on fan-out jobs). A hint is checked against the table before it is
/// used; the one unchecked case, a literal's name of its own length, at
/// worst sends a name in full that the static table has (still valid).
#[derive(Debug)]
pub struct Encoder {
    table: Table,
    /// A size to announce at the start of the next block (the peer lowered its limit).
    update: Option<usize>,
    /// By position in the block, how the last block's field was sent.
    hints: Vec<Hint>,
    /// The position of the next field in the current block.
    at: usize,
}

impl Default for Encoder {
    fn default() -> Encoder {
        Encoder {
            table: Table::new(4096),
            update: None,
            hints: Vec::new(),
            at: 0,
        }
    }
}

impl Encoder {
    /// The peer's SETTINGS_HEADER_TABLE_SIZE. The encoder keeps using at most
    /// 4,096 bytes (the default) and follows a smaller limit at once.
    pub fn set_peer_limit(&mut self, limit: usize) {
        let size = limit.min(4096);
        if size != self.table.max {
            self.table.resize(size);
            self.update = Some(size);
        }
    }

    /// Starts a header block: the table size update, if one is due.
    pub fn begin(&mut self, dst: &mut Vec<u8>) {
        self.at = 0;
        if let Some(size) = self.update.take() {
            write_int(dst, size, 5, 0x20);
        }
    }

    /// Appends one field.
    pub fn field(&mut self, name: &[u8], value: &[u8], how: Indexing, dst: &mut Vec<u8>) {
        let at = self.at;
        self.at += 1;
        let hint = self.hints.get(at).copied().unwrap_or(Hint::None);
        if !self.by_hint(hint, name, value, how, dst) {
            let sent = self.search(name, value, how, dst);
            // Every earlier position has its hint: this one is at most next.
            match self.hints.get_mut(at) {
                Some(h) => *h = sent,
                None => self.hints.push(sent),
            }
        }
    }

    /// Sends the field as the hint says, if the hint still holds.
    fn by_hint(
        &mut self,
        hint: Hint,
        name: &[u8],
        value: &[u8],
        how: Indexing,
        dst: &mut Vec<u8>,
    ) -> bool {
        match hint {
            Hint::Dynamic(id) if how == Indexing::Incremental => {
                let Some(i) = self.table.position_of(id) else {
                    return false;
                };
                let (n, v) = &self.table.entries[i];
                if n.as_slice() != name || v.as_slice() != value {
                    return false;
                }
                write_int(dst, STATIC.len() + 1 + i, 7, 0x80);
                true
            }
            Hint::Static(i) if how != Indexing::Never => {
                let (n, v) = STATIC[i - 1];
                if n.as_bytes() != name || v.as_bytes() != value {
                    return false;
                }
                write_int(dst, i, 7, 0x80);
                true
            }
            Hint::Literal {
                name_index,
                name_len,
            } if how != Indexing::Incremental => {
                let same = match name_index {
                    0 => name_len == name.len(),
                    i => STATIC[i - 1].0.as_bytes() == name,
                };
                if same {
                    literal(dst, name_index, name, value, how);
                }
                same
            }
            _ => false,
        }
    }

    /// Sends the field by searching both tables; returns how it went.
    fn search(&mut self, name: &[u8], value: &[u8], how: Indexing, dst: &mut Vec<u8>) -> Hint {
        // The common case first: a header this connection sent before.
        if how == Indexing::Incremental {
            if let Some(i) = self
                .table
                .entries
                .iter()
                .position(|(n, v)| n.as_slice() == name && v.as_slice() == value)
            {
                write_int(dst, STATIC.len() + 1 + i, 7, 0x80);
                return Hint::Dynamic(self.table.inserted - 1 - i as u64);
            }
        }
        let mut name_index = 0;
        for (i, (n, v)) in STATIC.iter().enumerate() {
            if n.as_bytes() == name {
                if how != Indexing::Never && v.as_bytes() == value && !v.is_empty() {
                    write_int(dst, i + 1, 7, 0x80);
                    return Hint::Static(i + 1);
                }
                if name_index == 0 {
                    name_index = i + 1;
                }
            } else if name_index != 0 {
                // A name's entries are consecutive: no exact match further on.
                break;
            }
        }
        let how = match how {
            Indexing::Incremental if entry_size(name, value) > self.table.max => Indexing::No,
            how => how,
        };
        literal(dst, name_index, name, value, how);
        if how == Indexing::Incremental {
            // It fits (checked above), so it becomes the newest entry.
            self.table.insert(name.to_vec(), value.to_vec());
            return Hint::Dynamic(self.table.inserted - 1);
        }
        Hint::Literal {
            name_index,
            name_len: name.len(),
        }
    }
}

/// Appends a literal field: with incremental indexing (the caller adds it
/// to its table), without, or never indexed; its name as the static entry
/// `name_index`, or in full when that is 0.
fn literal(dst: &mut Vec<u8>, name_index: usize, name: &[u8], value: &[u8], how: Indexing) {
    let (prefix, flags) = match how {
        Indexing::Incremental => (6, 0x40),
        Indexing::Never => (4, 0x10),
        Indexing::No => (4, 0x00),
    };
    write_int(dst, name_index, prefix, flags);
    if name_index == 0 {
        write_str(dst, name);
    }
    write_str(dst, value);
}

#[cfg(test)]
mod tests {
    use super::super::hex;
    use super::*;

    fn fields(d: &mut Decoder, block: &[u8]) -> Result<Vec<(String, String)>, HpackError> {
        let mut out = Vec::new();
        d.decode(block, |n, v| {
            out.push((
                String::from_utf8(n.to_vec()).unwrap(),
                String::from_utf8(v.to_vec()).unwrap(),
            ))
        })?;
        Ok(out)
    }

    /// RFC 7541 Appendix C.1.
    #[test]
    fn integers_as_the_rfc_writes_them() {
        for (value, prefix, bytes) in [
            (10, 5, vec![0x0a]),
            (1337, 5, vec![0x1f, 0x9a, 0x0a]),
            (42, 8, vec![0x2a]),
        ] {
            let mut out = Vec::new();
            write_int(&mut out, value, prefix, 0);
            assert_eq!(out, bytes);
            let mut at = 0;
            assert_eq!(read_int(&bytes, &mut at, prefix).unwrap(), value);
            assert_eq!(at, bytes.len());
        }
        let mut at = 0;
        assert!(read_int(&[0x1f, 0xff, 0xff, 0xff, 0xff, 0xff], &mut at, 5).is_err());
    }

    /// RFC 7541 Appendix C.4: three requests with Huffman strings on one table.
    #[test]
    fn decodes_the_rfc_requests_with_huffman() {
        let mut d = Decoder::default();
        let first = fields(&mut d, &hex("8286 8441 8cf1 e3c2 e5f2 3a6b a0ab 90f4 ff")).unwrap();
        assert_eq!(
            first,
            [
                (":method".into(), "GET".into()),
                (":scheme".into(), "http".into()),
                (":path".into(), "/".into()),
                (":authority".into(), "www.example.com".into()),
            ]
        );
        let second = fields(&mut d, &hex("8286 84be 5886 a8eb 1064 9cbf")).unwrap();
        assert_eq!(second[3], (":authority".into(), "www.example.com".into()));
        assert_eq!(second[4], ("cache-control".into(), "no-cache".into()));
        let third = fields(
            &mut d,
            &hex("8287 85bf 4088 25a8 49e9 5ba9 7d7f 8925 a849 e95b b8e8 b4bf"),
        )
        .unwrap();
        assert_eq!(third[1], (":scheme".into(), "https".into()));
        assert_eq!(third[2], (":path".into(), "/index.html".into()));
        assert_eq!(third[3], (":authority".into(), "www.example.com".into()));
        assert_eq!(third[4], ("custom-key".into(), "custom-value".into()));
        // custom-key, cache-control, :authority: 54 + 53 + 57 bytes.
        assert_eq!(d.table.size, 164);
    }

    #[test]
    fn encoder_blocks_decode_to_what_was_sent() {
        let mut e = Encoder::default();
        let mut d = Decoder::default();
        let sent = [
            (":method", "POST", Indexing::Incremental),
            (":scheme", "https", Indexing::Incremental),
            (":authority", "api.push.apple.com", Indexing::Incremental),
            (":path", "/3/device/abcdef", Indexing::No),
            ("apns-topic", "com.example.shop", Indexing::Incremental),
            (
                "apns-id",
                "123e4567-e89b-12d3-a456-426614174000",
                Indexing::Never,
            ),
            ("authorization", "bearer eyJ0eXAi", Indexing::Incremental),
            ("content-length", "42", Indexing::No),
        ];
        let mut sizes = Vec::new();
        for _ in 0..3 {
            let mut block = Vec::new();
            e.begin(&mut block);
            for (n, v, how) in sent {
                e.field(n.as_bytes(), v.as_bytes(), how, &mut block);
            }
            let got = fields(&mut d, &block).unwrap();
            let want: Vec<(String, String)> = sent
                .iter()
                .map(|(n, v, _)| (n.to_string(), v.to_string()))
                .collect();
            assert_eq!(got, want);
            sizes.push(block.len());
        }
        assert!(
            sizes[1] < sizes[0] - 40,
            "repeated headers go as indices: {sizes:?}"
        );
        assert_eq!(sizes[1], sizes[2]);
        // Raw literals: the path and the id are readable in the block.
        let mut block = Vec::new();
        e.field(b"apns-id", b"visible-id", Indexing::Never, &mut block);
        assert_eq!(block[0], 0x10, "never indexed, literal name");
        assert!(block.windows(10).any(|w| w == b"visible-id"));
    }

    /// Blocks whose fields change in number, order, value and indexing
    /// from one block to the next, with the peer's limit changing too: the
    /// hints of the last block must never send a field wrongly.
    #[test]
    fn blocks_that_change_decode_to_what_was_sent() {
        let mut rng = fastrand::Rng::with_seed(7);
        let mut e = Encoder::default();
        let mut d = Decoder::default();
        let pool: [(&str, &[&str], Indexing); 10] = [
            (":method", &["POST", "GET"], Indexing::Incremental),
            (":scheme", &["https"], Indexing::Incremental),
            (
                ":authority",
                &["api.push.apple.com", "fcm.googleapis.com"],
                Indexing::Incremental,
            ),
            (
                ":path",
                &["/3/device/aa", "/3/device/bb", "/v1/x"],
                Indexing::No,
            ),
            (
                "apns-topic",
                &["com.example.shop", "com.example.news"],
                Indexing::Incremental,
            ),
            ("apns-id", &["id-1", "id-2", "id-3"], Indexing::Never),
            (
                "authorization",
                &["bearer one", "bearer two"],
                Indexing::Never,
            ),
            ("authorization", &["bearer three"], Indexing::Incremental),
            // Same length as the static name "range": a hint's length check
            // alone must still send the right name.
            ("x-abc", &["1", "2"], Indexing::No),
            ("range", &["bytes=0-1"], Indexing::No),
        ];
        for round in 0..3000 {
            if round % 500 == 499 {
                e.set_peer_limit([0, 64, 256, 4096][rng.usize(..4)]);
            }
            let mut order: Vec<usize> = (0..pool.len()).collect();
            if rng.u8(..4) == 0 {
                rng.shuffle(&mut order);
            }
            order.truncate(pool.len() - rng.usize(..3));
            let mut block = Vec::new();
            e.begin(&mut block);
            let mut want = Vec::new();
            for i in order {
                let (name, values, how) = pool[i];
                let value = values[rng.usize(..values.len())];
                e.field(name.as_bytes(), value.as_bytes(), how, &mut block);
                want.push((name.to_string(), value.to_string()));
            }
            assert_eq!(fields(&mut d, &block).unwrap(), want, "block {round}");
        }
    }

    #[test]
    fn a_smaller_peer_table_is_announced_and_followed() {
        let mut e = Encoder::default();
        let mut d = Decoder::default();
        let topic = |e: &mut Encoder| {
            let mut block = Vec::new();
            e.begin(&mut block);
            let (name, value) = (b"apns-topic", b"com.example.shop");
            e.field(name, value, Indexing::Incremental, &mut block);
            block
        };
        fields(&mut d, &topic(&mut e)).unwrap();
        e.set_peer_limit(0);
        let block = topic(&mut e);
        assert_eq!(block[0], 0x20, "size update to 0 first");
        let got = fields(&mut d, &block).unwrap();
        assert_eq!(got, [("apns-topic".into(), "com.example.shop".into())]);
        assert_eq!((d.table.size, e.table.size), (0, 0));
    }

    #[test]
    fn bad_blocks_are_errors() {
        let mut d = Decoder::default();
        for bad in [
            &[0x80][..],                   // index 0
            &[0xbe][..],                   // index 62, empty table
            &[0x40, 0x05, b'a'][..],       // truncated name
            &[0x82, 0x3f, 0xe1, 0x1f][..], // size update after a field
            &[0x3f, 0xe2, 0x1f][..],       // size update over 4,096
        ] {
            assert!(fields(&mut d, bad).is_err(), "{bad:?}");
        }
        let mut d = Decoder::default();
        assert!(
            fields(&mut d, &[0x3f, 0xe1, 0x1f, 0x82]).is_ok(),
            "update to 4,096, then GET"
        );
    }

    #[test]
    fn eviction_keeps_the_table_within_its_size() {
        let mut t = Table::new(100);
        t.insert(b"a".to_vec(), vec![b'x'; 30]); // 63
        t.insert(b"b".to_vec(), vec![b'y'; 10]); // 43: evicts "a"
        assert_eq!((t.entries.len(), t.size), (1, 43));
        t.insert(b"c".to_vec(), vec![b'z'; 100]); // too large: empties
        assert_eq!((t.entries.len(), t.size), (0, 0));
    }
}
