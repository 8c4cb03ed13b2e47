//! The line codec of a jsonl process's stdout: bytes as read, cut into
//! lines. A line ends at `\n` (a `\r` before it is dropped), blank lines
//! are skipped, a line is at most `limits.max_output` bytes (a partial one
//! too: a process that never ends its line is caught as soon as it is too
//! long) and UTF-8. Each part of a long line is scanned for its end once,
//! not once per read.

use toolplane_units::fmt_size;

/// What is wrong with a line, as said of the process that wrote it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LineError {
    /// Longer than the limit (a partial line included).
    #[error("wrote a line longer than limits.max_output = {}", fmt_size(*.max as u64))]
    TooLong {
        /// The limit, in bytes.
        max: usize,
    },
    /// Not UTF-8.
    #[error("wrote a line that is not UTF-8 (a response is one line of JSON)")]
    NotUtf8,
}

/// Bytes read and not yet whole lines.
#[derive(Debug)]
pub(crate) struct LineBuf {
    buf: Vec<u8>,
    /// How much of `buf` is known to hold no newline.
    scanned: usize,
    max: usize,
}

impl LineBuf {
    /// Lines of at most `max` bytes.
    pub(crate) fn new(max: usize) -> LineBuf {
        LineBuf {
            buf: Vec::new(),
            scanned: 0,
            max,
        }
    }

    /// The buffer to read into, with room for `n` more bytes (read into its
    /// spare capacity).
    pub(crate) fn room(&mut self, n: usize) -> &mut Vec<u8> {
        self.buf.reserve(n);
        &mut self.buf
    }

    /// Hands each whole line read so far to `each`, in order, and keeps a
    /// partial last one.
    ///
    /// # Errors
    ///
    /// A line is too long or not UTF-8 ([`LineError`], as its message), or
    /// `each` failed: nothing after it is taken.
    pub(crate) fn lines(
        &mut self,
        mut each: impl FnMut(&str) -> Result<(), String>,
    ) -> Result<(), String> {
        let mut from = 0;
        let mut scan = self.scanned;
        while let Some(n) = self.buf[scan..].iter().position(|&b| b == b'\n') {
            let mut line = &self.buf[from..scan + n];
            from = scan + n + 1;
            scan = from;
            if let [rest @ .., b'\r'] = line {
                line = rest;
            }
            if line.len() > self.max {
                return Err(LineError::TooLong { max: self.max }.to_string());
            }
            if line.iter().all(u8::is_ascii_whitespace) {
                continue;
            }
            let line = std::str::from_utf8(line).map_err(|_| LineError::NotUtf8.to_string())?;
            each(line)?;
        }
        self.buf.drain(..from);
        self.scanned = self.buf.len();
        if self.buf.len() > self.max {
            return Err(LineError::TooLong { max: self.max }.to_string());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn feed(b: &mut LineBuf, bytes: &[u8]) -> Result<Vec<String>, String> {
        b.room(bytes.len()).extend_from_slice(bytes);
        let mut out = Vec::new();
        b.lines(|l| {
            out.push(l.to_string());
            Ok(())
        })?;
        Ok(out)
    }

    #[test]
    fn lines_are_cut_at_newlines_across_reads() {
        let mut b = LineBuf::new(64);
        assert_eq!(feed(&mut b, b"{\"a\":1}\n{\"b\"").unwrap(), ["{\"a\":1}"]);
        assert_eq!(
            feed(&mut b, b":2}\r\n\n  \n{\"c\":3}\n").unwrap(),
            ["{\"b\":2}", "{\"c\":3}"]
        );
        assert_eq!(feed(&mut b, b"").unwrap(), Vec::<String>::new());
    }

    #[test]
    fn a_line_over_the_limit_is_refused_whole_or_partial() {
        let mut b = LineBuf::new(8);
        assert_eq!(feed(&mut b, b"12345678\n").unwrap(), ["12345678"]);
        let e = feed(&mut b, b"123456789\n").unwrap_err();
        assert_eq!(e, "wrote a line longer than limits.max_output = 8 B");
        // A line never ended is caught once it passes the limit.
        let mut b = LineBuf::new(8);
        assert!(feed(&mut b, b"1234").unwrap().is_empty());
        assert!(feed(&mut b, b"56789").unwrap_err().contains("longer than"));
    }

    #[test]
    fn a_line_that_is_not_utf8_is_refused() {
        let mut b = LineBuf::new(64);
        let e = feed(&mut b, b"{\"a\":\"\xff\"}\n").unwrap_err();
        assert_eq!(e, LineError::NotUtf8.to_string());
    }

    #[test]
    fn an_error_from_a_line_stops_the_rest() {
        let mut b = LineBuf::new(64);
        b.room(8).extend_from_slice(b"a\nb\nc\n");
        let mut seen = Vec::new();
        let r = b.lines(|l| {
            seen.push(l.to_string());
            if l == "b" { Err("bad".into()) } else { Ok(()) }
        });
        assert_eq!(
            (r, seen),
            (Err("bad".to_string()), vec!["a".into(), "b".into()])
        );
    }
}
