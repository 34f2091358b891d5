//! Group-quantized weights below 4 bits, with a sparse outlier part: the layout wring's `sparse` kernel
//! family reads, and its CPU reference.
//!
//! A matrix W \[rows\]\[cols\] (rows = outputs) is stored with its columns in an optional order `perm`
//! (stored column j holds input column `perm[j]`), cut into groups of `group` consecutive stored columns.
//! Each weight is a `bits`-bit code q (2 to 8 bits) with statistics per (row, group) in one of two forms:
//!
//! - [`Stats::Affine`]: an f16 step d and an f16 minimum m per (row, group); w = d q + m. This is Q4_1's
//!   grid (RTN and GPTQ baselines), so 4-bit groups of 32 rebuild a Q4_1 model exactly.
//! - [`Stats::Bilevel`]: SpQR's two-level statistics. Each (row, group) has a scale s and a zero z that are
//!   themselves quantized to `stat_bits` bits, asymmetrically, over blocks of `stat_rows` consecutive rows,
//!   with f16 second-order parameters per (row block, group): s = ss (qs - sz), z = zs (qz - zz), and
//!   w = s (q - z).
//!
//! Rows may have their own code width (`row_bits`, MixLLM's mixed precision between output rows: the most
//! salient rows at 8 bits, the rest at 4): each row's codes then take that many bits per weight, rows one
//! after another, and its statistics fit that width. An empty `row_bits` means every row has `bits`.
//!
//! Whole groups may be pruned (GQSA's group sparsity): a bit mask per row says which groups are kept, and
//! only kept groups store codes and statistics, in order. A row's kept groups are found by counting mask
//! bits, so the index costs one bit per group (GQSA's block-sparse rows store a 16-bit column index per
//! kept group; the mask is smaller whenever more than one group in sixteen is kept). Pruned weights are 0.
//! An empty mask means every group is kept.
//!
//! Outliers are stored apart, per row (CSR): an f16 value added to the dense weight at a stored column, so
//! dense + sparse rebuilds the quantizer's output. The value is the correction (the weight minus its dense
//! reconstruction), which is smaller than the weight and keeps more of f16's precision.
//!
//! Buffers (all u32 words, as the kernels bind them):
//! - `codes`: per row, `cols * bits` bits (the row's own bits where `row_bits` is given; only the kept
//!   groups' columns where there is a mask) packed from bit 0 of the row's first word upwards (a code may
//!   straddle two words), rows padded to whole words.
//! - `stats`: affine: per (row, kept group) one word, `d` in the low half and `m` in the high half (f16 bits);
//!   bilevel: per row, `2 * stat_bits` bits per group (qs, then qz above it), packed like the codes.
//! - `second`: bilevel only: per (row block, group) two words, (ss, sz) and (zs, zz) as f16 pairs.
//! - `perm`: one word per stored column (the identity when the matrix is not permuted).
//! - `mask` (optional): per row `groups.div_ceil(32)` words, bit g set when group g is kept.
//! - `outliers`: `rows + 1` row offsets, then one word per outlier: the stored column in the low 16 bits, the
//!   f16 value in the high 16 bits.

use half::f16;

/// How a group's statistics are stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Stats {
    /// f16 step and minimum per (row, group): w = d q + m.
    Affine,
    /// SpQR's quantized scale and zero per (row, group), with f16 second-order parameters per block of
    /// `rows` rows: w = s (q - z).
    Bilevel {
        /// Bits of each quantized scale and zero (SpQR: 3).
        bits: u32,
        /// Rows sharing second-order parameters (SpQR: 16).
        rows: usize,
    },
    /// Trellis-coded weights ([`crate::trellis`]): `bits` per weight, tiles of 16 x 16 (so `group` is 16)
    /// each a tail-biting stream whose `state`-bit windows decode through QTIP's computed code, and one
    /// f32 scale per row.
    Trellis {
        /// Bits of each state (QTIP's L).
        state: u32,
    },
}

/// Errors from building or checking a group-quantized matrix.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GroupError {
    /// A shape or parameter the format cannot hold.
    #[error("group quantization: {0}")]
    Shape(String),
}

fn shape_err<T>(what: impl Into<String>) -> Result<T, GroupError> {
    Err(GroupError::Shape(what.into()))
}

/// The shape and parameters of a group-quantized matrix.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Layout {
    /// Output rows.
    pub rows: usize,
    /// Input columns.
    pub cols: usize,
    /// Bits per weight code, 2 to 8.
    pub bits: u32,
    /// Columns per group.
    pub group: usize,
    /// How statistics are stored.
    pub stats: Stats,
}

