//! Azure Blob Storage through the official `azure_storage_blob` crate.
//!
//! One container (`BLOB_CONTAINER`, created on first use when missing); a tenant's blobs are
//! named `<tenant id>/<name>`. Authentication: the account key when `BLOB_ACCOUNT_KEY` is set
//! (Shared Key, signed by [`SharedKeyPolicy`] since the crate only ships Entra ID; this is also
//! how Azurite is reached), managed identity otherwise.
//!
//! Uploads up to [`BLOCK_SIZE`] go in one request; larger ones are staged block by block as the
//! body streams in and committed at the end, so at most one block is in memory. Downloads are
//! the SDK's response stream, handed to the caller as it arrives.

use std::sync::Arc;

use azure_core::credentials::TokenCredential;
use azure_core::http::policies::{Policy, PolicyResult};
use azure_core::http::{ClientOptions, Context, Request, RequestContent, StatusCode};
use azure_storage_blob::models::{
    BlobContainerClientListBlobsOptions, BlockBlobClientCommitBlockListOptions,
    BlockBlobClientUploadOptions, BlockLookupList,
};
use azure_storage_blob::{BlobContainerClient, BlobContainerClientOptions};
use bytes::{Bytes, BytesMut};
use futures::StreamExt;
use serde::{Deserialize, Serialize};
use tokio::sync::OnceCell;

use flowgrid_domain::TenantId;
use flowgrid_domain::blob::{
    BLOCK_SIZE, BlobInfo, BlobName, BlobStore, ByteStream, Download, check_content_type,
};
use flowgrid_domain::config::BlobSettings;
use flowgrid_domain::health::HealthCheck;
use flowgrid_domain::store::{Page, decode_token, encode_token};
use flowgrid_domain::{Error, Result};

/// Blobs in an Azure Storage container; cheap to clone.
#[derive(Clone)]
pub struct AzureBlobs {
    inner: Arc<Inner>,
}

struct Inner {
    container: BlobContainerClient,
    created: OnceCell<()>,
}

/// Where a listing page ended: the service's marker.
#[derive(Serialize, Deserialize)]
struct Cursor {
    m: String,
}

impl AzureBlobs {
    /// The client for the container in `settings`. Does not contact the service.
    pub fn open(settings: &BlobSettings) -> Result<AzureBlobs> {
        let mut client_options = ClientOptions::default();
        let credential: Option<Arc<dyn TokenCredential>> = match &settings.account_key {
            Some(key) => {
                let account = account_name(&settings.endpoint).ok_or_else(|| {
                    flowgrid_domain::config::setting_error(
                        "BLOB_ENDPOINT",
                        "cannot tell the account name (expected https://<account>.blob.core.windows.net or http://127.0.0.1:<port>/<account>)",
                    )
                })?;
                let key = {
                    use base64::Engine;
                    base64::engine::general_purpose::STANDARD
                        .decode(key.expose())
                        .map_err(|_| {
                            flowgrid_domain::config::setting_error("BLOB_ACCOUNT_KEY", "not base64")
                        })?
                };
                client_options
                    .per_try_policies
                    .push(Arc::new(SharedKeyPolicy { account, key }));
                None
            }
            None => Some(managed_identity(settings.client_id.clone())?),
        };
        let mut url = settings.endpoint.clone();
        url.path_segments_mut()
            .map_err(|_| flowgrid_domain::config::setting_error("BLOB_ENDPOINT", "not a base URL"))?
            .pop_if_empty()
            .push(&settings.container);
        let options = BlobContainerClientOptions {
            client_options,
            ..Default::default()
        };
        let container = BlobContainerClient::new(url, credential, Some(options))
            .map_err(|e| flowgrid_domain::config::setting_error("BLOB_ENDPOINT", &e.to_string()))?;
        Ok(AzureBlobs {
            inner: Arc::new(Inner {
                container,
                created: OnceCell::new(),
            }),
        })
    }

