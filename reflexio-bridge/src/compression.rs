//! gzip on the wire: the exposition compressed when the scraper asks for it (`Accept-Encoding`),
//! and request bodies sent with `Content-Encoding: gzip` decompressed as they arrive, with the
//! body limit applied to what they decompress to.

use actix_web::http::header::{self, HeaderMap};
use flate2::write::{GzEncoder, MultiGzDecoder};
use std::io::Write;

/// Whether the client takes a gzip answer: `gzip` (or `x-gzip`), or `*`, with a q-value above
/// zero (RFC 9110, section 12.5.3). An explicit `gzip;q=0` refuses it, whatever `*` says.
pub(crate) fn accepts_gzip(headers: &HeaderMap) -> bool {
    let mut gzip = None;
    let mut any = None;
    for value in headers.get_all(header::ACCEPT_ENCODING) {
        let Ok(value) = value.to_str() else {
            continue;
        };
        for item in value.split(',') {
            let mut parts = item.split(';');
            let coding = parts.next().unwrap_or("").trim().to_ascii_lowercase();
            let q = parts
                .filter_map(|p| p.trim().strip_prefix("q=").or(p.trim().strip_prefix("Q=")))
                .find_map(|q| q.trim().parse::<f32>().ok())
                .unwrap_or(1.0);
            match coding.as_str() {
                "gzip" | "x-gzip" => gzip = Some(q > 0.0),
                "*" => any = Some(q > 0.0),
                _ => {}
            }
        }
    }
    gzip.or(any).unwrap_or(false)
}

/// `text` compressed with gzip at the fastest level: an exposition compresses about tenfold even
/// so, and a scrape should cost as little CPU as it can.
pub(crate) fn gzip(text: &[u8]) -> std::io::Result<Vec<u8>> {
    let mut encoder = GzEncoder::new(
        Vec::with_capacity(text.len() / 4),
        flate2::Compression::fast(),
    );
    encoder.write_all(text)?;
    encoder.finish()
}

/// How a request body is encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ContentEncoding {
    Identity,
    Gzip,
}

impl ContentEncoding {
    /// From the request's `Content-Encoding` headers: absent, empty or `identity` is the body as
    /// it is, `gzip` (or `x-gzip`) compressed once. Anything else, including gzip applied twice,
    /// is refused with the encoding named.
    pub(crate) fn of(headers: &HeaderMap) -> Result<Self, String> {
        let mut codings = Vec::new();
        for value in headers.get_all(header::CONTENT_ENCODING) {
            let text = value
                .to_str()
                .map_err(|_| String::from_utf8_lossy(value.as_bytes()).into_owned())?;
            codings.extend(
                text.split(',')
                    .map(|c| c.trim().to_ascii_lowercase())
                    .filter(|c| !c.is_empty() && c != "identity"),
            );
        }
        match codings.as_slice() {
            [] => Ok(Self::Identity),
            [one] if one == "gzip" || one == "x-gzip" => Ok(Self::Gzip),
            _ => Err(codings.join(", ")),
        }
    }
}

/// Why a body could not be decoded.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum DecodeError {
    /// It decompresses to more than the limit.
    TooLarge,
    /// It is not valid gzip.
    Invalid(String),
}

/// Collects a body's bytes at most up to a limit: a write past it fails, so decompression stops
/// there.
#[derive(Debug)]
struct Bounded {
    bytes: Vec<u8>,
    limit: usize,
    exceeded: bool,
}

impl Write for Bounded {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if self.bytes.len() + buf.len() > self.limit {
            self.exceeded = true;
            return Err(std::io::Error::other("over the body limit"));
        }
        self.bytes.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Decodes a body chunk by chunk as it arrives, holding at most `limit` decoded bytes: a body
/// that decompresses past it is refused as soon as it does, however small it is on the wire.
#[derive(Debug)]
pub(crate) struct BodyDecoder {
    gzip: MultiGzDecoder<Bounded>,
}

impl BodyDecoder {
    pub(crate) fn gzip(limit: usize) -> Self {
        Self {
            gzip: MultiGzDecoder::new(Bounded {
                bytes: Vec::new(),
                limit,
                exceeded: false,
            }),
        }
    }

    fn failed(&self, e: std::io::Error) -> DecodeError {
        if self.gzip.get_ref().exceeded {
            DecodeError::TooLarge
        } else {
            DecodeError::Invalid(format!("the body is not valid gzip: {e}"))
        }
    }

    /// Decodes the next chunk.
    pub(crate) fn push(&mut self, chunk: &[u8]) -> Result<(), DecodeError> {
        self.gzip.write_all(chunk).map_err(|e| self.failed(e))
    }