impl Layout {
    /// Checks the parameters: 2 to 8 bits, groups of a multiple of 4 columns dividing the columns,
    /// statistics rows dividing the rows,
    /// at most 65,536 columns (outlier columns are 16-bit).
    pub fn check(&self) -> Result<(), GroupError> {
        let Layout {
            rows,
            cols,
            bits,
            group,
            stats,
        } = *self;
        if !(2..=8).contains(&bits) {
            return shape_err(format!("{bits}-bit codes; 2 to 8 bits are supported"));
        }
        if rows == 0 || cols == 0 || cols > 1 << 16 {
            return shape_err(format!(
                "a {rows} x {cols} matrix (1 to 65536 columns, at least one row)"
            ));
        }
        if group == 0 || !cols.is_multiple_of(group) {
            return shape_err(format!("groups of {group} do not divide {cols} columns"));
        }
        // The products read codes and activations four columns at a time.
        if !group.is_multiple_of(4) {
            return shape_err(format!(
                "groups of {group} columns; a multiple of 4 is needed"
            ));
        }
        if let Stats::Trellis { state } = stats {
            crate::trellis::check(bits, state)?;
            let t = crate::trellis::TILE;
            // Tiles of 16 x 16; rows of whole words (3-bit rows of 16 columns would end mid-word).
            if group != t || !rows.is_multiple_of(t) || !cols.is_multiple_of(32) {
                return shape_err(format!(
                    "a trellis matrix of {rows} x {cols} in groups of {group}: tiles are {t} x {t}, \
                     rows a multiple of {t}, columns of 32"
                ));
            }
        }
        if let Stats::Bilevel { bits: sb, rows: sr } = stats {
            if !(1..=8).contains(&sb) {
                return shape_err(format!("{sb}-bit statistics; 1 to 8 bits are supported"));
            }
            if sr == 0 || !rows.is_multiple_of(sr) {
                return shape_err(format!(
                    "statistics blocks of {sr} rows do not divide {rows} rows"
                ));
            }
        }
        Ok(())
    }

    /// Groups per row.
    pub fn groups(&self) -> usize {
        self.cols / self.group
    }

    /// Words of codes per row.
    pub fn code_words(&self) -> usize {
        (self.cols * self.bits as usize).div_ceil(32)
    }

    /// Words of statistics per row.
    pub fn stat_words(&self) -> usize {
        match self.stats {
            Stats::Affine => self.groups(),
            Stats::Bilevel { bits, .. } => (self.groups() * 2 * bits as usize).div_ceil(32),
            Stats::Trellis { .. } => 1,
        }
    }

    /// Words of group mask per row.
    pub fn mask_words(&self) -> usize {
        self.groups().div_ceil(32)
    }

    /// Words of second-order parameters in all.
    pub fn second_words(&self) -> usize {
        match self.stats {
            Stats::Affine | Stats::Trellis { .. } => 0,
            Stats::Bilevel { rows, .. } => 2 * (self.rows / rows) * self.groups(),
        }
    }
}

/// Reads the `bits`-bit field at bit `at` of `words` (fields may straddle two words).
pub fn get_bits(words: &[u32], at: usize, bits: u32) -> u32 {
    let (w, s) = (at / 32, (at % 32) as u32);
    let mut v = words[w] >> s;
    if s + bits > 32 {
        v |= words[w + 1] << (32 - s);
    }
    v & ((1u32 << bits) - 1)
}

/// Writes the `bits`-bit field `v` at bit `at` of `words` (which start zeroed there).
pub fn put_bits(words: &mut [u32], at: usize, bits: u32, v: u32) {
    let (w, s) = (at / 32, (at % 32) as u32);
    words[w] |= v << s;
    if s + bits > 32 {
        words[w + 1] |= v >> (32 - s);
    }
}

/// Two f16 values as one word, the first in the low half (WGSL's `pack2x16float` order).
pub fn pack_f16x2(lo: f16, hi: f16) -> u32 {
    u32::from(lo.to_bits()) | (u32::from(hi.to_bits()) << 16)
}

/// The inverse of [`pack_f16x2`], widened to f32.
pub fn unpack_f16x2(w: u32) -> (f32, f32) {
    (
        f16::from_bits(w as u16).to_f32(),
        f16::from_bits((w >> 16) as u16).to_f32(),
    )
}

/// A group-quantized matrix in the kernels' layout.
#[derive(Debug, Clone, PartialEq)]
pub struct GroupMatrix {
    /// Shape and parameters.
    pub layout: Layout,
    /// Codes, `rows * code_words` words.
    pub codes: Vec<u32>,
    /// Statistics, `rows * stat_words` words.
    pub stats: Vec<u32>,
    /// Second-order parameters (bilevel only).
    pub second: Vec<u32>,
    /// Stored column order (`perm[j]` is the input column of stored column j).
    pub perm: Vec<u32>,
    /// Row offsets then entries (see the module documentation).
    pub outliers: Vec<u32>,
    /// Each row's code width, when rows differ (empty: every row has `layout.bits`).
    pub row_bits: Vec<u8>,
    /// Which groups each row keeps, `rows * layout.mask_words()` words (empty: every group).
    pub mask: Vec<u32>,
    /// Incoherence processing: the sign bits of the input transform V ([`crate::rht`]), one per column
    /// (empty: none). The stored rows are then V w, and the products read V x.
    pub signs: Vec<u32>,
}