    /// The container, created first when missing (once per process; a failure is retried on
    /// the next call).
    async fn container(&self) -> Result<&BlobContainerClient> {
        let c = &self.inner.container;
        self.inner
            .created
            .get_or_try_init(|| async {
                match c.create(None).await {
                    Ok(_) => Ok(()),
                    Err(e) if e.http_status() == Some(StatusCode::Conflict) => Ok(()),
                    Err(e) => Err(map_error(e, "creating the container")),
                }
            })
            .await?;
        Ok(c)
    }
}

/// `<tenant>/<name>`.
fn full_name(tenant: &TenantId, name: &BlobName) -> String {
    format!("{}/{}", tenant.as_str(), name.as_str())
}

/// The account of a service URL: the first label of the host (`<account>.blob.core...`), or
/// the first path segment for emulators addressed by IP or `localhost` (path-style).
fn account_name(endpoint: &url::Url) -> Option<String> {
    let host = endpoint.host_str()?;
    let path_style = crate::cosmos::is_local(endpoint) || host.parse::<std::net::IpAddr>().is_ok();
    if path_style {
        endpoint
            .path_segments()?
            .find(|s| !s.is_empty())
            .map(str::to_owned)
    } else {
        host.split('.').next().map(str::to_owned)
    }
}

fn managed_identity(client_id: Option<String>) -> Result<Arc<dyn TokenCredential>> {
    use azure_identity::{
        ManagedIdentityCredential, ManagedIdentityCredentialOptions, UserAssignedId,
    };
    let options = ManagedIdentityCredentialOptions {
        user_assigned_id: client_id.map(UserAssignedId::ClientId),
        ..Default::default()
    };
    let credential = ManagedIdentityCredential::new(Some(options))
        .map_err(|e| flowgrid_domain::config::setting_error("AZURE_CLIENT_ID", &e.to_string()))?;
    Ok(credential)
}

/// Translates an SDK error into the domain error of the same meaning.
fn map_error(e: azure_core::Error, doing: &str) -> Error {
    match e.http_status() {
        Some(StatusCode::NotFound) => Error::NotFound,
        Some(StatusCode::PreconditionFailed) => Error::PreconditionFailed,
        Some(s) if u16::from(s) == 400 => Error::Internal(format!("blob {doing}: {e}")),
        // No answer, 5xx, throttled, a wrong key or a forbidden identity: unavailable.
        _ => Error::Unavailable(format!("blob {doing}: {e}")),
    }
}

#[async_trait::async_trait]
impl BlobStore for AzureBlobs {
    async fn upload(
        &self,
        tenant: &TenantId,
        name: &BlobName,
        content_type: &str,
        mut body: ByteStream,
    ) -> Result<BlobInfo> {
        check_content_type(content_type)?;
        let container = self.container().await?;
        let blob = container
            .blob_client(&full_name(tenant, name))
            .block_blob_client();
        let mut buffer = BytesMut::new();
        let mut size = 0u64;
        let mut blocks: Vec<Vec<u8>> = Vec::new();
        let stage = |data: Bytes, index: usize| {
            let blob = &blob;
            async move {
                // Block ids must all have the same length within a blob.
                let id = format!("block-{index:08}").into_bytes();
                let len = data.len() as u64;
                blob.stage_block(&id, len, RequestContent::from(data.to_vec()), None)
                    .await
                    .map_err(|e| map_error(e, "staging a block"))?;
                Ok::<_, Error>(id)
            }
        };
        while let Some(chunk) = body.next().await {
            let chunk = chunk?;
            size += chunk.len() as u64;
            buffer.extend_from_slice(&chunk);
            while buffer.len() > BLOCK_SIZE {
                let block = buffer.split_to(BLOCK_SIZE).freeze();
                blocks.push(stage(block, blocks.len()).await?);
            }
        }
        if blocks.is_empty() {
            // Small: one request.
            let options = BlockBlobClientUploadOptions {
                blob_content_type: Some(content_type.to_owned()),
                ..Default::default()
            };
            blob.upload(RequestContent::from(buffer.to_vec()), Some(options))
                .await
                .map_err(|e| map_error(e, "uploading"))?;
        } else {
            if !buffer.is_empty() {
                let last = buffer.split().freeze();
                blocks.push(stage(last, blocks.len()).await?);
            }
            let list = BlockLookupList {
                latest: Some(blocks),
                ..Default::default()
            };
            let options = BlockBlobClientCommitBlockListOptions {
                blob_content_type: Some(content_type.to_owned()),
                ..Default::default()
            };
            let content: RequestContent<BlockLookupList, azure_core::http::XmlFormat> =
                list.try_into().map_err(|e: azure_core::Error| {
                    Error::Internal(format!("encoding the block list: {e}"))
                })?;
            blob.commit_block_list(content, Some(options))
                .await
                .map_err(|e| map_error(e, "committing blocks"))?;
        }
        Ok(BlobInfo {
            name: name.as_str().to_owned(),
            size,
            content_type: content_type.to_owned(),
        })
    }

