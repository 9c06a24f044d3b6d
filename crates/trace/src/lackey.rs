//! valgrind lackey text traces (`valgrind --tool=lackey --trace-mem=yes`).
//!
//! Lackey prints one line per access (lackey's `lk_main.c`, `trace_instr`/`trace_load`...):
//! `I  ADDR,SIZE` for an instruction fetch, ` L ADDR,SIZE`, ` S ADDR,SIZE` and ` M ADDR,SIZE` for a
//! load, a store and a read-modify-write; `ADDR` is hexadecimal without `0x`, `SIZE` decimal.
//! Lines starting with `==` or `--` are valgrind's own commentary (`==PID== ...`) and are skipped,
//! as are blank lines.
//!
//! The reader is a hand-rolled byte parser over the `BufRead` buffer: no regex, no allocation per
//! line (a line split across two buffer fills is copied into one reused buffer).

use crate::error::{Location, TraceError, excerpt};
use crate::rec::{Record, RecordKind};
use crate::{RecordSink, RecordSource};
use std::io::{BufRead, Write};

/// Longest line accepted; longer lines are bad records (and are not buffered further).
pub(crate) const MAX_LINE: usize = 4096;

/// Hex digit values, 0xFF for non-digits.
// The loop indices are below 10, so the casts cannot truncate.
#[allow(clippy::cast_possible_truncation)]
const HEX: [u8; 256] = {
    let mut t = [0xFFu8; 256];
    let mut i = 0;
    while i < 10 {
        t[b'0' as usize + i] = i as u8;
        i += 1;
    }
    let mut i = 0;
    while i < 6 {
        t[b'a' as usize + i] = 10 + i as u8;
        t[b'A' as usize + i] = 10 + i as u8;
        i += 1;
    }
    t
};

/// Result of parsing one line.
pub(crate) enum Line {
    Record(Record),
    /// Blank or valgrind commentary.
    Skip,
}

/// Parses one line (without its `\n`). Always inlined: left to the inliner, whether the reader's
/// loop got it changed with unrelated edits of this crate, and parsing ran 13-16% slower without it.
#[inline(always)]
pub(crate) fn parse_line(line: &[u8]) -> Result<Line, &'static str> {
    let line = match line.last() {
        Some(b'\r') => &line[..line.len() - 1],
        _ => line,
    };
    if line.len() < 3 {
        return if line.iter().all(u8::is_ascii_whitespace)
            || line.starts_with(b"==")
            || line.starts_with(b"--")
        {
            Ok(Line::Skip)
        } else {
            Err("Unrecognised line")
        };
    }
    let kind = match (line[0], line[1], line[2]) {
        (b'I', b' ', b' ') => RecordKind::Instr,
        (b' ', b'L', b' ') => RecordKind::Load,
        (b' ', b'S', b' ') => RecordKind::Store,
        (b' ', b'M', b' ') => RecordKind::Modify,
        (b'=', b'=', _) | (b'-', b'-', _) => return Ok(Line::Skip),
        _ => {
            return if line.iter().all(u8::is_ascii_whitespace) {
                Ok(Line::Skip)
            } else {
                Err("Unrecognised line")
            };
        }
    };
    let rest = &line[3..];
    let mut addr: u64 = 0;
    let mut i = 0;
    while i < rest.len() {
        let d = HEX[rest[i] as usize];
        if d == 0xFF {
            break;
        }
        if i == 16 {
            return Err("Bad address (more than 16 hex digits)");
        }
        addr = (addr << 4) | u64::from(d);
        i += 1;
    }
    if i == 0 || i == rest.len() || rest[i] != b',' {
        return Err("Bad address");
    }
    let rest = &rest[i + 1..];
    if rest.is_empty() || rest.len() > 9 {
        return Err("Bad size");
    }
    let mut size: u32 = 0;
    for &c in rest {
        let d = c.wrapping_sub(b'0');
        if d > 9 {
            return Err("Bad size");
        }
        size = size * 10 + u32::from(d);
    }
    Ok(Line::Record(Record {
        kind,
        addr: compromis_types::Gva(addr),
        size,
    }))
}

/// Streams [`Record`]s out of lackey text.
pub struct LackeyReader<R> {
    input: R,
    path: String,
    skip_bad: bool,
    skipped: u64,
    /// Lines read so far (the current line's number once it is parsed).
    line: u64,
    /// Partial line carried over a buffer refill.
    carry: Vec<u8>,
    /// The carried line was longer than [`MAX_LINE`].
    overlong: bool,
    done: bool,
}

impl<R: BufRead> LackeyReader<R> {
    /// Reads `input`, naming it `path` in errors. With `skip_bad_records`, bad lines are
    /// counted ([`RecordSource::skipped`]) instead of ending the stream with an error.
    pub fn new(input: R, path: &str, skip_bad_records: bool) -> LackeyReader<R> {
        LackeyReader {
            input,
            path: path.to_owned(),
            skip_bad: skip_bad_records,
            skipped: 0,
            line: 0,
            carry: Vec::new(),
            overlong: false,
            done: false,
        }
    }