/// Where a row's data starts, as the kernels bind it (`rowcodes`: three words per row).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RowAt {
    /// The row's first code word.
    pub code: usize,
    /// The row's code width.
    pub bits: u32,
    /// The row's first statistics word (affine: one word per kept group; bilevel: the row's packed words).
    pub stat: usize,
}

impl GroupMatrix {
    /// Checks that every buffer has the length the layout implies, the permutation is one, and the outlier
    /// offsets and columns are in range: what a file's contents must pass before a kernel reads them.
    pub fn check(&self) -> Result<(), GroupError> {
        let l = &self.layout;
        l.check()?;
        if !self.row_bits.is_empty() {
            if self.row_bits.len() != l.rows {
                return shape_err(format!(
                    "row_bits has {} entries for {} rows",
                    self.row_bits.len(),
                    l.rows
                ));
            }
            if let Some(b) = self.row_bits.iter().find(|b| !(2..=8).contains(*b)) {
                return shape_err(format!("a row of {b}-bit codes; 2 to 8 bits are supported"));
            }
        }
        self.check_mask()?;
        let end = self.row_at(l.rows);
        let want = [
            ("codes", self.codes.len(), end.code),
            ("stats", self.stats.len(), end.stat),
            ("second", self.second.len(), l.second_words()),
            ("perm", self.perm.len(), l.cols),
        ];
        for (name, got, want) in want {
            if got != want {
                return shape_err(format!("{name} holds {got} words, the layout needs {want}"));
            }
        }
        // Every f16 statistic finite: then every decoded weight is (|s|, |z| < 2^33 and |w| < 2^67 in the
        // bilevel form, far inside f32). An infinite step in a file would otherwise decode to infinities.
        let halves: &[u32] = match l.stats {
            Stats::Affine => &self.stats,
            Stats::Bilevel { .. } => &self.second,
            Stats::Trellis { .. } => {
                // Scales up to 2^64 keep every weight (a code is below 4 in magnitude) far inside f32, as the
                // f16 statistics of the group forms do.
                if let Some(w) = self.stats.iter().find(|&&w| {
                    let v = f32::from_bits(w).abs();
                    v.is_nan() || v > 2f32.powi(64)
                }) {
                    return shape_err(format!(
                        "a non-finite trellis scale or one above 2^64 (word {w:#x})"
                    ));
                }
                if !self.row_bits.is_empty() || !self.mask.is_empty() || self.permuted() {
                    return shape_err(
                        "trellis rows have one width, keep every group and their column order",
                    );
                }
                &[]
            }
        };
        if let Some(w) = halves.iter().find(|&&w| {
            let (a, b) = unpack_f16x2(w);
            !(a.is_finite() && b.is_finite())
        }) {
            return shape_err(format!("a non-finite statistic (word {w:#x})"));
        }
        let mut seen = vec![false; l.cols];
        for &p in &self.perm {
            match seen.get_mut(p as usize) {
                Some(s) if !*s => *s = true,
                _ => return shape_err(format!("perm is not a permutation (entry {p})")),
            }
        }
        if self.outliers.len() < l.rows + 1 {
            return shape_err("the outlier buffer lacks its row offsets");
        }
        let (offsets, entries) = self.outliers.split_at(l.rows + 1);
        if offsets[0] as usize != l.rows + 1
            || offsets.windows(2).any(|w| w[1] < w[0])
            || offsets[l.rows] as usize != self.outliers.len()
        {
            return shape_err(
                "outlier row offsets must rise from the end of the offsets to the end of the buffer",
            );
        }
        if let Some(e) = entries.iter().find(|&&e| (e & 0xFFFF) as usize >= l.cols) {
            return shape_err(format!("an outlier at column {} of {}", e & 0xFFFF, l.cols));
        }
        if let Some(e) = entries
            .iter()
            .find(|&&e| !f16::from_bits((e >> 16) as u16).is_finite())
        {
            return shape_err(format!("a non-finite outlier value (word {e:#x})"));
        }
        if !self.signs.is_empty() {
            let r = crate::rht::Rht::new(l.cols)?;
            if self.signs.len() != r.sign_words() {
                return shape_err(format!(
                    "signs hold {} words, {} columns need {}",
                    self.signs.len(),
                    l.cols,
                    r.sign_words()
                ));
            }
            if !l.cols.is_multiple_of(32) && self.signs[l.cols / 32] >> (l.cols % 32) != 0 {
                return shape_err("a sign bit past the last column");
            }
        }
        Ok(())
    }

