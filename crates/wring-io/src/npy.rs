//! numpy's `.npy` format: little-endian f32 and integer arrays in C order (versions 1 to 3). The header is
//! checked against the file's length before anything is allocated.

use std::path::Path;

use crate::IoError;

/// Writes a little-endian f32 array as .npy (format version 1.0).
pub fn write_npy(path: &Path, shape: &[usize], data: &[f32]) -> Result<(), IoError> {
    write_npy_raw(
        path,
        shape,
        "<f4",
        &data
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect::<Vec<_>>(),
    )
}

/// Writes a little-endian u32 array as .npy (codebook indices).
pub fn write_npy_u32(path: &Path, shape: &[usize], data: &[u32]) -> Result<(), IoError> {
    write_npy_raw(
        path,
        shape,
        "<u4",
        &data
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect::<Vec<_>>(),
    )
}

fn write_npy_raw(path: &Path, shape: &[usize], descr: &str, data: &[u8]) -> Result<(), IoError> {
    let dims: Vec<String> = shape.iter().map(|d| d.to_string()).collect();
    let shape_text = if dims.len() == 1 {
        format!("({},)", dims[0])
    } else {
        format!("({})", dims.join(", "))
    };
    let mut header =
        format!("{{'descr': '{descr}', 'fortran_order': False, 'shape': {shape_text}, }}");
    // Magic (6) + version (2) + length (2) + header + newline is padded to a multiple of 64 bytes.
    while (10 + header.len() + 1) % 64 != 0 {
        header.push(' ');
    }
    header.push('\n');
    let mut bytes = Vec::with_capacity(10 + header.len() + data.len());
    bytes.extend_from_slice(b"\x93NUMPY\x01\x00");
    bytes.extend_from_slice(&(header.len() as u16).to_le_bytes());
    bytes.extend_from_slice(header.as_bytes());
    bytes.extend_from_slice(data);
    std::fs::write(path, bytes).map_err(|e| IoError::new(path, e))
}

/// Reads a little-endian f32 .npy (version 1 or 2, C order); returns the shape and the values. The header is
/// checked against the file's length before anything is allocated.
pub fn read_npy(path: &Path) -> Result<(Vec<usize>, Vec<f32>), IoError> {
    let (shape, descr, data) = read_npy_raw(path)?;
    if descr != "<f4" {
        return Err(IoError::new(
            path,
            format!("the .npy holds '{descr}'; f32 ('<f4') is needed"),
        ));
    }
    Ok((
        shape,
        data.chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect(),
    ))
}

/// Reads an integer .npy ('<u4', '<i4' or numpy's default '<i8', C order) as u32; negative values and
/// values above u32::MAX are errors.
pub fn read_npy_u32(path: &Path) -> Result<(Vec<usize>, Vec<u32>), IoError> {
    let (shape, descr, data) = read_npy_raw(path)?;
    let range = || IoError::new(path, "an index is negative or above 2^32 - 1".to_string());
    let values = match descr.as_str() {
        "<u4" => data
            .chunks_exact(4)
            .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect(),
        "<i4" => data
            .chunks_exact(4)
            .map(|c| {
                u32::try_from(i32::from_le_bytes([c[0], c[1], c[2], c[3]])).map_err(|_| range())
            })
            .collect::<Result<Vec<_>, _>>()?,
        "<i8" => data
            .chunks_exact(8)
            .map(|c| {
                u32::try_from(i64::from_le_bytes(c.try_into().expect("8 bytes")))
                    .map_err(|_| range())
            })
            .collect::<Result<Vec<_>, _>>()?,
        other => {
            return Err(IoError::new(
                path,
                format!("the .npy holds '{other}'; integers ('<u4', '<i4', '<i8') are needed"),
            ));
        }
    };
    Ok((shape, values))
}

/// The shape, the dtype descriptor and the data bytes of a little-endian C-order .npy file.
fn read_npy_raw(path: &Path) -> Result<(Vec<usize>, String, Vec<u8>), IoError> {
    let bytes = std::fs::read(path).map_err(|e| IoError::new(path, e))?;
    let (h, data) = parse(&bytes)
        .map_err(|what| IoError::new(path, format!("not a .npy file wring reads: {what}")))?;
    Ok((h.shape, h.descr, data.to_vec()))
}

