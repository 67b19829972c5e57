//! Row counts read from the `pg_dump` custom-format stream as it passes by.
//!
//! Counting rows with `count(*)` in the dump's snapshot costs the server a
//! second full scan of every table while `pg_dump` makes the first; on a
//! small machine that scan competes with the dump itself. The dump already
//! holds the answer: written to a pipe, a custom archive (`pg_dump -Fc`) is
//! its header, then the table of contents (TOC), then one data block per
//! entry with data. With `-Z0` a `TABLE DATA` block is `COPY` text, whose
//! unescaped newlines end rows (a newline inside a value is written `\n`).
//! So we parse the header and TOC (to map dump ids to `schema.table`), then
//! follow the block framing and count newlines in each table's data.
//!
//! Format (PostgreSQL's `pg_backup_archiver.c`, `pg_backup_custom.c`):
//! - `int` = one sign byte, then `intSize` bytes little-endian; `str` = int
//!   length (-1 = NULL), then the bytes; `offset` = one flag byte, then
//!   `offSize` bytes.
//! - header: `PGDMP`, version major/minor/revision, intSize, offSize, format
//!   (1 = custom); compression: int level (< 1.15) or one algorithm byte
//!   (>= 1.15); creation time (7 ints); 3 strs (database, server version,
//!   pg_dump version).
//! - TOC: int count, then per entry: int dump id, int has-data, strs table
//!   oid, oid, tag, desc; int section; strs defn, drop, copy statement,
//!   namespace, tablespace, table AM (>= 1.14); int relkind (>= 1.16); strs
//!   owner, "false"; dependency strs up to a NULL str; data offset.
//! - data: per block one byte type (1 = data, 3 = large objects) and int dump
//!   id; data is a sequence of (int length, bytes) ending with length 0;
//!   large-object blocks are (int oid, data) pairs ending with oid 0.
//! - `COPY` data ends with a `\.` line (and blank lines) in the versions we
//!   know; that line and what follows it are not rows.
//!
//! Anything unexpected (another version, compression, a framing error) makes
//! the scan give up: the caller then counts with `count(*)` as before, so a
//! count is never guessed.
//!
//! The same parser, without counting, also finds where each data block
//! starts ([`DumpScanner::locating`]), for the restore's seekable copy of the
//! dump: see [`TocOffsets`].

use std::collections::HashMap;
use std::io::Read;

/// Versions whose layout we know: 1.12 (PostgreSQL 9.6–10, separate BLOB
/// entries) through 1.16 (PostgreSQL 17–18).
const MIN_VERSION: (u8, u8) = (1, 12);
const MAX_VERSION: (u8, u8) = (1, 16);
/// Give up rather than buffer an absurd TOC.
const MAX_HEAD: usize = 512 << 20;
const TAIL: usize = 16;

const BLK_DATA: u8 = 1;
const BLK_BLOBS: u8 = 3;

/// Data offset flags of a TOC entry (`pg_backup_archiver.h`).
const K_OFFSET_POS_NOT_SET: u8 = 1;
const K_OFFSET_POS_SET: u8 = 2;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Head,
    BlockType,
    BlockId { blobs: bool },
    BlobOid,
    ChunkLen,
    ChunkData,
    Failed,
}

/// Push parser over the archive bytes; see the module documentation.
pub(crate) struct DumpScanner {
    state: State,
    head: Vec<u8>,
    next_try: usize,
    int_size: usize,
    /// dump id -> index into `tables`, for `TABLE DATA` entries.
    ids: HashMap<i64, usize>,
    tables: Vec<String>,
    counts: Vec<Option<u64>>,
    failure: Option<String>,
    // Partial integer across reads.
    int_buf: [u8; 9],
    int_len: usize,
    // Current block.
    in_blob: bool,
    table: Option<usize>,
    remaining: u64,
    newlines: u64,
    data_len: u64,
    tail: [u8; TAIL],
    tail_len: usize,
    /// Count rows (the backup) or only locate blocks (the restore).
    count_rows: bool,
    /// Stream offset of the next byte `feed_blocks` takes.
    pos: u64,
    /// Stream offset of the current block's type byte.
    block_start: u64,
    off_size: usize,
    offset_fields: Vec<OffsetField>,
    /// dump id -> stream offset of its data block.
    blocks: HashMap<i64, u64>,
}