    /// Checks the mask alone (a reader checks it before counting the codes and statistics it implies):
    /// affine statistics, one row of words per row, no bit past the last group (it would count a group
    /// that does not exist), and some group kept somewhere (a matrix with none would have no codes and
    /// no statistics to bind).
    pub fn check_mask(&self) -> Result<(), GroupError> {
        let l = &self.layout;
        if self.mask.is_empty() {
            return Ok(());
        }
        if l.stats != Stats::Affine {
            return shape_err("pruned groups need affine statistics");
        }
        if self.mask.len() != l.rows * l.mask_words() {
            return shape_err(format!(
                "mask holds {} words, {} rows of {} groups need {}",
                self.mask.len(),
                l.rows,
                l.groups(),
                l.rows * l.mask_words()
            ));
        }
        let spare = l.mask_words() * 32 - l.groups();
        if spare > 0 {
            let high = !0u32 << (32 - spare);
            if self
                .mask
                .chunks_exact(l.mask_words())
                .any(|row| row[l.mask_words() - 1] & high != 0)
            {
                return shape_err(format!("a mask bit past group {}", l.groups()));
            }
        }
        if self.mask.iter().all(|&w| w == 0) {
            return shape_err("the mask keeps no group of any row");
        }
        Ok(())
    }

    /// Row `row`'s code width.
    pub fn bits_of(&self, row: usize) -> u32 {
        self.row_bits
            .get(row)
            .map_or(self.layout.bits, |&b| u32::from(b))
    }

    /// Groups row `row` keeps.
    pub fn kept_count(&self, row: usize) -> usize {
        let l = &self.layout;
        if self.mask.is_empty() {
            return l.groups();
        }
        let mw = l.mask_words();
        self.mask[row * mw..][..mw]
            .iter()
            .map(|w| w.count_ones() as usize)
            .sum()
    }

    /// Whether row `row` keeps group `g`, and if so its position among the row's kept groups (what
    /// the shader computes with `countOneBits`).
    pub fn slot(&self, row: usize, g: usize) -> Option<usize> {
        if self.mask.is_empty() {
            return Some(g);
        }
        let mw = self.layout.mask_words();
        let words = &self.mask[row * mw..][..mw];
        let (w, b) = (g / 32, g % 32);
        if words[w] >> b & 1 == 0 {
            return None;
        }
        let below: u32 = words[..w].iter().map(|x| x.count_ones()).sum();
        Some((below + (words[w] & ((1u32 << b) - 1)).count_ones()) as usize)
    }

    /// Where row `row`'s data starts (`row == rows`: the lengths of the code and statistics buffers).
    /// Linear in the rows when they differ in width or in kept groups: loops over rows use
    /// [`GroupMatrix::row_starts`].
    pub fn row_at(&self, row: usize) -> RowAt {
        let l = &self.layout;
        if self.row_bits.is_empty() && self.mask.is_empty() {
            return RowAt {
                code: row * l.code_words(),
                bits: l.bits,
                stat: row * l.stat_words(),
            };
        }
        let mut at = RowAt {
            code: 0,
            bits: l.bits,
            stat: 0,
        };
        for r in 0..row.min(l.rows) {
            at = self.next_row(r, at);
        }
        RowAt {
            bits: if row < l.rows {
                self.bits_of(row)
            } else {
                l.bits
            },
            ..at
        }
    }

    /// The start of row `r + 1` from that of row `r`.
    fn next_row(&self, r: usize, at: RowAt) -> RowAt {
        let l = &self.layout;
        let kept = self.kept_count(r);
        let stat = match l.stats {
            Stats::Affine => kept,
            Stats::Bilevel { .. } | Stats::Trellis { .. } => l.stat_words(),
        };
        RowAt {
            code: at.code + (kept * l.group * self.bits_of(r) as usize).div_ceil(32),
            bits: self.bits_of(r + 1),
            stat: at.stat + stat,
        }
    }

    /// Every row's start, as the kernels bind them (`rowcodes`).
    pub fn row_starts(&self) -> Vec<RowAt> {
        let mut at = RowAt {
            code: 0,
            bits: self.bits_of(0),
            stat: 0,
        };
        (0..self.layout.rows)
            .map(|r| {
                let this = at;
                at = self.next_row(r, at);
                this
            })
            .collect()
    }

    /// The `rowcodes` operand: (first code word, bits, first statistics word) per row.
    pub fn rowcodes(&self) -> Vec<u32> {
        self.row_starts()
            .iter()
            .flat_map(|a| [a.code as u32, a.bits, a.stat as u32])
            .collect()
    }

    /// Outliers in all.
    pub fn outlier_count(&self) -> usize {
        self.outliers.len() - (self.layout.rows + 1)
    }

    /// Whether the columns are stored in another order.
    pub fn permuted(&self) -> bool {
        self.perm.iter().enumerate().any(|(j, &p)| p as usize != j)
    }

