//! Compressing an image with wring's codec from a program: read a PNG, encode it at a target rate on the
//! GPU, decode it again and report the size and the PSNR. Run with
//! `cargo run --release --example codec -- [IMAGE.png] [BPP]`.

use wring::codec::{self, Decoded, Options, Rate};
use wring::runtime::{Context, ContextOptions};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let path = args
        .next()
        .unwrap_or_else(|| "tests/fixtures/astronaut_96x128.png".into());
    let bpp: f64 = args.next().map_or(Ok(1.0), |s| s.parse())?;

    let ctx = Context::new(ContextOptions::default())?;
    let image = codec::io::read_image(path.as_ref())?;
    let options = Options {
        rate: Rate::Target(bpp),
        ..Options::default()
    };
    // The stream is self-describing: size, channels, wavelet and levels travel in its CRC-checked header.
    let stream = codec::encode_image(&ctx, &image, &options)?;
    let Decoded::Image(back) = codec::decode(&ctx, &stream)? else {
        return Err("an image stream decoded as something else".into());
    };

    let mse = image
        .pixels
        .iter()
        .zip(&back.pixels)
        .map(|(&a, &b)| (f64::from(a) - f64::from(b)).powi(2))
        .sum::<f64>()
        / image.pixels.len() as f64;
    let pixels = (image.width * image.height) as f64;
    println!(
        "{path}: {} x {} -> {} bytes ({:.3} bpp), PSNR {:.2} dB",
        image.width,
        image.height,
        stream.len(),
        stream.len() as f64 * 8.0 / pixels,
        10.0 * (255.0f64 * 255.0 / mse).log10()
    );
    Ok(())
}