    /// Number of lines read so far.
    pub fn lines(&self) -> u64 {
        self.line
    }

    fn bad(&mut self, reason: &'static str, text: &[u8]) -> Option<Result<Record, TraceError>> {
        if text.contains(&0) {
            return Some(self.not_text());
        }
        if self.skip_bad {
            self.skipped += 1;
            None
        } else {
            self.done = true;
            Some(Err(TraceError::BadRecord {
                path: self.path.clone(),
                at: Location::Line(self.line),
                reason,
                text: excerpt(text),
            }))
        }
    }

    /// A NUL byte in a line: binary or zero-filled input (`/dev/zero`), not lackey text; it
    /// stops the read even with `skip_bad`, so an endless such input cannot run forever.
    fn not_text(&mut self) -> Result<Record, TraceError> {
        self.done = true;
        Err(TraceError::NotATrace {
            path: self.path.clone(),
            at: Location::Line(self.line),
            reason: "a NUL byte in a lackey line",
        })
    }

    /// Handles one complete line held in `carry`.
    fn finish_carry(&mut self) -> Option<Result<Record, TraceError>> {
        self.line += 1;
        let carry = std::mem::take(&mut self.carry);
        let out = if self.overlong {
            self.overlong = false;
            self.bad("Line too long", &carry)
        } else {
            match parse_line(&carry) {
                Ok(Line::Record(r)) => Some(Ok(r)),
                Ok(Line::Skip) => None,
                Err(reason) => self.bad(reason, &carry),
            }
        };
        self.carry = carry;
        self.carry.clear();
        out
    }
}

impl<R: BufRead> Iterator for LackeyReader<R> {
    type Item = Result<Record, TraceError>;

    #[inline]
    fn next(&mut self) -> Option<Self::Item> {
        loop {
            if self.done {
                return None;
            }
            let buf = match self.input.fill_buf() {
                Ok(b) => b,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(source) => {
                    self.done = true;
                    return Some(Err(TraceError::Io {
                        path: self.path.clone(),
                        at: Location::Line(self.line + 1),
                        source,
                    }));
                }
            };
            if buf.is_empty() {
                self.done = true;
                if self.carry.is_empty() && !self.overlong {
                    return None;
                }
                match self.finish_carry() {
                    Some(r) => return Some(r),
                    None => return None,
                }
            }
            match memchr::memchr(b'\n', buf) {
                Some(i) if self.carry.is_empty() && !self.overlong => {
                    self.line += 1;
                    let parsed = parse_line(&buf[..i]);
                    let out = match parsed {
                        Ok(Line::Record(r)) => Some(Ok(r)),
                        Ok(Line::Skip) => None,
                        Err(_) if memchr::memchr(0, &buf[..i]).is_some() => {
                            self.input.consume(i + 1);
                            return Some(self.not_text());
                        }
                        Err(reason) => {
                            let text = excerpt(&buf[..i]);
                            if self.skip_bad {
                                self.skipped += 1;
                                None
                            } else {
                                self.done = true;
                                Some(Err(TraceError::BadRecord {
                                    path: self.path.clone(),
                                    at: Location::Line(self.line),
                                    reason,
                                    text,
                                }))
                            }
                        }
                    };
                    self.input.consume(i + 1);
                    if out.is_some() {
                        return out;
                    }
                }
                Some(i) => {
                    if !self.overlong {
                        self.carry.extend_from_slice(&buf[..i]);
                        self.overlong = self.carry.len() > MAX_LINE;
                    }
                    self.input.consume(i + 1);
                    if let Some(r) = self.finish_carry() {
                        return Some(r);
                    }
                }
                None => {
                    let n = buf.len();
                    if !self.overlong {
                        self.carry.extend_from_slice(buf);
                        if self.carry.len() > MAX_LINE {
                            self.overlong = true;
                            let nul = self.carry.contains(&0);
                            self.carry.truncate(80);
                            // Without a line end in sight, do not read on (an endless input
                            // such as /dev/zero would never end the line).
                            if nul || !self.skip_bad {
                                self.input.consume(n);
                                self.line += 1;
                                if nul {
                                    return Some(self.not_text());
                                }
                                self.overlong = false;
                                let carry = std::mem::take(&mut self.carry);
                                return self.bad("Line too long", &carry);
                            }
                        }
                    }
                    self.input.consume(n);
                }
            }
        }
    }
}

impl<R: BufRead + Send> RecordSource for LackeyReader<R> {
    fn skipped(&self) -> u64 {
        self.skipped
    }
    fn location(&self) -> Option<crate::Location> {
        Some(crate::Location::Line(self.line))
    }
}

/// Writes records as lackey text, in lackey's own layout (`I  %08lx,%lu`).
pub struct LackeyWriter<W: Write> {
    out: W,
    buf: Vec<u8>,
}

impl<W: Write> LackeyWriter<W> {
    /// Writes to `out`.
    pub fn new(out: W) -> LackeyWriter<W> {
        LackeyWriter {
            out,
            buf: Vec::with_capacity(64),
        }
    }