    /// Storage bits per weight, everything counted: codes with their padding, statistics, second-order
    /// parameters, the group mask, the permutation (when not the identity), the outliers with their row
    /// offsets and the incoherence transform's signs.
    pub fn bits_per_weight(&self) -> f64 {
        let words = self.codes.len()
            + self.stats.len()
            + self.second.len()
            + self.mask.len()
            + if self.permuted() { self.perm.len() } else { 0 }
            + self.outliers.len()
            + self.signs.len();
        // Per-row widths are stored as one byte per row.
        (words * 32 + self.row_bits.len() * 8) as f64 / (self.layout.rows * self.layout.cols) as f64
    }

    /// The dense part's weight at column `t` of kept group `slot` (group `g`) of a row that starts at
    /// `at`: the shader's arithmetic, in its order.
    pub fn decode(&self, row: usize, at: &RowAt, slot: usize, g: usize, t: usize) -> f32 {
        let l = &self.layout;
        let q = if matches!(l.stats, Stats::Trellis { .. }) {
            0.0
        } else {
            self.code(at, slot, t) as f32
        };
        let (a, b) = self.group_stats(row, at, slot, g);
        match self.layout.stats {
            Stats::Affine => a * q + b,
            Stats::Bilevel { .. } => a * (q - b),
            Stats::Trellis { state } => {
                let (col_tiles, tile) = (l.cols / crate::trellis::TILE, crate::trellis::TILE);
                let words = crate::trellis::tile_words(l.bits);
                let at = ((row / tile) * col_tiles + g) * words;
                let p = (row % tile) * tile + t;
                a * crate::trellis::code(crate::trellis::state_at(
                    &self.codes[at..][..words],
                    l.bits,
                    state,
                    p,
                ))
            }
        }
    }

    /// The code at column `t` of kept group `slot` of a row that starts at `at`.
    pub fn code(&self, at: &RowAt, slot: usize, t: usize) -> u32 {
        get_bits(
            &self.codes[at.code..],
            (slot * self.layout.group + t) * at.bits as usize,
            at.bits,
        )
    }

    /// Kept group `slot` (group `g`)'s statistics as the shaders read them: affine (d, m) with
    /// w = d q + m, or bilevel (s, z) with w = s (q - z).
    pub fn group_stats(&self, row: usize, at: &RowAt, slot: usize, g: usize) -> (f32, f32) {
        let l = &self.layout;
        match l.stats {
            Stats::Affine => unpack_f16x2(self.stats[at.stat + slot]),
            Stats::Bilevel { bits, rows } => {
                let base = 2 * ((row / rows) * l.groups() + g);
                let (ss, sz) = unpack_f16x2(self.second[base]);
                let (zs, zz) = unpack_f16x2(self.second[base + 1]);
                let f = get_bits(&self.stats[at.stat..], g * 2 * bits as usize, 2 * bits);
                let (qs, qz) = ((f & ((1 << bits) - 1)) as f32, (f >> bits) as f32);
                (ss * (qs - sz), zs * (qz - zz))
            }
            // A trellis weight is its row's scale times a code of its state (see `dequantize_stored`).
            Stats::Trellis { .. } => (f32::from_bits(self.stats[at.stat]), 0.0),
        }
    }

    /// Matrices with the same columns, format and column order stacked row-wise into one (the q, k and v
    /// projections read one input, so act_order gives them one order): `None` when they differ.
    pub fn stack(parts: &[&GroupMatrix]) -> Option<GroupMatrix> {
        let first = parts.first()?;
        let l0 = first.layout;
        if parts.iter().any(|p| {
            Layout {
                rows: l0.rows,
                ..p.layout
            } != l0
                || p.perm != first.perm
                || p.signs != first.signs
        }) {
            return None;
        }
        let rows: usize = parts.iter().map(|p| p.layout.rows).sum();
        let mut offsets = Vec::with_capacity(rows + 1);
        let mut entries = Vec::new();
        let mut at = (rows + 1) as u32;
        offsets.push(at);
        for p in parts {
            let r = p.layout.rows;
            for w in p.outliers[..=r].windows(2) {
                at += w[1] - w[0];
                offsets.push(at);
            }
            entries.extend_from_slice(&p.outliers[r + 1..]);
        }
        offsets.extend(entries);
        let cat = |f: fn(&GroupMatrix) -> &Vec<u32>| -> Vec<u32> {
            parts.iter().flat_map(|p| f(p).iter().copied()).collect()
        };
        Some(GroupMatrix {
            signs: first.signs.clone(),
            layout: Layout { rows, ..l0 },
            codes: cat(|p| &p.codes),
            stats: cat(|p| &p.stats),
            second: cat(|p| &p.second),
            perm: first.perm.clone(),
            outliers: offsets,
            // Masks stack with their rows (the columns, and so the words per row, are the same); unmasked
            // parts spell theirs out when any part is masked.
            mask: if parts.iter().all(|p| p.mask.is_empty()) {
                Vec::new()
            } else {
                parts.iter().flat_map(|p| p.full_mask()).collect()
            },
            // Per-row widths stack with their rows; uniform parts spell theirs out when any part varies.
            row_bits: if parts.iter().all(|p| p.row_bits.is_empty()) {
                Vec::new()
            } else {
                parts
                    .iter()
                    .flat_map(|p| (0..p.layout.rows).map(|r| p.bits_of(r) as u8))
                    .collect()
            },
        })
    }

