//! Finds the type ids of named typedefs and the byte offsets of named struct members in the kernel's
//! BTF (`<sysfs>/kernel/btf/vmlinux`) by walking its type records in bounded chunks: the attach ids
//! of the `tp_btf` programs and the offsets of the fields they read, without parsing the whole BTF
//! into memory (aya's parsed copy of a 5.5 MiB vmlinux BTF costs ~19 MiB). It knows the BTF
//! layout (Documentation/bpf/btf.rst), not the programs; it does not validate what it skips over.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use crate::files::{self, FileError};
use crate::issue::IssueKind;

/// `btf_header.magic`, read in the byte order of the file.
const MAGIC: u16 = 0xeb9f;
/// The only `btf_header.version` there is.
const VERSION: u8 = 1;
/// `btf_header` up to `str_len`: magic, version, flags, hdr_len, type_off, type_len, str_off, str_len.
const HEADER_BYTES: usize = 24;
/// `btf_type`: name_off, info, size/type.
const TYPE_BYTES: usize = 12;
const KIND_STRUCT: u8 = 4;
const KIND_TYPEDEF: u8 = 8;
/// `btf_member`: name_off, type, offset.
const MEMBER_BYTES: u64 = 12;
/// Bytes of type records read per `pread`.
const CHUNK_BYTES: usize = 64 * 1024;
/// Longest type or string section walked (a vmlinux BTF of a large distribution kernel has ~6 MiB).
pub const MAX_SECTION_BYTES: u32 = 256 << 20;

/// A file that is not a BTF blob this reader can walk.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Malformed {
    #[error("shorter than the {HEADER_BYTES}-byte BTF header")]
    ShortHeader,
    #[error("magic {0:#06x} is not BTF's 0xeb9f")]
    Magic(u16),
    #[error("BTF version {0}, only 1 is known")]
    Version(u8),
    #[error("header length {0} is shorter than {HEADER_BYTES} bytes")]
    HeaderLength(u32),
    #[error("the {section} section ends past the end of the file")]
    SectionPastEnd { section: &'static str },
    #[error(
        "the {section} section is {len} bytes, more than the {MAX_SECTION_BYTES} this reader walks"
    )]
    SectionTooLarge { section: &'static str, len: u32 },
    #[error("type {type_id} (kind {kind}) is of a kind this reader does not know")]
    UnknownKind { type_id: u32, kind: u8 },
    #[error("type {type_id} runs past the end of the type section")]
    TypePastEnd { type_id: u32 },
    #[error("type {type_id}'s name offset {name_off} is outside the string section")]
    NameOutside { type_id: u32, name_off: u32 },
    #[error("type {type_id}'s name runs to the end of the string section without a NUL")]
    UnterminatedName { type_id: u32 },
    #[error("member {member} of type {type_id} is a bit field (bit offset {bit_offset})")]
    BitField {
        type_id: u32,
        member: String,
        bit_offset: u32,
    },
}