    async fn download(&self, tenant: &TenantId, name: &BlobName) -> Result<Download> {
        let container = self.container().await?;
        let result = container
            .blob_client(&full_name(tenant, name))
            .download(None)
            .await
            .map_err(|e| map_error(e, "downloading"))?;
        let properties = result.properties;
        // A download larger than one partition starts with a range response: its
        // `Content-Length` is the first range's, `Content-Range` ends with the whole size.
        let total = result
            .headers
            .get_optional_str(&azure_core::http::headers::HeaderName::from_static(
                "content-range",
            ))
            .and_then(|r| r.rsplit('/').next())
            .and_then(|n| n.parse::<u64>().ok());
        let body = result
            .body
            .map(|chunk| chunk.map_err(|e| map_error(e, "reading a download")));
        Ok(Download {
            info: BlobInfo {
                name: name.as_str().to_owned(),
                size: total.or(properties.content_length).unwrap_or_default(),
                content_type: properties
                    .content_type
                    .unwrap_or_else(|| "application/octet-stream".to_owned()),
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
        let marker = continuation_token
            .map(decode_token::<Cursor>)
            .transpose()?
            .map(|c| c.m);
        let container = self.container().await?;
        let tenant_prefix = format!("{}/", tenant.as_str());
        let options = BlobContainerClientListBlobsOptions {
            prefix: Some(format!("{tenant_prefix}{prefix}")),
            maxresults: Some(i32::try_from(limit).unwrap_or(i32::MAX)),
            marker,
            ..Default::default()
        };
        let mut pages = container
            .list_blobs(Some(options))
            .map_err(|e| map_error(e, "listing"))?
            .into_pages();
        let Some(page) = pages.next().await else {
            return Ok(Page {
                items: Vec::new(),
                continuation_token: None,
            });
        };
        let page = page
            .map_err(|e| map_error(e, "listing"))?
            .into_model()
            .map_err(|e| map_error(e, "reading a listing"))?;
        let items = page
            .blob_items
            .into_iter()
            .filter_map(|item| {
                let name = item.name?.strip_prefix(&tenant_prefix)?.to_owned();
                let properties = item.properties.unwrap_or_default();
                Some(BlobInfo {
                    name,
                    size: properties.content_length.unwrap_or_default(),
                    content_type: properties
                        .content_type
                        .unwrap_or_else(|| "application/octet-stream".to_owned()),
                })
            })
            .collect();
        Ok(Page {
            items,
            continuation_token: page
                .next_marker
                .filter(|m| !m.is_empty())
                .map(|m| encode_token(&Cursor { m })),
        })
    }

    async fn delete(&self, tenant: &TenantId, name: &BlobName) -> Result<()> {
        let container = self.container().await?;
        container
            .blob_client(&full_name(tenant, name))
            .delete(None)
            .await
            .map(|_| ())
            .map_err(|e| map_error(e, "deleting"))
    }
}

#[async_trait::async_trait]
impl HealthCheck for AzureBlobs {
    fn name(&self) -> &'static str {
        "blobs"
    }

    /// The container exists (created when missing) and answers a one-item listing.
    async fn check(&self) -> Result<()> {
        let container = self.container().await?;
        let options = BlobContainerClientListBlobsOptions {
            maxresults: Some(1),
            ..Default::default()
        };
        let mut pages = container
            .list_blobs(Some(options))
            .map_err(|e| map_error(e, "health probe"))?
            .into_pages();
        match pages.next().await {
            Some(Err(e)) => Err(map_error(e, "health probe")),
            _ => Ok(()),
        }
    }
}

/// Signs each request with the account key (Shared Key authorization, the scheme of
/// <https://learn.microsoft.com/rest/api/storageservices/authorize-with-shared-key>).
struct SharedKeyPolicy {
    account: String,
    key: Vec<u8>,
}

impl std::fmt::Debug for SharedKeyPolicy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SharedKeyPolicy")
            .field("account", &self.account)
            .finish_non_exhaustive()
    }
}