    /// The same weights with pruned groups stored as groups of zero codes with zero statistics (affine
    /// only): what a reader without the mask would need, and an oracle for the masked kernels.
    pub fn without_mask(&self) -> GroupMatrix {
        let l = &self.layout;
        if self.mask.is_empty() || l.stats != Stats::Affine {
            return self.clone();
        }
        let groups = l.groups();
        let mut codes = vec![0u8; l.rows * l.cols];
        let mut affine = vec![(f16::ZERO, f16::ZERO); l.rows * groups];
        for (r, at) in self.row_starts().iter().enumerate() {
            for g in 0..groups {
                let Some(slot) = self.slot(r, g) else {
                    continue;
                };
                let (d, m) = unpack_f16x2(self.stats[at.stat + slot]);
                affine[r * groups + g] = (f16::from_f32(d), f16::from_f32(m));
                for t in 0..l.group {
                    codes[r * l.cols + g * l.group + t] = get_bits(
                        &self.codes[at.code..],
                        (slot * l.group + t) * at.bits as usize,
                        at.bits,
                    ) as u8;
                }
            }
        }
        let outliers: Vec<Vec<(u16, f16)>> = (0..l.rows)
            .map(|r| {
                self.outliers[self.outliers[r] as usize..self.outliers[r + 1] as usize]
                    .iter()
                    .map(|&e| (e as u16, f16::from_bits((e >> 16) as u16)))
                    .collect()
            })
            .collect();
        Builder {
            layout: *l,
            codes: &codes,
            affine: &affine,
            quantized: &[],
            second: &[],
            perm: Some(&self.perm),
            outliers: &outliers,
            row_bits: &self.row_bits,
            kept: &[],
        }
        .build()
        .map(|m| GroupMatrix {
            signs: self.signs.clone(),
            ..m
        })
        .expect("a checked matrix rebuilds")
    }

    /// The mask spelled out: every row's words, all groups set when the matrix has no mask.
    pub fn full_mask(&self) -> Vec<u32> {
        let l = &self.layout;
        if !self.mask.is_empty() {
            return self.mask.clone();
        }
        let row: Vec<u32> = (0..l.mask_words())
            .map(|w| {
                let n = (l.groups() - 32 * w).min(32);
                if n == 32 { !0 } else { (1u32 << n) - 1 }
            })
            .collect();
        row.repeat(l.rows)
    }

    /// The weights the matrix stands for, in input-column order \[rows\]\[cols\], outliers added: with an
    /// incoherence transform, each stored row w~ taken back to V^T w~.
    pub fn dequantize(&self) -> Vec<f32> {
        let mut out = self.dequantize_stored();
        if !self.signs.is_empty() {
            let cols = self.layout.cols;
            let r = crate::rht::Rht::new(cols).expect("a checked matrix has a transform");
            let dct = r.dct();
            let mut row = vec![0f32; cols];
            for chunk in out.chunks_mut(cols) {
                r.inverse(&dct, &self.signs, chunk, &mut row);
                chunk.copy_from_slice(&row);
            }
        }
        out
    }

    /// The matrix as stored, in input-column order \[rows\]\[cols\], outliers added: what the products
    /// multiply (by V x when the matrix has an incoherence transform).
    pub fn dequantize_stored(&self) -> Vec<f32> {
        let l = &self.layout;
        let mut out = vec![0f32; l.rows * l.cols];
        for (r, at) in self.row_starts().iter().enumerate() {
            for g in 0..l.groups() {
                let Some(slot) = self.slot(r, g) else {
                    continue;
                };
                for t in 0..l.group {
                    let j = g * l.group + t;
                    out[r * l.cols + self.perm[j] as usize] = self.decode(r, at, slot, g, t);
                }
            }
            let (a, b) = (self.outliers[r] as usize, self.outliers[r + 1] as usize);
            for &e in &self.outliers[a..b] {
                let j = (e & 0xFFFF) as usize;
                out[r * l.cols + self.perm[j] as usize] +=
                    f16::from_bits((e >> 16) as u16).to_f32();
            }
        }
        out
    }
}