impl DumpScanner {
    /// A scanner that counts each table's rows.
    pub(crate) fn new() -> DumpScanner {
        DumpScanner::with_mode(true)
    }

    /// A scanner that only records where each data block starts, for
    /// [`DumpScanner::finish_offsets`]; it accepts compressed archives too
    /// (their blocks are framed alike).
    pub(crate) fn locating() -> DumpScanner {
        DumpScanner::with_mode(false)
    }

    fn with_mode(count_rows: bool) -> DumpScanner {
        DumpScanner {
            state: State::Head,
            head: Vec::new(),
            next_try: 0,
            int_size: 4,
            ids: HashMap::new(),
            tables: Vec::new(),
            counts: Vec::new(),
            failure: None,
            int_buf: [0; 9],
            int_len: 0,
            in_blob: false,
            table: None,
            remaining: 0,
            newlines: 0,
            data_len: 0,
            tail: [0; TAIL],
            tail_len: 0,
            count_rows,
            pos: 0,
            block_start: 0,
            off_size: 0,
            offset_fields: Vec::new(),
            blocks: HashMap::new(),
        }
    }

    fn fail(&mut self, why: impl Into<String>) {
        if self.failure.is_none() {
            self.failure = Some(why.into());
        }
        self.state = State::Failed;
        self.head = Vec::new();
    }

    /// Feed the next bytes of the stream.
    pub(crate) fn feed(&mut self, data: &[u8]) {
        match self.state {
            State::Failed => {}
            State::Head => {
                self.head.extend_from_slice(data);
                if self.head.len() < self.next_try {
                    return;
                }
                match parse_head(&self.head, !self.count_rows) {
                    Ok(Some(h)) => {
                        let rest = std::mem::take(&mut self.head).split_off(h.consumed);
                        self.int_size = h.int_size;
                        self.pos = h.consumed as u64;
                        self.off_size = h.off_size;
                        self.offset_fields = h.offsets;
                        for (id, name) in h.tables {
                            self.ids.insert(id, self.tables.len());
                            self.tables.push(name);
                            self.counts.push(None);
                        }
                        self.state = State::BlockType;
                        self.feed_blocks(&rest);
                    }
                    Ok(None) if self.head.len() > MAX_HEAD => {
                        self.fail("the archive's table of contents is too large")
                    }
                    Ok(None) => self.next_try = (self.head.len() * 2).max(64 * 1024),
                    Err(e) => self.fail(e),
                }
            }
            _ => self.feed_blocks(data),
        }
    }

    /// Accumulate an `int`; `Some` once complete.
    fn take_int(&mut self, data: &mut &[u8]) -> Option<i64> {
        let need = 1 + self.int_size;
        if self.int_len == 0 && data.len() >= need {
            let v = decode_int(&data[..need]);
            *data = &data[need..];
            return Some(v);
        }
        let n = (need - self.int_len).min(data.len());
        self.int_buf[self.int_len..self.int_len + n].copy_from_slice(&data[..n]);
        self.int_len += n;
        *data = &data[n..];
        if self.int_len == need {
            self.int_len = 0;
            Some(decode_int(&self.int_buf[..need]))
        } else {
            None
        }
    }