    /// The whole decoded body, once every chunk was pushed.
    pub(crate) fn finish(mut self) -> Result<Vec<u8>, DecodeError> {
        if let Err(e) = self.gzip.try_finish() {
            return Err(self.failed(e));
        }
        let decoded = self
            .gzip
            .finish()
            .map_err(|e| DecodeError::Invalid(format!("the body is not valid gzip: {e}")))?;
        Ok(decoded.bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use actix_web::http::header::HeaderValue;

    fn headers(name: header::HeaderName, values: &[&str]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for v in values {
            map.append(name.clone(), HeaderValue::from_str(v).expect("value"));
        }
        map
    }

    #[test]
    fn accept_encoding_is_read_with_its_q_values() {
        let accepts = |values: &[&str]| accepts_gzip(&headers(header::ACCEPT_ENCODING, values));
        assert!(accepts(&["gzip"]));
        assert!(accepts(&["gzip, deflate, br"]));
        assert!(accepts(&["br;q=1.0, GZIP;q=0.5"]));
        assert!(accepts(&["x-gzip"]));
        assert!(accepts(&["*"]));
        assert!(accepts(&["identity", "gzip"]), "over several headers");
        assert!(!accepts(&[]));
        assert!(!accepts(&["identity"]));
        assert!(!accepts(&["br, deflate"]));
        assert!(!accepts(&["gzip;q=0"]));
        assert!(!accepts(&["gzip;q=0.000"]));
        assert!(
            !accepts(&["*, gzip;q=0"]),
            "an explicit refusal wins over *"
        );
        assert!(!accepts(&["*;q=0"]));
    }

    #[test]
    fn content_encodings_other_than_gzip_are_named() {
        let of = |values: &[&str]| ContentEncoding::of(&headers(header::CONTENT_ENCODING, values));
        assert_eq!(of(&[]), Ok(ContentEncoding::Identity));
        assert_eq!(of(&["identity"]), Ok(ContentEncoding::Identity));
        assert_eq!(of(&["GZip"]), Ok(ContentEncoding::Gzip));
        assert_eq!(of(&["identity, gzip"]), Ok(ContentEncoding::Gzip));
        assert_eq!(of(&["br"]), Err("br".into()));
        assert_eq!(of(&["gzip, gzip"]), Err("gzip, gzip".into()));
        assert_eq!(of(&["gzip", "deflate"]), Err("gzip, deflate".into()));
    }

    #[test]
    fn bodies_decode_in_any_chunks_within_the_limit() {
        let text = b"[{\"type\":\"digest\"}]".repeat(100);
        let packed = gzip(&text).expect("compressed");
        for size in [1, 7, packed.len()] {
            let mut decoder = BodyDecoder::gzip(text.len());
            for chunk in packed.chunks(size) {
                decoder.push(chunk).expect("decoded");
            }
            assert_eq!(decoder.finish().expect("whole"), text);
        }
        // Two gzip members, one after the other, are one body.
        let twice = [packed.clone(), packed.clone()].concat();
        let mut decoder = BodyDecoder::gzip(2 * text.len());
        decoder.push(&twice).expect("decoded");
        assert_eq!(decoder.finish().expect("whole"), text.repeat(2));
    }

    #[test]
    fn a_bomb_stops_at_the_limit_and_garbage_is_invalid() {
        let bomb = gzip(&vec![b' '; 8 << 20]).expect("compressed");
        assert!(bomb.len() < 64 << 10);
        let mut decoder = BodyDecoder::gzip(1 << 20);
        let refused = bomb
            .chunks(4096)
            .enumerate()
            .find_map(|(i, chunk)| decoder.push(chunk).err().map(|e| (i, e)));
        let (at, e) = refused.expect("refused");
        assert_eq!(e, DecodeError::TooLarge);
        assert!(at * 4096 < bomb.len() / 4, "refused early, at chunk {at}");

        let mut decoder = BodyDecoder::gzip(1 << 20);
        let e = decoder
            .push(b"not gzip at all")
            .err()
            .or_else(|| decoder.finish().err());
        assert!(matches!(e, Some(DecodeError::Invalid(_))), "{e:?}");
        let truncated = &gzip(b"[]").expect("compressed")[..10];
        let mut decoder = BodyDecoder::gzip(1 << 20);
        decoder.push(truncated).expect("so far so good");
        assert!(matches!(decoder.finish(), Err(DecodeError::Invalid(_))));
        assert!(matches!(
            BodyDecoder::gzip(10).finish(),
            Err(DecodeError::Invalid(_))
        ));
    }
}