/// Builds the buffers from per-weight codes, per-(row, group) statistics and outliers, all in stored column
/// order: `codes` \[rows\]\[cols\]; for affine statistics `affine` \[rows\]\[groups\] of (d, m); for bilevel ones
/// `quantized` \[rows\]\[groups\] of (qs, qz) and `second` \[row blocks\]\[groups\] of (ss, sz, zs, zz); `outliers`
/// per row as (stored column, value); `kept` \[rows\]\[groups\] (empty: every group), the codes and statistics of
/// groups not kept being ignored.
#[derive(Debug)]
pub struct Builder<'a> {
    /// The matrix's shape, code width, groups and statistics kind.
    pub layout: Layout,
    /// Codes, \[rows\]\[cols\], in stored column order.
    pub codes: &'a [u8],
    /// Affine statistics (scale, minimum), \[rows\]\[groups\].
    pub affine: &'a [(f16, f16)],
    /// Bilevel statistics, quantized scale and zero, \[rows\]\[groups\].
    pub quantized: &'a [(u8, u8)],
    /// Bilevel second-order parameters (scale and zero of the scales and of the zeros), \[row blocks\]\[groups\].
    pub second: &'a [[f16; 4]],
    /// The column permutation (act order), stored column to original, if any.
    pub perm: Option<&'a [u32]>,
    /// Per row, the outliers as (stored column, value).
    pub outliers: &'a [Vec<(u16, f16)>],
    /// Each row's code width, or empty for `layout.bits` everywhere.
    pub row_bits: &'a [u8],
    /// Which groups each row keeps, or empty for all.
    pub kept: &'a [bool],
}

