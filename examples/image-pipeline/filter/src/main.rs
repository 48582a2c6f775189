//! Inverts a binary PPM (P6) or PGM (P5) image: reads it on stdin, writes
//! the negative on stdout. An input that is neither fails with a message
//! on stderr (the invocation fails; its trigger's event says so).

use std::io::{Read, Write};

/// The header's fields (magic, width, height, maxval) and where the pixels start.
fn header(img: &[u8]) -> Result<([u8; 2], usize, usize, usize, usize), String> {
    let magic = [*img.first().ok_or("empty input")?, *img.get(1).ok_or("no magic number")?];
    if &magic != b"P6" && &magic != b"P5" {
        return Err("not a binary PPM (P6) or PGM (P5) image".into());
    }
    let mut fields = Vec::new();
    let mut i = 2;
    while fields.len() < 3 {
        // Whitespace and comments between the fields.
        while i < img.len() && (img[i].is_ascii_whitespace() || img[i] == b'#') {
            if img[i] == b'#' {
                while i < img.len() && img[i] != b'\n' {
                    i += 1;
                }
            }
            i += 1;
        }
        let start = i;
        while i < img.len() && img[i].is_ascii_digit() {
            i += 1;
        }
        let n: usize = std::str::from_utf8(&img[start..i]).unwrap().parse().map_err(|_| "a bad header")?;
        fields.push(n);
    }
    // One whitespace byte ends the header.
    Ok((magic, fields[0], fields[1], fields[2], i + 1))
}

fn invert(img: &mut [u8]) -> Result<(), String> {
    let (magic, w, h, maxval, start) = header(img)?;
    if maxval == 0 || maxval > 255 {
        return Err(format!("maxval {maxval}: only 8-bit images"));
    }
    let channels = if &magic == b"P6" { 3 } else { 1 };
    let len = w * h * channels;
    let pixels = img.get_mut(start..start + len).ok_or("the image is shorter than its header says")?;
    for p in pixels {
        *p = (maxval as u8).saturating_sub(*p);
    }
    Ok(())
}

fn main() {
    let mut img = Vec::new();
    std::io::stdin().read_to_end(&mut img).unwrap();
    if let Err(e) = invert(&mut img) {
        eprintln!("image-filter: {e}");
        std::process::exit(1);
    }
    std::io::stdout().write_all(&img).unwrap();
}
