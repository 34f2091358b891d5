//! `shaders/sparse/tviterbi.wgsl`: the trellis encoder (`wring_quant::trellis::Encoder`) on the device,
//! one workgroup per 16 x 16 tile, bit for bit the CPU encoder's streams (its costs are exact integers).

use wring_quant::trellis;

use wring_kernels_core::dtype::DType;
use wring_kernels_core::plan::{self, Caps, Choice, KernelError, Plan};
use wring_kernels_core::{Kernel, Operand};

/// The shader's `Params`.
#[repr(C)]
#[derive(Debug, Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
pub struct Params {
    /// Bits of each state.
    pub state: u32,
    /// Tiles.
    pub tiles: u32,
    /// Padding to the uniform's size.
    pub _pad0: u32,
    /// Padding.
    pub _pad1: u32,
}

/// Encodes `tiles` tiles of 256 fixed-point values (`x`, i32, `wring_quant::trellis::to_fixed`) into
/// their streams (`stream`, `tiles * tile_words(bits)` words), with scratch `cost`, `best` and `trace`
/// ([`Tviterbi::scratch_words`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tviterbi {
    /// Bits per weight (K).
    pub bits: u32,
    /// Bits per state (L).
    pub state: u32,
    /// Tiles.
    pub tiles: usize,
}

impl Tviterbi {
    /// Words of each scratch operand for all tiles: (cost, best, trace).
    pub fn scratch_words(&self) -> (usize, usize, usize) {
        let shared = 1usize << self.state.saturating_sub(self.bits).min(31);
        (
            self.tiles << self.state.min(31),
            self.tiles * shared,
            self.tiles * trellis::SEQ * shared / 8,
        )
    }

    /// Bytes of scratch one tile needs (what bounds the tiles one launch may take).
    pub fn scratch_bytes_per_tile(bits: u32, state: u32) -> u64 {
        let (c, b, t) = Tviterbi {
            bits,
            state,
            tiles: 1,
        }
        .scratch_words();
        4 * (c + b + t) as u64
    }
}

impl Kernel for Tviterbi {
    fn kernel(&self) -> &'static str {
        "tviterbi"
    }

    fn operands(&self) -> Vec<Operand> {
        let (c, b, t) = self.scratch_words();
        vec![
            Operand::read("x", DType::I32, 0).shape(&[self.tiles * trellis::SEQ]),
            Operand::write("cost", DType::U32, 0).shape(&[c]),
            Operand::write("best", DType::U32, 0).shape(&[b]),
            Operand::write("trace", DType::U32, 0).shape(&[t]),
            Operand::write("stream", DType::U32, 0)
                .shape(&[self.tiles * trellis::tile_words(self.bits.clamp(2, 4))]),
        ]
    }

    /// One workgroup per tile: 64 lanes on CPU adapters, 256 on GPUs.
    fn plan(&self, caps: &Caps, choice: Choice<'_>) -> Result<Plan, KernelError> {
        trellis::check(self.bits, self.state).map_err(|e| KernelError::Shape {
            kernel: "tviterbi",
            what: e.to_string(),
        })?;
        plan::ensure(self.tiles >= 1, "tviterbi", || "no tiles".into())?;
        let (c, _, t) = self.scratch_words();
        plan::index_u32("tviterbi", "cost words", c)?;
        plan::index_u32("tviterbi", "trace words", t)?;
        let (name, why) = if caps.software {
            ("wg64", "the adapter is a CPU")
        } else {
            ("wg256", "the adapter is a GPU")
        };
        let v = crate::select(
            "tviterbi",
            &format!("{name}_w{}", self.bits),
            why,
            caps,
            choice,
        )?;
        crate::tmatvec::ensure_width("tviterbi", v, self.bits)?;
        let params = Params {
            state: self.state,
            tiles: self.tiles as u32,
            _pad0: 0,
            _pad1: 0,
        };
        Ok(Plan {
            variant: v,
            params: bytemuck::bytes_of(&params).to_vec(),
            workgroups: plan::grid_2d("tviterbi", self.tiles, 1, 1, 1, caps)?,
        })
    }
}

/// CPU twin: `wring_quant::trellis::Encoder::encode_fixed` on each tile.
pub fn cpu(bits: u32, state: u32, x: &[i32]) -> Vec<u32> {
    let mut e = trellis::Encoder::new(bits, state).expect("a valid trellis configuration");
    x.chunks_exact(trellis::SEQ)
        .flat_map(|t| e.encode_fixed(t))
        .collect()
}
