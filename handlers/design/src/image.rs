//! Uploaded images: what they are (by their magic bytes, never by what the client says), their
//! content address, the text they carry, and reading them out of a `multipart/form-data` body.

use flowgrid_domain::{Error, FieldError};

/// An image type Flowgrid accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// PNG.
    Png,
    /// JPEG.
    Jpeg,
    /// GIF.
    Gif,
    /// WebP.
    Webp,
}

impl Kind {
    /// The media type.
    pub fn media_type(self) -> &'static str {
        match self {
            Kind::Png => "image/png",
            Kind::Jpeg => "image/jpeg",
            Kind::Gif => "image/gif",
            Kind::Webp => "image/webp",
        }
    }

    /// The file extension of its blob.
    pub fn extension(self) -> &'static str {
        match self {
            Kind::Png => "png",
            Kind::Jpeg => "jpg",
            Kind::Gif => "gif",
            Kind::Webp => "webp",
        }
    }
}

/// The image type of `bytes` by its magic bytes; `None` for anything else.
pub fn sniff(bytes: &[u8]) -> Option<Kind> {
    if bytes.starts_with(b"\x89PNG\r\n\x1a\n") {
        Some(Kind::Png)
    } else if bytes.starts_with(&[0xFF, 0xD8, 0xFF]) {
        Some(Kind::Jpeg)
    } else if bytes.starts_with(b"GIF87a") || bytes.starts_with(b"GIF89a") {
        Some(Kind::Gif)
    } else if bytes.len() >= 12 && &bytes[..4] == b"RIFF" && &bytes[8..12] == b"WEBP" {
        Some(Kind::Webp)
    } else {
        None
    }
}

/// The image's SHA-256, lower-case hex: its content address.
pub fn sha256_hex(bytes: &[u8]) -> String {
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, bytes);
    digest.as_ref().iter().map(|b| format!("{b:02x}")).collect()
}

/// The text a PNG carries in its `tEXt` and `iTXt` chunks (`Description`, `Comment`, `Title`
/// and the like; drawing tools write a diagram's labels there): what the offline provider reads
/// of an image.
pub fn png_text(bytes: &[u8]) -> Option<String> {
    let mut at = 8;
    let mut texts = Vec::new();
    while at + 12 <= bytes.len() {
        let len = u32::from_be_bytes(bytes[at..at + 4].try_into().ok()?) as usize;
        let kind = &bytes[at + 4..at + 8];
        let start = at + 8;
        let end = start.checked_add(len)?;
        if end + 4 > bytes.len() {
            break;
        }
        let data = &bytes[start..end];
        match kind {
            b"tEXt" => {
                if let Some(nul) = data.iter().position(|b| *b == 0) {
                    texts.push(String::from_utf8_lossy(&data[nul + 1..]).into_owned());
                }
            }
            b"iTXt" => {
                // keyword \0 compression-flag compression-method language \0 translated \0 text
                let mut parts = data.splitn(2, |b| *b == 0);
                let _keyword = parts.next();
                if let Some(rest) = parts.next()
                    && rest.len() > 2
                    && rest[0] == 0
                {
                    let rest = &rest[2..];
                    let mut fields = rest.splitn(3, |b| *b == 0);
                    let (_lang, _translated, text) = (fields.next(), fields.next(), fields.next());
                    if let Some(t) = text {
                        texts.push(String::from_utf8_lossy(t).into_owned());
                    }
                }
            }
            b"IEND" => break,
            _ => {}
        }
        at = end + 4;
    }
    let joined = texts.join("\n");
    (!joined.trim().is_empty()).then_some(joined)
}

/// One part of a `multipart/form-data` body.
#[derive(Debug, Clone, PartialEq)]
pub struct Part {
    /// Its `name`.
    pub name: String,
    /// Its bytes.
    pub body: Vec<u8>,
}

fn malformed(why: &str) -> Error {
    Error::BadRequest(format!("the multipart body cannot be read: {why}"))
}

