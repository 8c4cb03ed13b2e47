//! Reading the log back: records in order, file by file, with what is
//! wrong said where it is (a torn tail after a crash, a record whose CRC
//! does not check), and reading on past a corrupted record.

use std::path::{Path, PathBuf};

use crate::error::AuditError;
use crate::frame::{self, Frame};
use crate::log;
use crate::record::Record;

/// What a file holds at an offset.
#[derive(Debug)]
pub enum Item {
    /// A record (boxed: it is the larger variant by far).
    Record(Box<Record>),
    /// Something wrong, and where.
    Problem(Problem),
}

/// Something wrong in a file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Problem {
    /// The file ends inside a frame: its last write did not finish (the
    /// process or the machine stopped); what is before it is whole.
    TornTail {
        /// The file.
        file: PathBuf,
        /// Where the unfinished frame begins.
        offset: u64,
        /// How many bytes of it there are.
        bytes: u64,
    },
    /// A frame whose CRC or length does not check.
    Corrupt {
        /// The file.
        file: PathBuf,
        /// Where the frame begins.
        offset: u64,
        /// Where reading went on (the next frame that checks), if anywhere.
        resumed: Option<u64>,
    },
    /// A frame that checks but does not hold a record.
    NotARecord {
        /// The file.
        file: PathBuf,
        /// Where the frame begins.
        offset: u64,
        /// Why.
        error: String,
    },
    /// A file that does not begin as an audit file does.
    NotAudit {
        /// The file.
        file: PathBuf,
    },
    /// A name of the log's files on something else (a link, a directory,
    /// a FIFO): not read.
    NotAFile {
        /// The name.
        file: PathBuf,
    },
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Problem::TornTail {
                file,
                offset,
                bytes,
            } => write!(
                f,
                "{}: torn tail at offset {offset} ({bytes} bytes): a write that did not finish (a crash), or one being written now; every record before it is whole",
                file.display()
            ),
            Problem::Corrupt {
                file,
                offset,
                resumed: Some(at),
            } => write!(
                f,
                "{}: corrupted record at offset {offset} (its CRC or length does not check); reading on at offset {at}",
                file.display()
            ),
            Problem::Corrupt {
                file,
                offset,
                resumed: None,
            } => write!(
                f,
                "{}: corrupted record at offset {offset} (its CRC or length does not check); no whole record after it",
                file.display()
            ),
            Problem::NotARecord {
                file,
                offset,
                error,
            } => write!(
                f,
                "{}: the frame at offset {offset} is not a record: {error}",
                file.display()
            ),
            Problem::NotAudit { file } => {
                write!(
                    f,
                    "{}: not an audit file (no TPAUDIT header)",
                    file.display()
                )
            }
            Problem::NotAFile { file } => write!(
                f,
                "{}: not a regular file (a link, a directory or a device): not read",
                file.display()
            ),
        }
    }
}

/// Reads `bytes`, a file's content from offset `base` on (0: the whole
/// file): the items, and the offset reading stopped at. A short frame at
/// the end is a torn tail when `complete` (nothing more will be written),
/// else reading stops before it.
pub fn scan(file: &Path, bytes: &[u8], base: u64, complete: bool) -> (Vec<Item>, u64) {
    let mut items = Vec::new();
    let mut at = 0usize;
    if base == 0 {
        if bytes.len() < frame::MAGIC.len() && !complete && frame::MAGIC.starts_with(bytes) {
            return (items, 0);
        }
        if !bytes.starts_with(frame::MAGIC) {
            items.push(Item::Problem(Problem::NotAudit {
                file: file.to_owned(),
            }));
            return (items, bytes.len() as u64);
        }
        at = frame::MAGIC.len();
    }
    let off = |at: usize| base + at as u64;
    while at < bytes.len() {
        match frame::decode(&bytes[at..]) {
            Frame::Whole(payload, len) => {
                items.push(match serde_json::from_slice::<Record>(payload) {
                    Ok(r) => Item::Record(Box::new(r)),
                    Err(e) => Item::Problem(Problem::NotARecord {
                        file: file.to_owned(),
                        offset: off(at),
                        error: e.to_string(),
                    }),
                });
                at += len;
            }
            // Zeros to the end: an extent the crash left unwritten.
            Frame::Short | Frame::Corrupt if complete && bytes[at..].iter().all(|b| *b == 0) => {
                items.push(Item::Problem(Problem::TornTail {
                    file: file.to_owned(),
                    offset: off(at),
                    bytes: (bytes.len() - at) as u64,
                }));
                at = bytes.len();
            }
            Frame::Short if !complete => break,
            Frame::Short => {
                items.push(Item::Problem(Problem::TornTail {
                    file: file.to_owned(),
                    offset: off(at),
                    bytes: (bytes.len() - at) as u64,
                }));
                at = bytes.len();
            }
            Frame::Corrupt => {
                // The next frame that checks: only where a record's JSON
                // could begin is a CRC computed (else a run of bytes that
                // read as lengths would cost a CRC each).
                let next = (at + 1..bytes.len()).find(|&i| {
                    bytes.get(i + frame::HEADER) == Some(&b'{')
                        && matches!(frame::decode(&bytes[i..]), Frame::Whole(p, _) if p.ends_with(b"}"))
                });
                if next.is_none() && !complete {
                    // The file grows: the next record may not be whole yet.
                    break;
                }
                items.push(Item::Problem(Problem::Corrupt {
                    file: file.to_owned(),
                    offset: off(at),
                    resumed: next.map(off),
                }));
                at = next.unwrap_or(bytes.len());
            }
        }
    }
    (items, off(at))
}