    fn feed_blocks(&mut self, data: &[u8]) {
        let start = self.pos;
        self.pos += data.len() as u64;
        let total = data.len() as u64;
        let mut data = data;
        while !data.is_empty() {
            match self.state {
                State::BlockType => {
                    self.block_start = start + (total - data.len() as u64);
                    let t = data[0];
                    data = &data[1..];
                    self.state = match t {
                        BLK_DATA => State::BlockId { blobs: false },
                        BLK_BLOBS => State::BlockId { blobs: true },
                        other => return self.fail(format!("unknown data block type {other}")),
                    };
                }
                State::BlockId { blobs } => {
                    let Some(id) = self.take_int(&mut data) else {
                        continue;
                    };
                    self.in_blob = false;
                    // Two blocks for one entry would be a framing error: do
                    // not guess (a count or an offset).
                    if self.blocks.insert(id, self.block_start).is_some() {
                        let what = match self.ids.get(&id) {
                            Some(&t) => self.tables[t].clone(),
                            None => format!("dump id {id}"),
                        };
                        return self.fail(format!("two data blocks for {what}"));
                    }
                    if blobs {
                        self.table = None;
                        self.state = State::BlobOid;
                    } else {
                        self.table = match self.count_rows {
                            true => self.ids.get(&id).copied(),
                            false => None,
                        };
                        self.newlines = 0;
                        self.data_len = 0;
                        self.tail_len = 0;
                        self.state = State::ChunkLen;
                    }
                }
                State::BlobOid => {
                    let Some(oid) = self.take_int(&mut data) else {
                        continue;
                    };
                    if oid == 0 {
                        self.state = State::BlockType;
                    } else {
                        self.in_blob = true;
                        self.state = State::ChunkLen;
                    }
                }
                State::ChunkLen => {
                    let Some(len) = self.take_int(&mut data) else {
                        continue;
                    };
                    if len < 0 {
                        return self.fail(format!("negative data chunk length {len}"));
                    }
                    if len > 0 {
                        self.remaining = len as u64;
                        self.state = State::ChunkData;
                    } else if self.in_blob {
                        self.in_blob = false;
                        self.state = State::BlobOid;
                    } else {
                        self.end_table_block();
                        self.state = State::BlockType;
                    }
                }
                State::ChunkData => {
                    let n = (self.remaining.min(data.len() as u64)) as usize;
                    if self.table.is_some() {
                        self.count(&data[..n]);
                    }
                    data = &data[n..];
                    self.remaining -= n as u64;
                    if self.remaining == 0 {
                        self.state = State::ChunkLen;
                    }
                }
                State::Head | State::Failed => return,
            }
        }
    }

    fn count(&mut self, d: &[u8]) {
        self.newlines += d.iter().filter(|&&b| b == b'\n').count() as u64;
        self.data_len += d.len() as u64;
        if d.len() >= TAIL {
            self.tail.copy_from_slice(&d[d.len() - TAIL..]);
            self.tail_len = TAIL;
        } else {
            let keep = (TAIL - d.len()).min(self.tail_len);
            self.tail
                .copy_within(self.tail_len - keep..self.tail_len, 0);
            self.tail[keep..keep + d.len()].copy_from_slice(d);
            self.tail_len = keep + d.len();
        }
    }

    fn end_table_block(&mut self) {
        let Some(t) = self.table.take() else { return };
        let rows = match copy_rows(self.newlines, self.data_len, &self.tail[..self.tail_len]) {
            Some(r) => r,
            None => return self.fail(format!("data of {} does not end a row", self.tables[t])),
        };
        self.counts[t] = Some(rows);
    }

    /// At the end of the stream: `Ok` only when it was followed to a block
    /// boundary, else why not.
    fn settle(&mut self) -> Result<(), String> {
        if self.state == State::Head {
            // Parsing backs off while the head grows: try what is left.
            self.next_try = 0;
            self.feed(&[]);
        }
        if let Some(f) = self.failure.take() {
            return Err(f);
        }
        match self.state {
            State::BlockType => Ok(()),
            State::Head => Err("the stream ended inside the archive header".into()),
            _ => Err("the stream ended inside a data block".into()),
        }
    }

    /// `schema.table` -> rows for every table whose data block was seen
    /// whole; `Err` with the reason when the stream could not be followed.
    pub(crate) fn finish(mut self) -> Result<HashMap<String, u64>, String> {
        self.settle()?;
        Ok(self
            .tables
            .into_iter()
            .zip(self.counts)
            .filter_map(|(t, c)| c.map(|c| (t, c)))
            .collect())
    }