impl Builder<'_> {
    /// Packs and checks.
    pub fn build(&self) -> Result<GroupMatrix, GroupError> {
        let l = self.layout;
        l.check()?;
        if self.codes.len() != l.rows * l.cols || self.outliers.len() != l.rows {
            return shape_err("codes or outlier rows do not match the shape");
        }
        if !self.row_bits.is_empty() && self.row_bits.len() != l.rows {
            return shape_err("row_bits does not match the rows");
        }
        let groups = l.groups();
        if !self.kept.is_empty() && self.kept.len() != l.rows * groups {
            return shape_err("the kept groups do not match the shape");
        }
        let kept = |r: usize, g: usize| self.kept.is_empty() || self.kept[r * groups + g];
        let bits_of = |r: usize| self.row_bits.get(r).map_or(l.bits, |&b| u32::from(b));
        let words = |r: usize| {
            let n = (0..groups).filter(|&g| kept(r, g)).count();
            (n * l.group * bits_of(r) as usize).div_ceil(32)
        };
        let mut codes = vec![0u32; (0..l.rows).map(words).sum()];
        let mut start = 0;
        for r in 0..l.rows {
            let bits = bits_of(r);
            if !(2..=8).contains(&bits) {
                return shape_err(format!("a row of {bits}-bit codes"));
            }
            let row = &mut codes[start..][..words(r)];
            start += words(r);
            let mut at = 0;
            for j in 0..l.cols {
                if !kept(r, j / l.group) {
                    continue;
                }
                let q = u32::from(self.codes[r * l.cols + j]);
                if q >> bits != 0 {
                    return shape_err(format!("code {q} does not fit in {bits} bits"));
                }
                put_bits(row, at, bits, q);
                at += bits as usize;
            }
        }
        let (stats, second) = match l.stats {
            Stats::Affine => {
                if self.affine.len() != l.rows * groups {
                    return shape_err("affine statistics do not match the shape");
                }
                (
                    self.affine
                        .iter()
                        .enumerate()
                        .filter(|(i, _)| kept(i / groups, i % groups))
                        .map(|(_, &(d, m))| pack_f16x2(d, m))
                        .collect(),
                    Vec::new(),
                )
            }
            Stats::Bilevel { bits, rows } => {
                if !self.kept.is_empty() {
                    return shape_err("pruned groups need affine statistics");
                }
                if self.quantized.len() != l.rows * groups
                    || self.second.len() != (l.rows / rows) * groups
                {
                    return shape_err("bilevel statistics do not match the shape");
                }
                let mut stats = vec![0u32; l.rows * l.stat_words()];
                for r in 0..l.rows {
                    let row = &mut stats[r * l.stat_words()..][..l.stat_words()];
                    for g in 0..groups {
                        let (qs, qz) = self.quantized[r * groups + g];
                        let (qs, qz) = (u32::from(qs), u32::from(qz));
                        if (qs | qz) >> bits != 0 {
                            return shape_err(format!(
                                "a quantized statistic does not fit in {bits} bits"
                            ));
                        }
                        put_bits(row, g * 2 * bits as usize, 2 * bits, qs | (qz << bits));
                    }
                }
                let second = self
                    .second
                    .iter()
                    .flat_map(|p| [pack_f16x2(p[0], p[1]), pack_f16x2(p[2], p[3])])
                    .collect();
                (stats, second)
            }
            Stats::Trellis { .. } => {
                return shape_err("trellis matrices are built by wring_quant::trellis");
            }
        };
        let perm = match self.perm {
            Some(p) => p.to_vec(),
            None => (0..l.cols as u32).collect(),
        };
        let mut outliers = Vec::with_capacity(l.rows + 1);
        let mut at = (l.rows + 1) as u32;
        outliers.push(at);
        for row in self.outliers {
            at += row.len() as u32;
            outliers.push(at);
        }
        for row in self.outliers {
            outliers.extend(
                row.iter()
                    .map(|&(j, v)| u32::from(j) | (u32::from(v.to_bits()) << 16)),
            );
        }
        let m = GroupMatrix {
            layout: l,
            codes,
            stats,
            second,
            perm,
            outliers,
            row_bits: self.row_bits.to_vec(),
            signs: Vec::new(),
            mask: if self.kept.is_empty() {
                Vec::new()
            } else {
                let mw = l.mask_words();
                let mut mask = vec![0u32; l.rows * mw];
                for (i, _) in self.kept.iter().enumerate().filter(|p| *p.1) {
                    let (r, g) = (i / groups, i % groups);
                    mask[r * mw + g / 32] |= 1 << (g % 32);
                }
                mask
            },
        };
        m.check()?;
        Ok(m)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bit_fields_round_trip_across_word_boundaries() {
        for bits in 2..=8u32 {
            let n = 100;
            let mut words = vec![0u32; (n * bits as usize).div_ceil(32)];
            for i in 0..n {
                put_bits(
                    &mut words,
                    i * bits as usize,
                    bits,
                    (i as u32 * 7) % (1 << bits),
                );
            }
            for i in 0..n {
                assert_eq!(
                    get_bits(&words, i * bits as usize, bits),
                    (i as u32 * 7) % (1 << bits),
                    "{bits} bits, field {i}"
                );
            }
        }
    }

    #[test]
    fn stacking_concatenates_rows() {
        use crate::gptq::{Config, Hessian, quantize};
        let h = Hessian::identity(32);
        let cfg = Config {
            act_order: false,
            ..Config::spqr(3)
        };
        let a_w: Vec<f32> = (0..16 * 32)
            .map(|i| ((i * 37) % 17) as f32 * 0.01)
            .collect();
        let mut b_w: Vec<f32> = (0..32 * 32)
            .map(|i| ((i * 11) % 13) as f32 * 0.02)
            .collect();
        b_w[5] = 3.0;
        let a = quantize(&a_w, 16, 32, &h, &cfg).unwrap().0;
        let b = quantize(&b_w, 32, 32, &h, &cfg).unwrap().0;
        let s = GroupMatrix::stack(&[&a, &b]).unwrap();
        s.check().unwrap();
        let mut want = a.dequantize();
        want.extend(b.dequantize());
        assert_eq!(s.dequantize(), want);
        assert_eq!(s.outlier_count(), a.outlier_count() + b.outlier_count());
    }

    /// A matrix with pruned groups stacks with one without: the second's mask is spelled out, every row
    /// still decodes as before, and a mask bit past the last group is refused.
    #[test]
    fn masks_stack_and_are_checked() {
        use crate::gptq::{Config, Hessian, quantize};
        // 48 groups of 16: two mask words per row, 16 spare bits.
        let (rows, cols) = (8, 768);
        let w: Vec<f32> = (0..rows * cols)
            .map(|i| ((i * 37) % 101) as f32 * 0.01 - 0.5)
            .collect();
        let h = Hessian::identity(cols);
        let sparse = Config {
            group: 16,
            ..Config::gqsa(0.25)
        };
        let a = quantize(&w, rows, cols, &h, &sparse).unwrap().0;
        let b = quantize(
            &w,
            rows,
            cols,
            &h,
            &Config {
                sparsity: 0.0,
                ..sparse
            },
        )
        .unwrap()
        .0;
        assert_eq!(a.kept_count(0), 36);
        assert!(b.mask.is_empty());
        let s = GroupMatrix::stack(&[&a, &b]).unwrap();
        s.check().unwrap();
        let mut want = a.dequantize();
        want.extend(b.dequantize());
        assert_eq!(s.dequantize(), want);
        assert_eq!(s.mask[rows * 2..], b.full_mask()[..]);
        assert_eq!(b.full_mask()[..2], [!0, 0xFFFF]);
        let plain = a.without_mask();
        assert!(plain.mask.is_empty());
        assert_eq!(plain.dequantize(), a.dequantize());
        let mut bad = a.clone();
        bad.mask[1] |= 1 << 20;
        assert!(bad.check().is_err());
    }

    #[test]
    fn layouts_are_checked() {
        let ok = Layout {
            rows: 32,
            cols: 64,
            bits: 3,
            group: 16,
            stats: Stats::Bilevel { bits: 3, rows: 16 },
        };
        assert!(ok.check().is_ok());
        for bad in [
            Layout { bits: 1, ..ok },
            Layout { bits: 9, ..ok },
            Layout { group: 24, ..ok },
            Layout { group: 2, ..ok },
            Layout { rows: 24, ..ok },
            Layout { cols: 0, ..ok },
            Layout {
                stats: Stats::Bilevel { bits: 0, rows: 16 },
                ..ok
            },
        ] {
            assert!(bad.check().is_err(), "{bad:?}");
        }
    }
}
