//! Blob storage: named byte contents with a content type, per tenant.
//!
//! Every name a caller gives is relative to the tenant: backends store it under
//! `<tenant id>/<name>`, so no call can reach another tenant's blobs, whatever the name. Bodies
//! travel as streams of chunks: an upload is never gathered into one buffer (the Azure backend
//! stages blocks of [`BLOCK_SIZE`], the folder backend writes chunks as they come), and a
//! download is a stream read from the backend as the caller consumes it.
//!
//! Backends (in `flowgrid-storage`): a local folder and Azure Blob Storage.

use std::pin::Pin;

use bytes::Bytes;
use futures::Stream;

use crate::TenantId;
use crate::store::Page;
use crate::{Error, Result};

/// Bodies at most this large go to Azure in one request; larger ones are staged in blocks of
/// this size, so memory use stays bounded whatever the body's size.
pub const BLOCK_SIZE: usize = 4 * 1024 * 1024;

/// A body: chunks of bytes, each possibly failing.
pub type ByteStream = Pin<Box<dyn Stream<Item = Result<Bytes>> + Send>>;

/// A body held in memory, as a [`ByteStream`] (for small bodies and tests).
pub fn bytes_stream(bytes: impl Into<Bytes>) -> ByteStream {
    Box::pin(futures::stream::iter([Ok(bytes.into())]))
}

/// Reads a whole body into memory (for small bodies and tests).
pub async fn collect(mut body: ByteStream) -> Result<Vec<u8>> {
    use futures::StreamExt;
    let mut out = Vec::new();
    while let Some(chunk) = body.next().await {
        out.extend_from_slice(&chunk?);
    }
    Ok(out)
}

/// A blob's name within its tenant: 1–512 bytes, `/`-separated segments, none empty, `.` or
/// `..`, no backslash and no control characters.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct BlobName(String);

impl BlobName {
    /// Parses a name; a bad one is a 400.
    pub fn parse(name: &str) -> Result<BlobName> {
        let bad = |why: &str| Error::BadRequest(format!("blob name {name:?}: {why}"));
        if name.is_empty() || name.len() > 512 {
            return Err(bad("must be 1-512 bytes"));
        }
        if name.chars().any(|c| c.is_control() || c == '\\') {
            return Err(bad("must not hold control characters or backslashes"));
        }
        if name
            .split('/')
            .any(|s| s.is_empty() || s == "." || s == "..")
        {
            return Err(bad("segments between slashes must not be empty, . or .."));
        }
        Ok(BlobName(name.to_owned()))
    }

    /// The name as given.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for BlobName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// What a listing or an upload reports about a blob.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct BlobInfo {
    /// The name within the tenant.
    pub name: String,
    /// Size in bytes.
    pub size: u64,
    /// The content type given at upload.
    pub content_type: String,
}

/// A download: what the blob is, and its body as a stream.
pub struct Download {
    /// Name, size and content type.
    pub info: BlobInfo,
    /// The content, read as it is consumed.
    pub body: ByteStream,
}

/// Blobs per tenant.
#[async_trait::async_trait]
pub trait BlobStore: Send + Sync {
    /// Stores `body` as `name` with `content_type`, replacing any blob of that name.
    async fn upload(
        &self,
        tenant: &TenantId,
        name: &BlobName,
        content_type: &str,
        body: ByteStream,
    ) -> Result<BlobInfo>;

    /// The blob `name`; [`Error::NotFound`] when there is none.
    async fn download(&self, tenant: &TenantId, name: &BlobName) -> Result<Download>;

    /// The tenant's blobs whose names start with `prefix`, in name order, `limit` at most per
    /// page.
    async fn list(
        &self,
        tenant: &TenantId,
        prefix: &str,
        limit: u32,
        continuation_token: Option<&str>,
    ) -> Result<Page<BlobInfo>>;

    /// Deletes the blob `name`; [`Error::NotFound`] when there is none.
    async fn delete(&self, tenant: &TenantId, name: &BlobName) -> Result<()>;
}

/// Checks a content type is a plausible media type (`type/subtype`, printable ASCII).
pub fn check_content_type(content_type: &str) -> Result<()> {
    let ok = content_type.len() <= 255
        && content_type.contains('/')
        && content_type.bytes().all(|b| (0x20..0x7f).contains(&b));
    if ok {
        Ok(())
    } else {
        Err(Error::BadRequest(format!(
            "{content_type:?} is not a media type"
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_that_could_escape_the_tenant_are_refused() {
        for bad in [
            "", "../x", "a/../b", "/abs", "a//b", "a/", ".", "a\\b", "a\nb",
        ] {
            assert!(BlobName::parse(bad).is_err(), "{bad:?}");
        }
        for good in [
            "a",
            "reports/2026/11.pdf",
            "with space.txt",
            "ü.txt",
            "a..b",
        ] {
            assert!(BlobName::parse(good).is_ok(), "{good:?}");
        }
    }
}