    /// Where to write each data block's offset into the archive's TOC, for
    /// the entries `pg_dump` could not fill in (it writes them only when its
    /// output is seekable, never into a pipe); `Err` with the reason when
    /// the stream could not be followed to its end.
    pub(crate) fn finish_offsets(mut self) -> Result<TocOffsets, String> {
        self.settle()?;
        let mut patches = Vec::new();
        for field in &self.offset_fields {
            if field.flag != K_OFFSET_POS_NOT_SET {
                continue;
            }
            let Some(&at) = self.blocks.get(&field.id) else {
                continue;
            };
            let mut bytes = vec![0u8; 1 + self.off_size];
            bytes[0] = K_OFFSET_POS_SET;
            let mut v = at;
            for b in bytes[1..].iter_mut() {
                *b = (v & 0xff) as u8;
                v >>= 8;
            }
            if v != 0 {
                return Err(format!("offset {at} does not fit the archive's offsets"));
            }
            patches.push((field.at, bytes));
        }
        Ok(TocOffsets { patches })
    }
}

/// The data offsets a streamed custom archive lacks, found by reading it
/// through: written into a seekable copy, they let `pg_restore --jobs` seek
/// straight to each table's data instead of skipping through every block
/// before it (one length word per `COPY` row with `-Z0`), and order the
/// tables largest first, which it can only do from the offsets.
#[derive(Debug, Default)]
pub(crate) struct TocOffsets {
    /// (position of the offset field in the archive, its new bytes).
    pub patches: Vec<(u64, Vec<u8>)>,
}

/// Rows in a `COPY` text block: its newlines, less the `\.` end line and
/// anything after it. `tail` is the end of the data (up to [`TAIL`] bytes).
/// `None` when the data does not end with a newline.
fn copy_rows(newlines: u64, len: u64, tail: &[u8]) -> Option<u64> {
    if len == 0 {
        return Some(0);
    }
    if tail.last() != Some(&b'\n') {
        return None;
    }
    let trailing = tail.iter().rev().take_while(|&&b| b == b'\n').count();
    let before = &tail[..tail.len() - trailing];
    // `\.` alone on its line: at the start of the data or after a newline.
    let at_line_start = before.len() >= 3 && before[before.len() - 3] == b'\n'
        || before.len() == 2 && len == tail.len() as u64;
    if before.ends_with(b"\\.") && at_line_start {
        Some(newlines - trailing as u64)
    } else {
        Some(newlines)
    }
}

fn decode_int(b: &[u8]) -> i64 {
    let mut v: i64 = 0;
    for (i, &x) in b[1..].iter().enumerate() {
        v |= i64::from(x) << (8 * i);
    }
    if b[0] != 0 {
        -v
    } else {
        v
    }
}

struct Head {
    consumed: usize,
    int_size: usize,
    off_size: usize,
    tables: Vec<(i64, String)>,
    database: Vec<TocEntry>,
    offsets: Vec<OffsetField>,
}

/// A TOC entry's data offset field: whose, where, and its flag byte.
#[derive(Debug, Clone, Copy)]
struct OffsetField {
    id: i64,
    at: u64,
    flag: u8,
}

/// A TOC entry about the database itself: `DATABASE` (whose owner is the
/// database's owner), `DATABASE PROPERTIES`, and the `COMMENT`, `ACL` and
/// `SECURITY LABEL` entries tagged `DATABASE name`. `pg_restore` prints
/// these only with `--create`; a restore under another name replays them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct TocEntry {
    pub desc: String,
    pub tag: String,
    pub defn: String,
    pub owner: String,
}

fn is_database_entry(desc: &[u8], tag: &[u8]) -> bool {
    match desc {
        b"DATABASE" | b"DATABASE PROPERTIES" => true,
        b"COMMENT" | b"ACL" | b"SECURITY LABEL" => tag.starts_with(b"DATABASE "),
        _ => false,
    }
}

/// The database-level TOC entries of a custom-format archive, from its
/// first bytes: `Ok(None)` while `head` does not yet hold the whole TOC.
pub(crate) fn database_entries(head: &[u8]) -> Result<Option<Vec<TocEntry>>, String> {
    Ok(parse_head(head, false)?.map(|h| h.database))
}

/// Cursor over the buffered head; `None` from a read means "need more bytes".
struct Cur<'a> {
    b: &'a [u8],
    pos: usize,
    int_size: usize,
}