/// The bytes of the log's file `path` from `from` on: `Ok(None)` when it
/// is gone (removed as old), a [`Problem::NotAFile`] when the name is not
/// on a regular file (a link is not followed).
///
/// # Errors
///
/// The file cannot be read.
pub fn read_file(path: &Path, from: u64) -> Result<Option<Result<Vec<u8>, Problem>>, AuditError> {
    use std::io::{Read, Seek};
    let io = |source| AuditError::Io {
        path: path.to_owned(),
        doing: "reading",
        source,
    };
    match std::fs::symlink_metadata(path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io(e)),
        Ok(m) if !m.file_type().is_file() => {
            return Ok(Some(Err(Problem::NotAFile {
                file: path.to_owned(),
            })));
        }
        Ok(_) => {}
    }
    let mut f = match std::fs::File::open(path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        r => r.map_err(io)?,
    };
    f.seek(std::io::SeekFrom::Start(from)).map_err(io)?;
    let mut v = Vec::new();
    f.read_to_end(&mut v).map_err(io)?;
    Ok(Some(Ok(v)))
}

/// Every item of every file of the log in `dir`, oldest first.
///
/// # Errors
///
/// The directory or a file cannot be read.
pub fn read_all(dir: &Path) -> Result<Vec<Item>, AuditError> {
    let mut out = Vec::new();
    for (_, path) in log::list(dir)? {
        match read_file(&path, 0)? {
            None => {}
            Some(Err(p)) => out.push(Item::Problem(p)),
            Some(Ok(bytes)) => out.extend(scan(&path, &bytes, 0, true).0),
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::sample as record;

    fn file_of(n: u64) -> Vec<u8> {
        let mut bytes = frame::MAGIC.to_vec();
        for i in 0..n {
            frame::encode(&serde_json::to_vec(&record(i)).unwrap(), &mut bytes);
        }
        bytes
    }

    fn records(items: &[Item]) -> Vec<u64> {
        items
            .iter()
            .filter_map(|i| match i {
                Item::Record(r) => r.key,
                Item::Problem(_) => None,
            })
            .collect()
    }

    #[test]
    fn a_torn_tail_is_told_from_the_whole_records_before_it() {
        let whole = file_of(3);
        let p = Path::new("f");
        for cut in 1..40 {
            let bytes = &whole[..whole.len() - cut];
            let (items, _) = scan(p, bytes, 0, true);
            assert_eq!(records(&items), [0, 1], "cut {cut}");
            assert!(
                matches!(items.last(), Some(Item::Problem(Problem::TornTail { .. }))),
                "cut {cut}: {items:?}"
            );
            // While the file may still grow, a short frame is not read yet.
            let (items, stop) = scan(p, bytes, 0, false);
            assert_eq!(records(&items), [0, 1]);
            assert!(stop < bytes.len() as u64);
        }
    }

    #[test]
    fn a_flipped_byte_is_found_at_its_record_and_reading_goes_on() {
        let whole = file_of(3);
        let second = {
            let (items, _) = scan(Path::new("f"), &file_of(1), 0, true);
            assert_eq!(items.len(), 1);
            file_of(1).len()
        };
        let mut bad = whole.clone();
        bad[second + 20] ^= 0x01;
        let (items, _) = scan(Path::new("f"), &bad, 0, true);
        assert_eq!(records(&items), [0, 2], "{items:?}");
        match &items[1] {
            Item::Problem(Problem::Corrupt {
                offset,
                resumed: Some(_),
                ..
            }) => assert_eq!(*offset, second as u64),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_tail_of_zeros_is_a_torn_tail_not_corruption() {
        let mut bytes = file_of(2);
        bytes.extend_from_slice(&[0; 4096]);
        let (items, _) = scan(Path::new("f"), &bytes, 0, true);
        assert_eq!(records(&items), [0, 1]);
        assert_eq!(items.len(), 3, "{items:?}");
        assert!(matches!(
            &items[2],
            Item::Problem(Problem::TornTail { bytes: 4096, .. })
        ));
    }

    #[test]
    fn a_growing_file_with_a_corrupt_record_is_read_on_once_the_next_is_whole() {
        let whole = file_of(3);
        let second = file_of(1).len();
        let mut bad = whole.clone();
        bad[second + 20] ^= 0x01;
        // The third record half written: nothing said yet past the first.
        let cut = whole.len() - 10;
        let (items, stop) = scan(Path::new("f"), &bad[..cut], 0, false);
        assert_eq!(records(&items), [0]);
        assert_eq!(items.len(), 1, "{items:?}");
        // Written on: the corruption said once, the third record read.
        let (items, _) = scan(Path::new("f"), &bad[stop as usize..], stop, false);
        assert_eq!(records(&items), [2], "{items:?}");
        assert_eq!(items.len(), 2);
    }

    #[test]
    fn a_file_that_is_not_an_audit_file_is_named() {
        let (items, _) = scan(Path::new("f"), b"hello world", 0, true);
        assert!(matches!(
            &items[..],
            [Item::Problem(Problem::NotAudit { .. })]
        ));
    }

    #[test]
    fn a_name_of_ours_on_a_link_or_a_directory_is_not_read() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("audit-0000000001.log"), file_of(1)).unwrap();
        std::os::unix::fs::symlink("/dev/zero", dir.path().join("audit-0000000002.log")).unwrap();
        std::fs::create_dir(dir.path().join("audit-0000000003.log")).unwrap();
        let items = read_all(dir.path()).unwrap();
        assert_eq!(records(&items), [0]);
        let not_files = items
            .iter()
            .filter(|i| matches!(i, Item::Problem(Problem::NotAFile { .. })))
            .count();
        assert_eq!(not_files, 2, "{items:?}");
    }
}