/// The parts of a `multipart/form-data` body with `boundary` (RFC 7578).
pub fn multipart(body: &[u8], boundary: &str) -> Result<Vec<Part>, Error> {
    let delimiter = format!("--{boundary}");
    let d = delimiter.as_bytes();
    let find = |hay: &[u8], from: usize| -> Option<usize> {
        hay.get(from..)?
            .windows(d.len())
            .position(|w| w == d)
            .map(|p| p + from)
    };
    let mut at = find(body, 0).ok_or_else(|| malformed("no boundary"))?;
    let mut parts = Vec::new();
    loop {
        let after = at + d.len();
        if body.get(after..after + 2) == Some(b"--") {
            return Ok(parts);
        }
        let start = after + 2; // CRLF
        let next = find(body, start).ok_or_else(|| malformed("a part is not closed"))?;
        let part = body
            .get(start..next.saturating_sub(2))
            .ok_or_else(|| malformed("a part is cut"))?;
        let split = part
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .ok_or_else(|| malformed("a part has no headers"))?;
        let headers = String::from_utf8_lossy(&part[..split]);
        let name = headers
            .lines()
            .find(|l| l.to_ascii_lowercase().starts_with("content-disposition"))
            .and_then(|l| {
                l.split(';')
                    .map(str::trim)
                    .find_map(|p| p.strip_prefix("name="))
            })
            .map(|n| n.trim_matches('"').to_owned())
            .ok_or_else(|| malformed("a part has no name"))?;
        parts.push(Part {
            name,
            body: part[split + 4..].to_vec(),
        });
        at = next;
        if parts.len() > 20 {
            return Err(malformed("more than 20 parts"));
        }
    }
}

/// The `boundary` of a `multipart/form-data` content type.
pub fn boundary(content_type: &str) -> Option<String> {
    let (kind, params) = content_type.split_once(';')?;
    if !kind.trim().eq_ignore_ascii_case("multipart/form-data") {
        return None;
    }
    params
        .split(';')
        .map(str::trim)
        .find_map(|p| p.strip_prefix("boundary="))
        .map(|b| b.trim_matches('"').to_owned())
        .filter(|b| !b.is_empty() && b.len() <= 70)
}

/// The 422 of bytes that are no image Flowgrid accepts.
pub fn not_an_image(field: &str) -> Error {
    Error::Validation(vec![FieldError::new(
        field,
        "is not a PNG, JPEG, GIF or WebP image (checked by its content, not its name or type)",
    )])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn images_are_known_by_their_magic_bytes() {
        assert_eq!(sniff(b"\x89PNG\r\n\x1a\nrest"), Some(Kind::Png));
        assert_eq!(sniff(&[0xFF, 0xD8, 0xFF, 0xE0]), Some(Kind::Jpeg));
        assert_eq!(sniff(b"GIF89a..."), Some(Kind::Gif));
        assert_eq!(sniff(b"RIFF\0\0\0\0WEBPVP8 "), Some(Kind::Webp));
        assert_eq!(sniff(b"%PDF-1.7"), None);
        assert_eq!(
            sniff(b"<svg xmlns="),
            None,
            "SVG is script, not an image here"
        );
    }

    #[test]
    fn multipart_parts_are_read_with_their_names() {
        let body = b"--xyz\r\nContent-Disposition: form-data; name=\"image\"; filename=\"a.png\"\r\nContent-Type: image/png\r\n\r\n\x89PNG\r\n\x1a\nDATA\r\n--xyz\r\nContent-Disposition: form-data; name=\"hint\"\r\n\r\nhello\r\n--xyz--\r\n";
        let parts = multipart(body, "xyz").unwrap();
        assert_eq!(parts.len(), 2);
        assert_eq!(parts[0].name, "image");
        assert_eq!(parts[0].body, b"\x89PNG\r\n\x1a\nDATA");
        assert_eq!(parts[1].body, b"hello");
        assert!(multipart(b"garbage", "xyz").is_err());
        assert_eq!(
            boundary("multipart/form-data; boundary=\"xyz\""),
            Some("xyz".into())
        );
        assert_eq!(boundary("application/json"), None);
    }
}