/// Parses a whole .npy held in memory: the header (see [`parse_header`]) and the data bytes, which must
/// be exactly what the shape and the element type ('<f4', '<u4', '<i4', '<i8', C order) imply. Every
/// number is checked against the bytes present before anything is allocated.
pub fn parse(bytes: &[u8]) -> Result<(Header, &[u8]), String> {
    if bytes.len() < 10 || &bytes[..6] != b"\x93NUMPY" {
        return Err("bad magic".into());
    }
    let (len, start) = match bytes[6] {
        1 => (
            usize::from(u16::from_le_bytes([bytes[8], bytes[9]])),
            10usize,
        ),
        2 | 3 if bytes.len() >= 12 => (
            u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]) as usize,
            12,
        ),
        _ => return Err("unknown version".into()),
    };
    let header = std::str::from_utf8(
        bytes
            .get(start..start.saturating_add(len))
            .ok_or("truncated header")?,
    )
    .map_err(|_| "header is not text")?;
    let h = parse_header(header).map_err(|e| format!("header: {e}"))?;
    if h.fortran_order {
        return Err("only C order is supported".into());
    }
    let item = match h.descr.as_str() {
        "<f4" | "<u4" | "<i4" => 4,
        "<i8" => 8,
        other => return Err(format!("element type '{other}' is not supported")),
    };
    let count = h
        .shape
        .iter()
        .try_fold(1usize, |a, &d| a.checked_mul(d))
        .ok_or("shape overflows")?;
    let data = &bytes[start + len..];
    if count.checked_mul(item) != Some(data.len()) {
        return Err("the data length does not match the shape".into());
    }
    Ok((h, data))
}

/// The three fields of a .npy header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    /// The dtype descriptor, e.g. `<f4`.
    pub descr: String,
    /// Whether the data is in Fortran (column-major) order.
    pub fortran_order: bool,
    /// The array's shape.
    pub shape: Vec<usize>,
}

/// Parses a .npy header as the Python dictionary literal it is: `{'descr': '<f4', 'fortran_order':
/// False, 'shape': (3, 4), }` with any spacing, an optional trailing comma, and the padding spaces and
/// newline numpy writes after it. Exactly those three keys, each once, with a string, a boolean and a
/// tuple of non-negative integers; anything else (an unclosed tuple, a decoy key inside a value, a
/// repeated key, trailing text) is an error, so a header cannot be read as something other than it says.
pub fn parse_header(text: &str) -> Result<Header, String> {
    let mut p = Parser {
        s: text.as_bytes(),
        i: 0,
    };
    p.expect(b'{')?;
    let (mut descr, mut fortran, mut shape) = (None, None, None);
    loop {
        p.space();
        if p.eat(b'}') {
            break;
        }
        let key = p.string()?;
        p.space();
        p.expect(b':')?;
        p.space();
        let fresh = match key.as_str() {
            "descr" => descr.replace(p.string()?).is_none(),
            "fortran_order" => fortran.replace(p.boolean()?).is_none(),
            "shape" => shape.replace(p.tuple()?).is_none(),
            other => return Err(format!("unknown key '{other}'")),
        };
        if !fresh {
            return Err(format!("key '{key}' appears twice"));
        }
        p.space();
        if p.eat(b',') {
            continue;
        }
        p.space();
        p.expect(b'}')?;
        break;
    }
    // numpy pads the header with spaces and ends it with a newline; nothing else may follow.
    if p.s[p.i..].iter().any(|&c| !matches!(c, b' ' | b'\n')) {
        return Err(format!("text after the dictionary at byte {}", p.i));
    }
    Ok(Header {
        descr: descr.ok_or("no 'descr'")?,
        fortran_order: fortran.ok_or("no 'fortran_order'")?,
        shape: shape.ok_or("no 'shape'")?,
    })
}

struct Parser<'a> {
    s: &'a [u8],
    i: usize,
}