/// Why the ids could not be found.
#[derive(Debug, thiserror::Error)]
pub enum BtfError {
    #[error(transparent)]
    File(#[from] FileError),
    #[error("cannot read {path} at byte {offset}: {source}")]
    Read {
        path: PathBuf,
        offset: u64,
        source: io::Error,
    },
    #[error("{path}: {what}")]
    Malformed { path: PathBuf, what: Malformed },
    #[error("{path} holds no typedef {name}")]
    MissingTypedef { path: PathBuf, name: String },
    #[error("{path} holds no struct {structure} with a member {member}")]
    MissingMember {
        path: PathBuf,
        structure: String,
        member: String,
    },
}

impl BtfError {
    /// What failed, as the `kind` of a source issue. A missing `btf_trace_*` typedef is a kernel
    /// without that tracepoint (older than 5.5), a missing member a kernel whose types differ from
    /// what the program reads: the program cannot attach.
    pub fn issue_kind(&self) -> IssueKind {
        match self {
            BtfError::File(file) => file.issue_kind(),
            BtfError::Read { source, .. } => IssueKind::of_io(source),
            BtfError::Malformed {
                what: Malformed::SectionTooLarge { .. },
                ..
            } => IssueKind::TooLarge,
            BtfError::Malformed { .. } => IssueKind::Parse,
            BtfError::MissingTypedef { .. } | BtfError::MissingMember { .. } => IssueKind::Attach,
        }
    }
}

/// Where the walker reads from: a file by `pread`, or bytes in memory (tests, fuzzing).
pub trait ReadAt {
    /// Fills as much of `buf` as there is from `offset` on; returns the bytes read (fewer only at
    /// the end of the data).
    fn read_at_most(&self, buf: &mut [u8], offset: u64) -> io::Result<usize>;
}

impl ReadAt for File {
    fn read_at_most(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        let mut filled = 0;
        while filled < buf.len() {
            let Some(rest) = buf.get_mut(filled..) else {
                break;
            };
            match self.read_at(rest, offset + filled as u64) {
                Ok(0) => break,
                Ok(n) => filled += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(filled)
    }
}

impl ReadAt for [u8] {
    fn read_at_most(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        let start = usize::try_from(offset)
            .unwrap_or(usize::MAX)
            .min(self.len());
        let available = self.get(start..).unwrap_or_default();
        let n = available.len().min(buf.len());
        if let (Some(to), Some(from)) = (buf.get_mut(..n), available.get(..n)) {
            to.copy_from_slice(from);
        }
        Ok(n)
    }
}

/// A failure of the walk, before the file's path is attached.
#[derive(Debug)]
pub enum WalkError {
    Read { offset: u64, source: io::Error },
    Malformed(Malformed),
}

impl WalkError {
    fn at(self, path: &Path) -> BtfError {
        match self {
            WalkError::Read { offset, source } => BtfError::Read {
                path: path.to_path_buf(),
                offset,
                source,
            },
            WalkError::Malformed(what) => BtfError::Malformed {
                path: path.to_path_buf(),
                what,
            },
        }
    }
}

impl From<Malformed> for WalkError {
    fn from(what: Malformed) -> Self {
        WalkError::Malformed(what)
    }
}

/// The ids of the typedefs called `typedefs` and the byte offsets of the struct members `members`
/// (`(struct, member)`) in the BTF file at `path`, in the order asked: the first typedef of each
/// name, as `aya::Btf::id_by_type_name_kind(name, BtfKind::Typedef)` finds it, and the member of
/// the first struct of that name that has members.
pub fn kernel_ids<const N: usize, const M: usize>(
    path: &Path,
    typedefs: [&str; N],
    members: [(&str, &str); M],
) -> Result<([u32; N], [u32; M]), BtfError> {
    let file = files::open_regular(path)?;
    let (found_typedefs, found_members) = find(&file, typedefs, members).map_err(|e| e.at(path))?;
    let ids = all_found(found_typedefs, typedefs, |name| BtfError::MissingTypedef {
        path: path.to_path_buf(),
        name: name.to_string(),
    })?;
    let offsets = all_found(found_members, members, |(structure, member)| {
        BtfError::MissingMember {
            path: path.to_path_buf(),
            structure: structure.to_string(),
            member: member.to_string(),
        }
    })?;
    Ok((ids, offsets))
}

/// Every value of `found`, or the error `missing` makes of the first thing `asked` that was not.
fn all_found<T: Copy, const K: usize>(
    found: [Option<u32>; K],
    asked: [T; K],
    missing: impl Fn(T) -> BtfError,
) -> Result<[u32; K], BtfError> {
    let mut values = [0u32; K];
    for ((value, found), asked) in values.iter_mut().zip(found).zip(asked) {
        *value = found.ok_or_else(|| missing(asked))?;
    }
    Ok(values)
}

/// The header fields the walk needs, in the file's byte order.
struct Header {
    little_endian: bool,
    types: std::ops::Range<u64>,
    strings: std::ops::Range<u64>,
}

impl Header {
    fn u32_at(&self, bytes: &[u8], at: usize) -> u32 {
        let word: [u8; 4] = bytes
            .get(at..at + 4)
            .and_then(|b| b.try_into().ok())
            .unwrap_or_default();
        if self.little_endian {
            u32::from_le_bytes(word)
        } else {
            u32::from_be_bytes(word)
        }
    }
}

fn read_header<R: ReadAt + ?Sized>(source: &R) -> Result<Header, WalkError> {
    let mut bytes = [0u8; HEADER_BYTES];
    let n = source
        .read_at_most(&mut bytes, 0)
        .map_err(|source| WalkError::Read { offset: 0, source })?;
    if n < HEADER_BYTES {
        return Err(Malformed::ShortHeader.into());
    }
    let magic = [bytes[0], bytes[1]];
    let little_endian = if u16::from_le_bytes(magic) == MAGIC {
        true
    } else if u16::from_be_bytes(magic) == MAGIC {
        false
    } else {
        return Err(Malformed::Magic(u16::from_le_bytes(magic)).into());
    };
    if bytes[2] != VERSION {
        return Err(Malformed::Version(bytes[2]).into());
    }
    let mut header = Header {
        little_endian,
        types: 0..0,
        strings: 0..0,
    };
    let hdr_len = header.u32_at(&bytes, 4);
    if (hdr_len as usize) < HEADER_BYTES {
        return Err(Malformed::HeaderLength(hdr_len).into());
    }
    let section = |off_at: usize, len_at: usize, name: &'static str| {
        let start = u64::from(hdr_len) + u64::from(header.u32_at(&bytes, off_at));
        let len = header.u32_at(&bytes, len_at);
        if len > MAX_SECTION_BYTES {
            return Err(Malformed::SectionTooLarge { section: name, len });
        }
        Ok(start..start + u64::from(len))
    };
    let types = section(8, 12, "type")?;
    let strings = section(16, 20, "string")?;
    // A file cut short is refused before the walk, whether or not the names lie in what is left.
    for (range, name) in [(&types, "type"), (&strings, "string")] {
        if let Some(last) = range.end.checked_sub(1).filter(|_| !range.is_empty()) {
            let n = source
                .read_at_most(&mut [0u8], last)
                .map_err(|source| WalkError::Read {
                    offset: last,
                    source,
                })?;
            if n == 0 {
                return Err(Malformed::SectionPastEnd { section: name }.into());
            }
        }
    }
    header.types = types;
    header.strings = strings;
    Ok(header)
}

/// Bytes of kind-specific data after a `btf_type` of `kind` with `vlen` members, or `None` for a
/// kind this reader does not know (0 is `BTF_KIND_UNKN`, which no type record may have).
fn trailing_bytes(kind: u8, vlen: u64) -> Option<u64> {
    Some(match kind {
        // INT: one u32 of encoding; VAR: linkage; DECL_TAG: component index.
        1 | 14 | 17 => 4,
        // ARRAY: btf_array.
        3 => 12,
        // STRUCT, UNION: btf_member; DATASEC: btf_var_secinfo; ENUM64: btf_enum64.
        4 | 5 | 15 | 19 => 12 * vlen,
        // ENUM: btf_enum; FUNC_PROTO: btf_param.
        6 | 13 => 8 * vlen,
        // PTR, FWD, TYPEDEF, VOLATILE, CONST, RESTRICT, FUNC, FLOAT, TYPE_TAG.
        2 | 7 | 8 | 9 | 10 | 11 | 12 | 16 | 18 => 0,
        _ => return None,
    })
}

/// What [`find`] found: the id of each typedef and the byte offset of each member asked, in order.
pub type Found<const N: usize, const M: usize> = ([Option<u32>; N], [Option<u32>; M]);

/// Walks the type section of the BTF in `source` and returns, for each of `typedefs`, the id of the
/// first typedef of that name (ids count from 1: id 0 is `void`), and for each of `members`
/// (`(struct, member)`), the byte offset of that member in the first struct of that name with
/// members. The walk stops once everything is found; until then a record of an unknown kind or one
/// that runs past its section is an error.
pub fn find<R: ReadAt + ?Sized, const N: usize, const M: usize>(
    source: &R,
    typedefs: [&str; N],
    members: [(&str, &str); M],
) -> Result<Found<N, M>, WalkError> {
    let header = read_header(source)?;
    let mut found = [None; N];
    let mut offsets = [None; M];
    // Structs already searched (the first one of each wanted name with members).
    let mut searched = [false; M];
    let longest = typedefs
        .iter()
        .chain(members.iter().flat_map(|(s, m)| [s, m]))
        .map(|n| n.len())
        .max()
        .unwrap_or(0);
    // A name and its terminating NUL.
    let mut name_buf = vec![0u8; longest + 1];
    let mut chunk = vec![0u8; CHUNK_BYTES];
    // `chunk[..filled]` holds the section's bytes from `chunk_at` on.
    let (mut chunk_at, mut filled) = (header.types.start, 0usize);
    let mut at = header.types.start;
    let mut type_id: u32 = 1;
    while at < header.types.end
        && (found.iter().any(Option::is_none) || searched.iter().any(|done| !done))
    {
        if at + TYPE_BYTES as u64 > header.types.end {
            return Err(Malformed::TypePastEnd { type_id }.into());
        }
        let offset_in_chunk = at.checked_sub(chunk_at).map(|o| o as usize);
        let record = match offset_in_chunk {
            Some(o) if o + TYPE_BYTES <= filled => o,
            _ => {
                let want = (header.types.end - at).min(CHUNK_BYTES as u64) as usize;
                let buf = chunk.get_mut(..want).unwrap_or_default();
                filled = source
                    .read_at_most(buf, at)
                    .map_err(|source| WalkError::Read { offset: at, source })?;
                chunk_at = at;
                if filled < TYPE_BYTES {
                    return Err(Malformed::SectionPastEnd { section: "type" }.into());
                }
                0
            }
        };
        let bytes = chunk.get(record..record + TYPE_BYTES).unwrap_or_default();
        let name_off = header.u32_at(bytes, 0);
        let info = header.u32_at(bytes, 4);
        let kind = ((info >> 24) & 0x1f) as u8;
        let vlen = u64::from(info & 0xffff);
        let trailing =
            trailing_bytes(kind, vlen).ok_or(Malformed::UnknownKind { type_id, kind })?;
        if at + TYPE_BYTES as u64 + trailing > header.types.end {
            return Err(Malformed::TypePastEnd { type_id }.into());
        }
        if kind == KIND_TYPEDEF && name_off != 0 && found.iter().any(Option::is_none) {
            let name = read_name(source, &header, name_off, type_id, &mut name_buf)?;
            for (slot, wanted) in found.iter_mut().zip(typedefs) {
                if slot.is_none() && name == wanted.as_bytes() {
                    *slot = Some(type_id);
                }
            }
        }
        if kind == KIND_STRUCT && name_off != 0 && vlen > 0 && searched.iter().any(|done| !done) {
            let name = read_name(source, &header, name_off, type_id, &mut name_buf)?.to_vec();
            if members
                .iter()
                .zip(&searched)
                .any(|((structure, _), done)| !done && name == structure.as_bytes())
            {
                let kind_flag = info >> 31 == 1;
                let fields = Fields {
                    at: at + TYPE_BYTES as u64,
                    count: vlen,
                    kind_flag,
                    type_id,
                };
                fields.search(source, &header, &name, members, &mut offsets, &mut name_buf)?;
                for ((structure, _), done) in members.iter().zip(searched.iter_mut()) {
                    if name == structure.as_bytes() {
                        *done = true;
                    }
                }
            }
        }
        at += TYPE_BYTES as u64 + trailing;
        type_id = type_id.saturating_add(1);
    }
    Ok((found, offsets))
}

/// The `btf_member` records of one struct.
struct Fields {
    /// Where the first record starts.
    at: u64,
    count: u64,
    /// The struct's `kind_flag`: member offsets carry a bit-field size in their high 8 bits.
    kind_flag: bool,
    type_id: u32,
}

impl Fields {
    /// Records in `offsets` the byte offset of every member of `members` asked of the struct
    /// `structure` that it has.
    fn search<R: ReadAt + ?Sized, const M: usize>(
        &self,
        source: &R,
        header: &Header,
        structure: &[u8],
        members: [(&str, &str); M],
        offsets: &mut [Option<u32>; M],
        name_buf: &mut [u8],
    ) -> Result<(), WalkError> {
        for index in 0..self.count {
            let record_at = self.at + index * MEMBER_BYTES;
            let mut record = [0u8; MEMBER_BYTES as usize];
            let n = source
                .read_at_most(&mut record, record_at)
                .map_err(|source| WalkError::Read {
                    offset: record_at,
                    source,
                })?;
            if n < record.len() {
                return Err(Malformed::SectionPastEnd { section: "type" }.into());
            }
            let name_off = header.u32_at(&record, 0);
            if name_off == 0 {
                continue; // an anonymous struct or union: its members are not searched
            }
            let offset = header.u32_at(&record, 8);
            let bit_offset = if self.kind_flag {
                offset & 0x00ff_ffff
            } else {
                offset
            };
            let name = read_name(source, header, name_off, self.type_id, name_buf)?;
            for (slot, (wanted_struct, wanted_member)) in offsets.iter_mut().zip(members) {
                if slot.is_none()
                    && structure == wanted_struct.as_bytes()
                    && name == wanted_member.as_bytes()
                {
                    if bit_offset % 8 != 0 {
                        return Err(Malformed::BitField {
                            type_id: self.type_id,
                            member: wanted_member.to_string(),
                            bit_offset,
                        }
                        .into());
                    }
                    *slot = Some(bit_offset / 8);
                }
            }
        }
        Ok(())
    }
}

/// The name at `name_off` in the string section, read into `buf` (its length is the longest name
/// asked plus one): the bytes before the first NUL, or all of `buf` when the name is longer than
/// any asked (then it matches none).
fn read_name<'b, R: ReadAt + ?Sized>(
    source: &R,
    header: &Header,
    name_off: u32,
    type_id: u32,
    buf: &'b mut [u8],
) -> Result<&'b [u8], WalkError> {
    let start = header.strings.start + u64::from(name_off);
    if start >= header.strings.end {
        return Err(Malformed::NameOutside { type_id, name_off }.into());
    }
    let buf_len = buf.len();
    let want = (header.strings.end - start).min(buf_len as u64) as usize;
    let buf = buf.get_mut(..want).unwrap_or_default();
    let n = source
        .read_at_most(buf, start)
        .map_err(|source| WalkError::Read {
            offset: start,
            source,
        })?;
    if n < want {
        return Err(Malformed::SectionPastEnd { section: "string" }.into());
    }
    let name = buf.get(..n).unwrap_or_default();
    match name.iter().position(|b| *b == 0) {
        Some(end) => Ok(name.get(..end).unwrap_or_default()),
        // Longer than any name asked: it matches none.
        None if n == buf_len => Ok(name),
        None => Err(Malformed::UnterminatedName { type_id }.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// [`find`] for typedefs only.
    fn find_typedefs<const N: usize>(
        source: &[u8],
        names: [&str; N],
    ) -> Result<[Option<u32>; N], WalkError> {
        find(source, names, []).map(|(found, _)| found)
    }

    /// A BTF blob built by hand: types and strings, in either byte order.
    struct Blob {
        big_endian: bool,
        types: Vec<u8>,
        strings: Vec<u8>,
        next_id: u32,
    }

    impl Blob {
        fn new(big_endian: bool) -> Blob {
            Blob {
                big_endian,
                types: Vec::new(),
                strings: vec![0],
                next_id: 1,
            }
        }

        fn word(&self, value: u32) -> [u8; 4] {
            if self.big_endian {
                value.to_be_bytes()
            } else {
                value.to_le_bytes()
            }
        }

        fn string(&mut self, name: &str) -> u32 {
            let at = self.strings.len() as u32;
            self.strings.extend_from_slice(name.as_bytes());
            self.strings.push(0);
            at
        }

        /// Adds a type of `kind` with `vlen` members and `trailing` bytes after it; returns its id.
        fn ty(&mut self, name: &str, kind: u8, vlen: u16, trailing: usize) -> u32 {
            let name_off = if name.is_empty() {
                0
            } else {
                self.string(name)
            };
            let info = (u32::from(kind) << 24) | u32::from(vlen);
            for value in [name_off, info, 4] {
                let word = self.word(value);
                self.types.extend_from_slice(&word);
            }
            self.types.extend(std::iter::repeat_n(0xa5, trailing));
            let id = self.next_id;
            self.next_id += 1;
            id
        }

        fn typedef(&mut self, name: &str) -> u32 {
            self.ty(name, KIND_TYPEDEF, 0, 0)
        }

        /// A struct with `members` (`(name, offset word)`; "" is anonymous) and `kind_flag`.
        fn structure(&mut self, name: &str, members: &[(&str, u32)], kind_flag: bool) -> u32 {
            let id = self.ty(name, KIND_STRUCT, members.len() as u16, 0);
            if kind_flag {
                let info_at = self.types.len() - TYPE_BYTES + 4;
                let info = (u32::from(KIND_STRUCT) << 24) | members.len() as u32 | 1 << 31;
                let word = self.word(info);
                self.types[info_at..info_at + 4].copy_from_slice(&word);
            }
            for (member, offset) in members {
                let name_off = if member.is_empty() {
                    0
                } else {
                    self.string(member)
                };
                for value in [name_off, 1, *offset] {
                    let word = self.word(value);
                    self.types.extend_from_slice(&word);
                }
            }
            id
        }

        fn bytes(&self) -> Vec<u8> {
            let mut out = Vec::new();
            out.extend_from_slice(&if self.big_endian {
                MAGIC.to_be_bytes()
            } else {
                MAGIC.to_le_bytes()
            });
            out.extend_from_slice(&[VERSION, 0]);
            let types_len = self.types.len() as u32;
            for value in [
                HEADER_BYTES as u32,
                0,
                types_len,
                types_len,
                self.strings.len() as u32,
            ] {
                out.extend_from_slice(&self.word(value));
            }
            out.extend_from_slice(&self.types);
            out.extend_from_slice(&self.strings);
            out
        }
    }

    const SWITCH: &str = "btf_trace_sched_switch";
    const EXIT: &str = "btf_trace_sched_process_exit";

    /// One type of every kind, each with its trailing data, then the two typedefs.
    fn every_kind(big_endian: bool) -> (Blob, [u32; 2]) {
        let mut blob = Blob::new(big_endian);
        // (name, kind, vlen, trailing bytes); a struct and a func are named like the wanted typedef:
        // only the typedef counts.
        for (name, kind, vlen, trailing) in [
            ("int", 1, 0, 4),
            ("", 2, 0, 0),
            ("", 3, 0, 12),
            ("task_struct", 4, 3, 36),
            ("u", 5, 2, 24),
            ("e", 6, 5, 40),
            ("f", 7, 0, 0),
            (SWITCH, 4, 1, 12),
            (SWITCH, 12, 0, 0),
            ("", 9, 0, 0),
            ("", 10, 0, 0),
            ("", 11, 0, 0),
            ("", 13, 4, 32),
            ("v", 14, 0, 4),
            (".data", 15, 2, 24),
            ("double", 16, 0, 0),
            ("tag", 17, 0, 4),
            ("tt", 18, 0, 0),
            ("e64", 19, 3, 36),
        ] {
            blob.ty(name, kind, vlen, trailing);
        }
        // A typedef whose name has the wanted one as a prefix, and one that is a suffix of it.
        blob.typedef("btf_trace_sched_switch_x");
        blob.typedef("sched_switch");
        let switch = blob.typedef(SWITCH);
        blob.typedef("pid_t");
        let exit = blob.typedef(EXIT);
        // A second typedef of the same name: the first one wins.
        blob.typedef(SWITCH);
        (blob, [switch, exit])
    }

    #[test]
    fn finds_the_typedefs_past_every_kind_in_either_byte_order() {
        for big_endian in [false, true] {
            let (blob, [switch, exit]) = every_kind(big_endian);
            assert_eq!((switch, exit), (22, 24));
            let found = find_typedefs(blob.bytes().as_slice(), [SWITCH, EXIT, "absent"]);
            assert_eq!(
                found.ok(),
                Some([Some(switch), Some(exit), None]),
                "big endian: {big_endian}"
            );
        }
    }

    const TASK_FIELDS: [(&str, &str); 4] = [
        ("task_struct", "tgid"),
        ("sched_entity", "sum_exec_runtime"),
        ("task_struct", "se"),
        ("kernfs_node", "id"),
    ];

    /// Structs named like the wanted ones in every way that must not count, then the real ones.
    fn kernel_like(big_endian: bool) -> Blob {
        let mut blob = Blob::new(big_endian);
        blob.ty("int", 1, 0, 4);
        blob.ty("", 2, 0, 0);
        // A declaration without members, and a union of the name: neither is searched.
        blob.structure("task_struct", &[], false);
        blob.ty("task_struct", 5, 0, 0);
        blob.structure(
            "task_struct",
            &[
                ("", 0),
                ("pid", 1264 * 8),
                ("tgid", 1268 * 8),
                ("se", 128 * 8),
            ],
            false,
        );
        // Offsets with a bit-field size in their high byte (kind_flag), of byte-aligned members.
        blob.structure(
            "sched_entity",
            &[
                ("exec_start", (96 * 8) | (64 << 24)),
                ("sum_exec_runtime", (104 * 8) | (64 << 24)),
            ],
            true,
        );
        blob.typedef(SWITCH);
        blob.structure("kernfs_node", &[("id", 96 * 8)], false);
        // A second struct of a found name: the first one wins.
        blob.structure("task_struct", &[("tgid", 8)], false);
        blob
    }

    #[test]
    fn finds_struct_members_in_either_byte_order() {
        for big_endian in [false, true] {
            let bytes = kernel_like(big_endian).bytes();
            let (typedefs, members) = find(bytes.as_slice(), [SWITCH], TASK_FIELDS).unwrap();
            assert_eq!(typedefs, [Some(7)], "big endian: {big_endian}");
            assert_eq!(
                members,
                [Some(1268), Some(104), Some(128), Some(96)],
                "big endian: {big_endian}"
            );
            // A member the struct does not have, and a struct the BTF does not have.
            let (_, missing) = find(
                bytes.as_slice(),
                [],
                [
                    ("task_struct", "comm"),
                    ("css_set", "dfl_cgrp"),
                    ("task_struct", "pid"),
                ],
            )
            .unwrap();
            assert_eq!(missing, [None, None, Some(1264)]);
        }
    }

    #[test]
    fn a_bit_field_member_is_refused() {
        let mut blob = Blob::new(false);
        blob.structure("task_struct", &[("tgid", 1268 * 8 + 3)], false);
        assert_eq!(
            find(blob.bytes().as_slice(), [], [("task_struct", "tgid")]).unwrap_err_malformed(),
            Malformed::BitField {
                type_id: 1,
                member: "tgid".into(),
                bit_offset: 1268 * 8 + 3
            }
        );
    }

    trait UnwrapMalformed {
        fn unwrap_err_malformed(self) -> Malformed;
    }

    impl<T: std::fmt::Debug> UnwrapMalformed for Result<T, WalkError> {
        fn unwrap_err_malformed(self) -> Malformed {
            match self {
                Err(WalkError::Malformed(what)) => what,
                other => panic!("expected a malformed blob, got {other:?}"),
            }
        }
    }

    #[test]
    fn every_truncation_of_the_members_is_an_error_never_a_panic() {
        let bytes = kernel_like(false).bytes();
        for len in 0..bytes.len() {
            if let Ok(found) = find(&bytes[..len], [SWITCH], TASK_FIELDS) {
                panic!("cut at {len}: {found:?}");
            }
        }
    }

    /// The running kernel's own BTF, where it has one: every offset the switch program reads is
    /// found, and the nested ones lie inside `task_struct`.
    #[test]
    fn the_running_kernel_has_every_member_the_program_reads() {
        let path = Path::new("/sys/kernel/btf/vmlinux");
        if !path.exists() {
            assert_ne!(
                std::env::var("KEPLER_RS_REQUIRE_PRIVILEGED").as_deref(),
                Ok("1"),
                "CI runs on a kernel with BTF"
            );
            eprintln!("SKIP the_running_kernel_has_every_member_the_program_reads: no {path:?}");
            return;
        }
        let (ids, offsets) =
            kernel_ids(path, [SWITCH], super::super::program::KERNEL_FIELDS).unwrap();
        assert!(ids[0] > 0);
        assert!(offsets.iter().all(|o| *o < 16 * 1024), "{offsets:?}");
    }

    #[test]
    fn walks_across_chunks_and_over_large_members() {
        let mut blob = Blob::new(false);
        // 65535 members of 12 bytes: far more than one chunk skipped in one step.
        blob.ty("huge", 4, u16::MAX, 12 * usize::from(u16::MAX));
        for i in 0..20_000 {
            blob.ty(&format!("t{i}"), 2, 0, 0);
        }
        let switch = blob.typedef(SWITCH);
        for _ in 0..10_000 {
            blob.ty("", 1, 0, 4);
        }
        let exit = blob.typedef(EXIT);
        assert!(blob.types.len() > 8 * CHUNK_BYTES);
        let found = find_typedefs(blob.bytes().as_slice(), [SWITCH, EXIT]);
        assert_eq!(found.ok(), Some([Some(switch), Some(exit)]));
        assert_eq!((switch, exit), (20_002, 30_003));
    }

    fn malformed(bytes: &[u8]) -> Malformed {
        find_typedefs(bytes, [SWITCH]).unwrap_err_malformed()
    }

    #[test]
    fn malformed_headers_are_named() {
        let good = every_kind(false).0.bytes();
        assert_eq!(malformed(&good[..10]), Malformed::ShortHeader);
        let mut bytes = good.clone();
        bytes[0] = 0x12;
        assert!(matches!(malformed(&bytes), Malformed::Magic(_)));
        let mut bytes = good.clone();
        bytes[2] = 2;
        assert_eq!(malformed(&bytes), Malformed::Version(2));
        let mut bytes = good.clone();
        bytes[4..8].copy_from_slice(&8u32.to_le_bytes());
        assert_eq!(malformed(&bytes), Malformed::HeaderLength(8));
        let mut bytes = good.clone();
        bytes[12..16].copy_from_slice(&(MAX_SECTION_BYTES + 1).to_le_bytes());
        assert!(matches!(
            malformed(&bytes),
            Malformed::SectionTooLarge {
                section: "type",
                ..
            }
        ));
    }

    #[test]
    fn malformed_types_are_named() {
        // A kind this reader does not know (0 and 20) before the typedef.
        for kind in [0, 20] {
            let mut blob = Blob::new(false);
            blob.ty("x", kind, 0, 0);
            blob.typedef(SWITCH);
            assert_eq!(
                malformed(&blob.bytes()),
                Malformed::UnknownKind { type_id: 1, kind }
            );
        }
        // Members running past the end of the type section.
        let mut blob = Blob::new(false);
        blob.ty("s", 4, 10, 12);
        assert_eq!(
            malformed(&blob.bytes()),
            Malformed::TypePastEnd { type_id: 1 }
        );
        // A name offset past the string section.
        let mut blob = Blob::new(false);
        blob.typedef(SWITCH);
        let mut bytes = blob.bytes();
        bytes[HEADER_BYTES..HEADER_BYTES + 4].copy_from_slice(&10_000u32.to_le_bytes());
        assert_eq!(
            malformed(&bytes),
            Malformed::NameOutside {
                type_id: 1,
                name_off: 10_000
            }
        );
        // The wanted name at the very end of the string section, without its NUL.
        let mut blob = Blob::new(false);
        blob.typedef(SWITCH);
        blob.strings.pop();
        assert_eq!(
            malformed(&blob.bytes()),
            Malformed::UnterminatedName { type_id: 1 }
        );
    }

    #[test]
    fn every_truncation_is_an_error_or_an_answer_never_a_panic() {
        let (blob, ids) = every_kind(false);
        let bytes = blob.bytes();
        for len in 0..bytes.len() {
            match find_typedefs(&bytes[..len], [SWITCH, EXIT]) {
                // A cut file is refused: the sections it names run past its end.
                Err(WalkError::Malformed(_)) => {}
                other => panic!("cut at {len}: {other:?}"),
            }
        }
        let whole = find_typedefs(bytes.as_slice(), [SWITCH, EXIT]);
        assert_eq!(whole.ok(), Some(ids.map(Some)));
    }

    #[test]
    fn the_file_reader_names_the_path_and_the_missing_typedef() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("vmlinux");
        let (blob, ids) = every_kind(true);
        std::fs::write(&path, blob.bytes()).unwrap();
        assert_eq!(
            kernel_ids(&path, [EXIT, SWITCH], []).unwrap(),
            ([ids[1], ids[0]], [])
        );
        let missing = kernel_ids(&path, [SWITCH, "btf_trace_nothing"], []).unwrap_err();
        assert!(
            matches!(&missing, BtfError::MissingTypedef { name, .. } if name == "btf_trace_nothing")
        );
        assert_eq!(missing.issue_kind(), IssueKind::Attach);
        assert!(missing.to_string().contains("vmlinux"), "{missing}");

        std::fs::write(&path, &blob.bytes()[..100]).unwrap();
        let cut = kernel_ids(&path, [SWITCH], []).unwrap_err();
        assert_eq!(cut.issue_kind(), IssueKind::Parse);
        assert!(cut.to_string().contains("vmlinux"), "{cut}");

        let absent = kernel_ids(&dir.path().join("absent"), [SWITCH], []).unwrap_err();
        assert_eq!(absent.issue_kind(), IssueKind::NotFound);
        let directory = kernel_ids(dir.path(), [SWITCH], []).unwrap_err();
        assert_eq!(directory.issue_kind(), IssueKind::NotRegular);

        std::fs::write(&path, kernel_like(false).bytes()).unwrap();
        let missing = kernel_ids(&path, [SWITCH], [("css_set", "dfl_cgrp")]).unwrap_err();
        assert!(
            matches!(&missing, BtfError::MissingMember { structure, member, .. }
                if structure == "css_set" && member == "dfl_cgrp"),
            "{missing}"
        );
        assert_eq!(missing.issue_kind(), IssueKind::Attach);
        assert!(missing.to_string().contains("css_set"), "{missing}");
    }
}
