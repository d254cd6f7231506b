//! The folder backend (local development): one file per blob under `<folder>/<tenant id>/`.
//!
//! A blob's file is named by the SHA-256 of its name (so any name is a valid file name and
//! `a` and `a/b` can coexist) and holds one JSON line of metadata (name, content type, size)
//! followed by the content. An upload streams into a temporary file in the same folder and
//! renames it into place, so a reader sees the old blob or the new one, never half of one.

use std::path::{Path, PathBuf};

use bytes::Bytes;
use futures::StreamExt;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};

use flowgrid_domain::TenantId;
use flowgrid_domain::blob::{
    BlobInfo, BlobName, BlobStore, ByteStream, Download, check_content_type,
};
use flowgrid_domain::health::HealthCheck;
use flowgrid_domain::store::{Page, decode_token, encode_token};
use flowgrid_domain::{Error, Result};

/// Chunk size of downloads.
const READ_CHUNK: usize = 64 * 1024;

/// Blobs in a folder; cheap to clone.
#[derive(Clone)]
pub struct FsBlobs {
    root: PathBuf,
}

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Meta {
    name: String,
    content_type: String,
    size: u64,
}

/// Where a listing page ended.
#[derive(Serialize, Deserialize)]
struct Cursor {
    a: String,
}

fn io_error(doing: &str, e: std::io::Error) -> Error {
    Error::Unavailable(format!("blob folder: {doing}: {e}"))
}

impl FsBlobs {
    /// Uses (creating when needed) the folder `root`.
    pub fn open(root: &Path) -> Result<FsBlobs> {
        std::fs::create_dir_all(root)
            .map_err(|e| io_error(&format!("creating {}", root.display()), e))?;
        Ok(FsBlobs {
            root: root.to_owned(),
        })
    }

    fn tenant_dir(&self, tenant: &TenantId) -> PathBuf {
        self.root.join(tenant.as_str())
    }

    fn path(&self, tenant: &TenantId, name: &BlobName) -> PathBuf {
        let digest =
            aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, name.as_str().as_bytes());
        let file: String = digest.as_ref().iter().map(|b| format!("{b:02x}")).collect();
        self.tenant_dir(tenant).join(file)
    }
}

/// Reads the metadata line of a blob file; the reader is left at the content.
async fn read_meta(file: tokio::fs::File) -> Result<(Meta, BufReader<tokio::fs::File>)> {
    let mut reader = BufReader::new(file);
    let mut line = String::new();
    reader
        .read_line(&mut line)
        .await
        .map_err(|e| io_error("reading a blob", e))?;
    let meta: Meta = serde_json::from_str(&line)
        .map_err(|e| Error::Internal(format!("blob folder: a blob file is damaged: {e}")))?;
    Ok((meta, reader))
}

#[async_trait::async_trait]
impl BlobStore for FsBlobs {
    async fn upload(
        &self,
        tenant: &TenantId,
        name: &BlobName,
        content_type: &str,
        mut body: ByteStream,
    ) -> Result<BlobInfo> {
        check_content_type(content_type)?;
        let dir = self.tenant_dir(tenant);
        tokio::fs::create_dir_all(&dir)
            .await
            .map_err(|e| io_error("creating the tenant folder", e))?;
        let target = self.path(tenant, name);
        let temp = dir.join(format!(".upload-{}", uuid::Uuid::new_v4().simple()));
        let result = async {
            let mut file = tokio::fs::File::create(&temp)
                .await
                .map_err(|e| io_error("creating a blob", e))?;
            // The size is known only at the end: write a placeholder header of fixed width,
            // stream the content, then rewrite the header in place.
            let header = |size: u64| -> Result<Vec<u8>> {
                let meta = Meta {
                    name: name.as_str().to_owned(),
                    content_type: content_type.to_owned(),
                    size,
                };
                let mut line = serde_json::to_vec(&meta)
                    .map_err(|e| Error::Internal(format!("encoding blob metadata: {e}")))?;
                // Pad with spaces so the header's width does not depend on the size.
                let width = line.len() + 20 - size.to_string().len();
                line.resize(width, b' ');
                line.push(b'\n');
                Ok(line)
            };
            file.write_all(&header(0)?)
                .await
                .map_err(|e| io_error("writing a blob", e))?;
            let mut size = 0u64;
            while let Some(chunk) = body.next().await {
                let chunk = chunk?;
                size += chunk.len() as u64;
                file.write_all(&chunk)
                    .await
                    .map_err(|e| io_error("writing a blob", e))?;
            }
            use tokio::io::AsyncSeekExt;
            file.seek(std::io::SeekFrom::Start(0))
                .await
                .map_err(|e| io_error("writing a blob", e))?;
            file.write_all(&header(size)?)
                .await
                .map_err(|e| io_error("writing a blob", e))?;
            file.sync_all()
                .await
                .map_err(|e| io_error("writing a blob", e))?;
            tokio::fs::rename(&temp, &target)
                .await
                .map_err(|e| io_error("storing a blob", e))?;
            Ok(BlobInfo {
                name: name.as_str().to_owned(),
                size,
                content_type: content_type.to_owned(),
            })
        }
        .await;
        if result.is_err() {
            let _ = tokio::fs::remove_file(&temp).await;
        }
        result
    }