    /// Flushes and returns the inner writer.
    pub fn into_inner(mut self) -> std::io::Result<W> {
        self.out.flush()?;
        Ok(self.out)
    }
}

impl<W: Write + Send> RecordSink for LackeyWriter<W> {
    fn write_record(&mut self, r: &Record) -> std::io::Result<()> {
        self.buf.clear();
        let prefix: &[u8] = match r.kind {
            RecordKind::Instr => b"I  ",
            RecordKind::Load => b" L ",
            RecordKind::Store => b" S ",
            RecordKind::Modify => b" M ",
        };
        self.buf.extend_from_slice(prefix);
        writeln!(self.buf, "{:08x},{}", r.addr.0, r.size)?;
        self.out.write_all(&self.buf)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read_all(text: &str, skip: bool) -> (Vec<Result<Record, TraceError>>, u64) {
        let mut r = LackeyReader::new(text.as_bytes(), "t.lackey", skip);
        let v: Vec<_> = r.by_ref().collect();
        (v, r.skipped())
    }

    #[test]
    fn parses_all_kinds_and_skips_commentary() {
        let text =
            "==123== Lackey\nI  0401ab70,3\n L 1fff000778,8\n S 10,4\n M 7ffe,16\n--1-- w\n\n";
        let (v, skipped) = read_all(text, false);
        let v: Vec<Record> = v.into_iter().map(Result::unwrap).collect();
        assert_eq!(
            v,
            vec![
                Record::new(RecordKind::Instr, 0x0401_ab70, 3),
                Record::new(RecordKind::Load, 0x1f_ff00_0778, 8),
                Record::new(RecordKind::Store, 0x10, 4),
                Record::new(RecordKind::Modify, 0x7ffe, 16),
            ]
        );
        assert_eq!(skipped, 0);
    }

    #[test]
    fn last_line_without_newline_and_crlf() {
        let (v, _) = read_all("I  10,1\r\n L 20,2", false);
        assert_eq!(v.len(), 2);
        assert_eq!(
            v[1].as_ref().unwrap(),
            &Record::new(RecordKind::Load, 0x20, 2)
        );
    }

    #[test]
    fn garbage_line_names_file_and_line() {
        let (v, _) = read_all("I  10,1\nhello\nI  20,1\n", false);
        assert_eq!(v.len(), 2);
        let e = v[1].as_ref().unwrap_err().to_string();
        assert!(
            e.contains("t.lackey") && e.contains("line 2") && e.contains("hello"),
            "{e}"
        );
    }

    #[test]
    fn bad_address_and_size() {
        for (line, want) in [
            (" L 12g4,8", "Bad address"),
            (" L ,8", "Bad address"),
            (" L 11112222333344445,8", "more than 16"),
            (" L 10,", "Bad size"),
            (" L 10,8x", "Bad size"),
            (" L 10", "Bad address"),
        ] {
            let (v, _) = read_all(line, false);
            let e = v[0].as_ref().unwrap_err().to_string();
            assert!(e.contains(want) && e.contains("line 1"), "{line}: {e}");
        }
    }

    #[test]
    fn skip_counts_bad_lines() {
        let (v, skipped) = read_all("I  10,1\nxx\n L zz,1\nI  20,1\n", true);
        assert_eq!(v.len(), 2);
        assert!(v.iter().all(Result::is_ok));
        assert_eq!(skipped, 2);
    }

    #[test]
    fn split_across_buffer_fills() {
        let text = "I  0401ab70,3\n L 1fff000778,8\n".repeat(50);
        let r = std::io::BufReader::with_capacity(7, text.as_bytes());
        let v: Vec<_> = LackeyReader::new(r, "t", false)
            .map(Result::unwrap)
            .collect();
        assert_eq!(v.len(), 100);
        assert_eq!(v[99], Record::new(RecordKind::Load, 0x1f_ff00_0778, 8));
    }

    #[test]
    fn overlong_line_is_one_bad_record() {
        let text = format!("I  10,1\n{}\nI  20,1\n", "x".repeat(10_000));
        let r = std::io::BufReader::with_capacity(64, text.as_bytes());
        let mut rd = LackeyReader::new(r, "t", true);
        let v: Vec<_> = rd.by_ref().map(Result::unwrap).collect();
        assert_eq!(v.len(), 2);
        assert_eq!(rd.skipped(), 1);
    }

    #[test]
    fn writer_round_trips() {
        let recs = vec![
            Record::new(RecordKind::Instr, 0x401000, 3),
            Record::new(RecordKind::Modify, 0x7fff_0000_1234, 8),
        ];
        let mut w = LackeyWriter::new(Vec::new());
        for r in &recs {
            w.write_record(r).unwrap();
        }
        let out = w.into_inner().unwrap();
        assert_eq!(
            String::from_utf8_lossy(&out),
            "I  00401000,3\n M 7fff00001234,8\n"
        );
        let back: Vec<_> = LackeyReader::new(&out[..], "t", false)
            .map(Result::unwrap)
            .collect();
        assert_eq!(back, recs);
    }
}