impl Cur<'_> {
    fn bytes(&mut self, n: usize) -> Option<&[u8]> {
        let s = self.b.get(self.pos..self.pos.checked_add(n)?)?;
        self.pos += n;
        Some(s)
    }
    fn byte(&mut self) -> Option<u8> {
        self.bytes(1).map(|b| b[0])
    }
    fn int(&mut self) -> Option<i64> {
        let n = 1 + self.int_size;
        self.bytes(n).map(decode_int)
    }
    /// `Some(None)` is a NULL string.
    fn str(&mut self) -> Option<Option<&[u8]>> {
        let n = self.int()?;
        if n < 0 {
            return Some(None);
        }
        self.bytes(n as usize).map(Some)
    }
}

/// Parse header and TOC. `Ok(None)`: incomplete, feed more. A compressed
/// archive is refused unless `compressed_ok` (its rows cannot be counted).
fn parse_head(b: &[u8], compressed_ok: bool) -> Result<Option<Head>, String> {
    if b.len() < 11 {
        return Ok(None);
    }
    if &b[..5] != b"PGDMP" {
        return Err("not a custom-format archive".into());
    }
    let ver = (b[5], b[6]);
    if ver < MIN_VERSION || ver > MAX_VERSION {
        return Err(format!(
            "archive version {}.{} is not one we know",
            ver.0, ver.1
        ));
    }
    let int_size = b[8] as usize;
    let off_size = b[9] as usize;
    if !(1..=8).contains(&int_size) || !(1..=16).contains(&off_size) {
        return Err(format!("odd integer sizes {int_size}/{off_size}"));
    }
    if b[10] != 1 {
        return Err(format!("archive format {} is not custom", b[10]));
    }
    let mut c = Cur {
        b,
        pos: 11,
        int_size,
    };
    macro_rules! need {
        ($e:expr) => {
            match $e {
                Some(v) => v,
                None => return Ok(None),
            }
        };
    }
    let compressed = if ver >= (1, 15) {
        i64::from(need!(c.byte()))
    } else {
        need!(c.int())
    };
    if compressed != 0 && !compressed_ok {
        return Err("the archive is compressed".into());
    }
    for _ in 0..7 {
        need!(c.int());
    }
    for _ in 0..3 {
        need!(c.str());
    }
    let count = need!(c.int());
    if count < 0 {
        return Err("negative TOC entry count".into());
    }
    let mut tables = Vec::new();
    let mut database = Vec::new();
    let mut offsets = Vec::new();
    let text = |v: Option<&[u8]>| String::from_utf8_lossy(v.unwrap_or_default()).into_owned();
    for _ in 0..count {
        let id = need!(c.int());
        let _has_data = need!(c.int());
        need!(c.str()); // table oid
        need!(c.str()); // oid
        let tag = need!(c.str()).map(|s| s.to_vec());
        let desc = need!(c.str()).map(|s| s.to_vec());
        need!(c.int()); // section
        let defn = need!(c.str()).map(|s| s.to_vec());
        need!(c.str()); // drop statement
        need!(c.str()); // copy statement
        let namespace = need!(c.str()).map(|s| s.to_vec());
        need!(c.str()); // tablespace
        if ver >= (1, 14) {
            need!(c.str()); // table access method
        }
        if ver >= (1, 16) {
            need!(c.int()); // relkind
        }
        let owner = need!(c.str()).map(|s| s.to_vec());
        need!(c.str()); // "false" (with oids)
        loop {
            if need!(c.str()).is_none() {
                break;
            }
        }
        let at = c.pos as u64;
        let flag = need!(c.bytes(1 + off_size))[0]; // data offset
        offsets.push(OffsetField { id, at, flag });
        if is_database_entry(
            desc.as_deref().unwrap_or_default(),
            tag.as_deref().unwrap_or_default(),
        ) {
            database.push(TocEntry {
                desc: text(desc.as_deref()),
                tag: text(tag.as_deref()),
                defn: text(defn.as_deref()),
                owner: text(owner.as_deref()),
            });
        }
        if desc.as_deref() == Some(b"TABLE DATA") {
            let (Some(ns), Some(tag)) = (namespace, tag) else {
                return Err("a TABLE DATA entry without schema or name".into());
            };
            let name = format!(
                "{}.{}",
                String::from_utf8_lossy(&ns),
                String::from_utf8_lossy(&tag)
            );
            tables.push((id, name));
        }
    }
    Ok(Some(Head {
        consumed: c.pos,
        int_size,
        off_size,
        tables,
        database,
        offsets,
    }))
}