    async fn download(&self, tenant: &TenantId, name: &BlobName) -> Result<Download> {
        let file = match tokio::fs::File::open(self.path(tenant, name)).await {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Err(Error::NotFound),
            Err(e) => return Err(io_error("opening a blob", e)),
        };
        let (meta, reader) = read_meta(file).await?;
        let body = futures::stream::unfold(Some(reader), |reader| async move {
            let mut reader = reader?;
            let mut buf = vec![0u8; READ_CHUNK];
            match reader.read(&mut buf).await {
                Ok(0) => None,
                Ok(n) => {
                    buf.truncate(n);
                    Some((Ok(Bytes::from(buf)), Some(reader)))
                }
                Err(e) => Some((Err(io_error("reading a blob", e)), None)),
            }
        });
        Ok(Download {
            info: BlobInfo {
                name: meta.name,
                size: meta.size,
                content_type: meta.content_type,
            },
            body: Box::pin(body),
        })
    }

    async fn list(
        &self,
        tenant: &TenantId,
        prefix: &str,
        limit: u32,
        continuation_token: Option<&str>,
    ) -> Result<Page<BlobInfo>> {
        let after = continuation_token
            .map(decode_token::<Cursor>)
            .transpose()?
            .map(|c| c.a);
        let mut entries = match tokio::fs::read_dir(self.tenant_dir(tenant)).await {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Ok(Page {
                    items: Vec::new(),
                    continuation_token: None,
                });
            }
            Err(e) => return Err(io_error("listing blobs", e)),
        };
        let mut all = Vec::new();
        while let Some(entry) = entries
            .next_entry()
            .await
            .map_err(|e| io_error("listing blobs", e))?
        {
            if entry.file_name().to_string_lossy().starts_with('.') {
                continue; // an upload in progress
            }
            let file = match tokio::fs::File::open(entry.path()).await {
                Ok(f) => f,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue, // just deleted
                Err(e) => return Err(io_error("listing blobs", e)),
            };
            let (meta, _) = read_meta(file).await?;
            let wanted = meta.name.starts_with(prefix)
                && after
                    .as_ref()
                    .is_none_or(|a| meta.name.as_str() > a.as_str());
            if wanted {
                all.push(BlobInfo {
                    name: meta.name,
                    size: meta.size,
                    content_type: meta.content_type,
                });
            }
        }
        all.sort_by(|a, b| a.name.cmp(&b.name));
        let limit = limit as usize;
        let more = all.len() > limit;
        all.truncate(limit);
        let continuation_token = match (more, all.last()) {
            (true, Some(last)) => Some(encode_token(&Cursor {
                a: last.name.clone(),
            })),
            _ => None,
        };
        Ok(Page {
            items: all,
            continuation_token,
        })
    }

    async fn delete(&self, tenant: &TenantId, name: &BlobName) -> Result<()> {
        match tokio::fs::remove_file(self.path(tenant, name)).await {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(Error::NotFound),
            Err(e) => Err(io_error("deleting a blob", e)),
        }
    }
}

#[async_trait::async_trait]
impl HealthCheck for FsBlobs {
    fn name(&self) -> &'static str {
        "blobs"
    }

    async fn check(&self) -> Result<()> {
        let meta = tokio::fs::metadata(&self.root)
            .await
            .map_err(|e| io_error("reading the blob folder", e))?;
        if meta.is_dir() {
            Ok(())
        } else {
            Err(Error::Unavailable(format!(
                "blob folder: {} is not a folder",
                self.root.display()
            )))
        }
    }
}
