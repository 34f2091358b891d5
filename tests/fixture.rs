//! The one fixture loader: the JSON files tools/fixtures/ records under tests/fixtures/, and the
//! little-endian f32 arrays beside some of them (`<name>.bin`), addressed by `{"offset", "shape"}` entries
//! of the JSON (offset in elements).

use std::path::PathBuf;

use serde_json::Value;

fn path(file: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(file)
}

/// `tests/fixtures/<file>` as text.
pub fn text(file: &str) -> String {
    let p = path(file);
    std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("fixture {}: {e}", p.display()))
}

/// `tests/fixtures/<file>` parsed as JSON.
pub fn json(file: &str) -> Value {
    serde_json::from_str(&text(file)).unwrap_or_else(|e| panic!("fixture {file}: {e}"))
}

/// `tests/fixtures/<file>` as little-endian f32 values.
pub fn f32_file(file: &str) -> Vec<f32> {
    let p = path(file);
    let bytes = std::fs::read(&p).unwrap_or_else(|e| panic!("fixture {}: {e}", p.display()));
    assert!(bytes.len().is_multiple_of(4), "{file} is not whole f32s");
    bytes
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect()
}

/// A recorded reference: `<stem>.json` and the arrays of `<stem>.bin`.
pub struct Fixture {
    pub index: Value,
    data: Vec<f32>,
}

/// Loads `tests/fixtures/<stem>.json` and `<stem>.bin`.
pub fn load(stem: &str) -> Fixture {
    Fixture {
        index: json(&format!("{stem}.json")),
        data: f32_file(&format!("{stem}.bin")),
    }
}

impl Fixture {
    /// The f32 array an entry `{"offset": elements, "shape": [...]}` names, and its shape.
    pub fn array(&self, entry: &Value) -> (&[f32], Vec<usize>) {
        let shape: Vec<usize> = entry["shape"]
            .as_array()
            .expect("an entry has a shape")
            .iter()
            .map(|v| v.as_u64().expect("dimensions are integers") as usize)
            .collect();
        let at = entry["offset"].as_u64().expect("an entry has an offset") as usize;
        let n: usize = shape.iter().product();
        (&self.data[at..at + n], shape)
    }

    /// An array of 32-bit integers stored bit for bit among the f32 values.
    pub fn words(&self, entry: &Value) -> Vec<u32> {
        self.array(entry).0.iter().map(|x| x.to_bits()).collect()
    }
}