/// A reader that shows every byte it passes on to a [`DumpScanner`].
pub(crate) struct ScanningReader<R> {
    pub inner: R,
    pub scanner: DumpScanner,
}

impl<R: Read> Read for ScanningReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.scanner.feed(&buf[..n]);
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn int(v: i64) -> Vec<u8> {
        let mut out = vec![u8::from(v < 0)];
        out.extend_from_slice(&(v.unsigned_abs() as u32).to_le_bytes());
        out
    }
    fn s(v: Option<&str>) -> Vec<u8> {
        match v {
            None => int(-1),
            Some(t) => {
                let mut out = int(t.len() as i64);
                out.extend_from_slice(t.as_bytes());
                out
            }
        }
    }

    fn archive(minor: u8, blocks: &[(i64, Vec<&[u8]>)]) -> Vec<u8> {
        let mut a = b"PGDMP".to_vec();
        a.extend_from_slice(&[1, minor, 0, 4, 8, 1]);
        if minor >= 15 {
            a.push(0);
        } else {
            a.extend(int(0));
        }
        for _ in 0..7 {
            a.extend(int(1));
        }
        for x in ["db", "15.0", "15.0"] {
            a.extend(s(Some(x)));
        }
        let entries = [
            (1, "SCHEMA", "app", None),
            (2, "TABLE DATA", "things", Some("app")),
            (3, "TABLE DATA", "empty", Some("public")),
            (4, "BLOBS", "BLOBS", None),
            (5, "TABLE DATA", "nocols", Some("public")),
        ];
        a.extend(int(entries.len() as i64));
        for (id, desc, tag, ns) in entries {
            a.extend(int(id));
            a.extend(int(1));
            a.extend(s(Some("1259")));
            a.extend(s(Some("16384")));
            a.extend(s(Some(tag)));
            a.extend(s(Some(desc)));
            a.extend(int(2));
            a.extend(s(Some("")));
            a.extend(s(Some("")));
            a.extend(s(None));
            a.extend(s(ns));
            a.extend(s(Some("")));
            if minor >= 14 {
                a.extend(s(Some("heap")));
            }
            if minor >= 16 {
                a.extend(int(114));
            }
            a.extend(s(Some("postgres")));
            a.extend(s(Some("false")));
            a.extend(s(Some("1")));
            a.extend(s(None));
            a.push(K_OFFSET_POS_NOT_SET);
            a.extend_from_slice(&[0; 8]);
        }
        for (id, chunks) in blocks {
            if *id == 4 {
                a.push(BLK_BLOBS);
                a.extend(int(4));
                a.extend(int(777));
                a.extend(int(5));
                a.extend_from_slice(b"\n\n\\.\n");
                a.extend(int(0));
                a.extend(int(0));
                continue;
            }
            a.push(BLK_DATA);
            a.extend(int(*id));
            for c in chunks {
                a.extend(int(c.len() as i64));
                a.extend_from_slice(c);
            }
            a.extend(int(0));
        }
        a
    }

    fn sample(minor: u8) -> Vec<u8> {
        archive(
            minor,
            &[
                (
                    2,
                    vec![
                        b"1\ta\\nb\n",
                        b"2\t\\\\.\n",
                        b"3\tx",
                        b"y\n4\t\\.\n",
                        b"\\.\n\n\n",
                    ],
                ),
                (3, vec![b"\\.\n\n\n"]),
                (4, vec![]),
                (5, vec![b"\n\n\n", b"\\.\n\n\n"]),
            ],
        )
    }

    fn scan(bytes: &[u8], step: usize) -> Result<HashMap<String, u64>, String> {
        let mut sc = DumpScanner::new();
        for piece in bytes.chunks(step) {
            sc.feed(piece);
        }
        sc.finish()
    }

    #[test]
    fn counts_rows_across_any_split() {
        for minor in [12, 14, 15, 16] {
            let a = sample(minor);
            for step in [1, 2, 3, 7, 64, 1 << 20] {
                let c = scan(&a, step).unwrap();
                assert_eq!(c["app.things"], 4, "minor {minor} step {step}");
                assert_eq!(c["public.empty"], 0);
                assert_eq!(c["public.nocols"], 3);
                assert_eq!(c.len(), 3);
            }
        }
    }

    /// The TOC entries' (dump id, flag, offset), read back.
    fn toc_offsets(a: &[u8]) -> Vec<(i64, u8, u64)> {
        let h = parse_head(a, true).unwrap().unwrap();
        h.offsets
            .iter()
            .map(|f| {
                let at = f.at as usize;
                let mut v = 0u64;
                for (i, &b) in a[at + 1..at + 9].iter().enumerate() {
                    v |= u64::from(b) << (8 * i);
                }
                (f.id, a[at], v)
            })
            .collect()
    }

    #[test]
    fn locates_every_data_block_across_any_split() {
        for minor in [12, 14, 15, 16] {
            let a = sample(minor);
            for step in [1, 2, 3, 7, 64, 1 << 20] {
                let mut sc = DumpScanner::locating();
                for piece in a.chunks(step) {
                    sc.feed(piece);
                }
                let offsets = sc.finish_offsets().unwrap();
                let mut patched = a.clone();
                for (at, bytes) in &offsets.patches {
                    let at = *at as usize;
                    patched[at..at + bytes.len()].copy_from_slice(bytes);
                }
                assert_eq!(offsets.patches.len(), 4, "minor {minor} step {step}");
                for (id, flag, off) in toc_offsets(&patched) {
                    if id == 1 {
                        // The schema has no data block: left as it was.
                        assert_eq!((flag, off), (K_OFFSET_POS_NOT_SET, 0));
                        continue;
                    }
                    assert_eq!(flag, K_OFFSET_POS_SET);
                    let at = off as usize;
                    assert!(matches!(patched[at], BLK_DATA | BLK_BLOBS));
                    assert_eq!(decode_int(&patched[at + 1..at + 6]), id);
                }
                // Nothing but offset fields changed.
                let changed = a.iter().zip(&patched).filter(|(x, y)| x != y).count();
                assert!(changed <= 4 * 9);
            }
        }
    }

    #[test]
    fn locating_keeps_offsets_already_set_and_gives_up_on_a_cut_stream() {
        let mut a = sample(14);
        let fields = parse_head(&a, true).unwrap().unwrap().offsets;
        for f in &fields {
            a[f.at as usize] = K_OFFSET_POS_SET;
        }
        let mut sc = DumpScanner::locating();
        sc.feed(&a);
        assert!(sc.finish_offsets().unwrap().patches.is_empty());
        let mut sc = DumpScanner::locating();
        sc.feed(&a[..a.len() - 2]);
        assert!(sc.finish_offsets().is_err());
        // Compressed archives are framed alike: located, not counted.
        let mut a = sample(14);
        a[11 + 1] = 6;
        let mut sc = DumpScanner::locating();
        sc.feed(&a);
        assert!(sc.finish_offsets().is_ok());
    }

    #[test]
    fn without_terminator_every_line_is_a_row() {
        let a = archive(14, &[(2, vec![b"1\n2\n"]), (3, vec![])]);
        let c = scan(&a, 5).unwrap();
        assert_eq!(c["app.things"], 2);
        assert_eq!(c["public.empty"], 0);
        assert!(!c.contains_key("public.nocols"));
    }

    #[test]
    fn refuses_what_it_does_not_know() {
        let mut a = sample(14);
        a[6] = 17;
        assert!(scan(&a, 4096).unwrap_err().contains("version"));
        let mut a = sample(14);
        a[11 + 1] = 6; // compression level 6
        assert!(scan(&a, 4096).unwrap_err().contains("compressed"));
        let a = sample(14);
        assert!(scan(&a[..a.len() - 3], 4096).is_err());
        let mut a = sample(14);
        a.push(9);
        assert!(scan(&a, 4096).unwrap_err().contains("block type"));
        assert!(scan(b"PGDMP", 4096).is_err());
        let a = archive(14, &[(2, vec![b"1\n2"])]);
        assert!(scan(&a, 4096).is_err());
    }
}