impl SharedKeyPolicy {
    fn string_to_sign(&self, request: &Request) -> String {
        let headers = request.headers();
        let get = |name: &'static str| {
            headers
                .get_optional_str(&azure_core::http::headers::HeaderName::from_static(name))
                .unwrap_or("")
                .to_owned()
        };
        let length = match get("content-length").as_str() {
            "" => request
                .body()
                .len()
                .filter(|n| *n > 0)
                .map(|n| n.to_string())
                .unwrap_or_default(),
            "0" => String::new(),
            other => other.to_owned(),
        };
        let mut ms_headers: Vec<(String, String)> = headers
            .iter()
            .filter(|(k, _)| k.as_str().starts_with("x-ms-"))
            .map(|(k, v)| (k.as_str().to_lowercase(), v.as_str().trim().to_owned()))
            .collect();
        ms_headers.sort();
        let mut resource = format!("/{}{}", self.account, request.url().path());
        let mut query: Vec<(String, String)> = request
            .url()
            .query_pairs()
            .map(|(k, v)| (k.to_lowercase(), v.into_owned()))
            .collect();
        query.sort();
        for (k, v) in query {
            resource.push_str(&format!("\n{k}:{v}"));
        }
        let mut out = [
            request.method().to_string(),
            get("content-encoding"),
            get("content-language"),
            length,
            get("content-md5"),
            get("content-type"),
            String::new(), // Date: x-ms-date is used instead
            get("if-modified-since"),
            get("if-match"),
            get("if-none-match"),
            get("if-unmodified-since"),
            get("range"),
        ]
        .join("\n");
        out.push('\n');
        for (k, v) in ms_headers {
            out.push_str(&format!("{k}:{v}\n"));
        }
        out.push_str(&resource);
        out
    }
}

#[async_trait::async_trait]
impl Policy for SharedKeyPolicy {
    async fn send(
        &self,
        ctx: &Context,
        request: &mut Request,
        next: &[Arc<dyn Policy>],
    ) -> PolicyResult {
        use base64::Engine;
        let now = azure_core::time::to_rfc7231(&azure_core::time::OffsetDateTime::now_utc());
        request.insert_header("x-ms-date", now);
        let to_sign = self.string_to_sign(request);
        let key = aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, &self.key);
        let signature = base64::engine::general_purpose::STANDARD
            .encode(aws_lc_rs::hmac::sign(&key, to_sign.as_bytes()).as_ref());
        request.insert_header(
            "authorization",
            format!("SharedKey {}:{signature}", self.account),
        );
        match next.split_first() {
            Some((first, rest)) => first.send(ctx, request, rest).await,
            None => Err(azure_core::Error::with_message(
                azure_core::error::ErrorKind::Other,
                "the pipeline has no transport",
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn account_names_come_from_the_host_or_the_emulator_path() {
        let name = |u: &str| account_name(&url::Url::parse(u).expect("url"));
        assert_eq!(
            name("https://acct.blob.core.windows.net").as_deref(),
            Some("acct")
        );
        assert_eq!(
            name("http://127.0.0.1:10000/devstoreaccount1").as_deref(),
            Some("devstoreaccount1")
        );
        assert_eq!(name("http://127.0.0.1:10000/"), None);
    }
}