impl Parser<'_> {
    fn space(&mut self) {
        while self.i < self.s.len() && matches!(self.s[self.i], b' ' | b'\t' | b'\n' | b'\r') {
            self.i += 1;
        }
    }

    fn eat(&mut self, c: u8) -> bool {
        if self.s.get(self.i) == Some(&c) {
            self.i += 1;
            true
        } else {
            false
        }
    }

    fn expect(&mut self, c: u8) -> Result<(), String> {
        if self.eat(c) {
            Ok(())
        } else {
            Err(format!("expected '{}' at byte {}", c as char, self.i))
        }
    }

    /// A quoted string without escapes (numpy's keys and descriptors never have them).
    fn string(&mut self) -> Result<String, String> {
        let quote = match self.s.get(self.i) {
            Some(&q @ (b'\'' | b'"')) => q,
            _ => return Err(format!("expected a string at byte {}", self.i)),
        };
        self.i += 1;
        let start = self.i;
        while self.i < self.s.len() && self.s[self.i] != quote {
            if self.s[self.i] == b'\\' {
                return Err("escapes in strings are not supported".into());
            }
            self.i += 1;
        }
        let text =
            std::str::from_utf8(&self.s[start..self.i]).map_err(|_| "a string is not UTF-8")?;
        self.expect(quote)
            .map_err(|_| "an unclosed string".to_string())?;
        Ok(text.to_string())
    }

    fn boolean(&mut self) -> Result<bool, String> {
        for (word, value) in [(&b"True"[..], true), (&b"False"[..], false)] {
            if self.s[self.i..].starts_with(word) {
                self.i += word.len();
                return Ok(value);
            }
        }
        Err(format!("expected True or False at byte {}", self.i))
    }

    /// `(d0, d1, ...)`, `(d0,)` or `()`; each dimension a decimal integer that fits usize.
    fn tuple(&mut self) -> Result<Vec<usize>, String> {
        self.expect(b'(')?;
        let mut dims = Vec::new();
        loop {
            self.space();
            if self.eat(b')') {
                return Ok(dims);
            }
            let start = self.i;
            while self.i < self.s.len() && self.s[self.i].is_ascii_digit() {
                self.i += 1;
            }
            if start == self.i {
                return Err(format!("expected a dimension at byte {}", self.i));
            }
            let digits = std::str::from_utf8(&self.s[start..self.i]).expect("ASCII digits");
            dims.push(
                digits
                    .parse()
                    .map_err(|_| format!("dimension {digits} is too large"))?,
            );
            self.space();
            if !self.eat(b',') {
                self.space();
                self.expect(b')')?;
                return Ok(dims);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::parse_header;

    #[test]
    fn numpys_headers_parse() {
        for (text, shape) in [
            (
                "{'descr': '<f4', 'fortran_order': False, 'shape': (3, 4), }          \n",
                vec![3, 4],
            ),
            (
                "{'descr': '<u4', 'fortran_order': False, 'shape': (7,), }\n",
                vec![7],
            ),
            (
                "{\"descr\":\"<i8\",\"fortran_order\":False,\"shape\":()}",
                vec![],
            ),
        ] {
            let h = parse_header(text).unwrap();
            assert_eq!(h.shape, shape);
            assert!(!h.fortran_order);
        }
    }

    /// Headers the old substring search read as something else, and other malformed ones.
    #[test]
    fn hostile_headers_are_errors() {
        for text in [
            "{'descr': '<f4', 'fortran_order': False, 'shape': (3, 4, }",
            "{'x': \"'descr': '<f4'\", 'descr': '<u4', 'fortran_order': False, 'shape': (1,)}",
            "{'descr': '<f4', 'descr': '<f4', 'fortran_order': False, 'shape': (1,)}",
            "{'descr': '<f4', 'fortran_order': False}",
            "{'descr': '<f4', 'fortran_order': False, 'shape': (-1,)}",
            "{'descr': '<f4', 'fortran_order': False, 'shape': (99999999999999999999999,)}",
            "{'descr': '<f4', 'fortran_order': 0, 'shape': (1,)}",
            "{'descr': '<f4', 'fortran_order': False, 'shape': (1,)} trailing",
            "{'descr': '<f4, 'fortran_order': False, 'shape': (1,)}",
            "",
            "{",
        ] {
            assert!(parse_header(text).is_err(), "accepted {text:?}");
        }
        // fortran_order True parses (and the reader then refuses it as unsupported).
        assert!(
            parse_header("{'descr': '<f4', 'fortran_order':True, 'shape': (3,)}")
                .unwrap()
                .fortran_order
        );
    }
}
