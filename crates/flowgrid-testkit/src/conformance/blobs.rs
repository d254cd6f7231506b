//! Conformance checks for [`BlobStore`] backends.

use flowgrid_domain::Error;
use flowgrid_domain::TenantId;
use flowgrid_domain::blob::{BLOCK_SIZE, BlobName, BlobStore, ByteStream, bytes_stream, collect};

fn tenant(name: &str) -> TenantId {
    TenantId::parse(name).expect("tenant id")
}

fn name(n: &str) -> BlobName {
    BlobName::parse(n).expect("blob name")
}

/// `len` bytes of a repeating pattern, as a stream of `chunk`-sized pieces.
fn chunked(len: usize, chunk: usize) -> (Vec<u8>, ByteStream) {
    let data: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
    let pieces: Vec<flowgrid_domain::Result<bytes::Bytes>> = data
        .chunks(chunk)
        .map(|c| Ok(bytes::Bytes::copy_from_slice(c)))
        .collect();
    (data, Box::pin(futures::stream::iter(pieces)))
}

async fn download(store: &dyn BlobStore, t: &TenantId, n: &str) -> (String, u64, Vec<u8>) {
    let d = store.download(t, &name(n)).await.expect("download");
    let body = collect(d.body).await.expect("body");
    (d.info.content_type, d.info.size, body)
}

pub async fn upload_then_download_returns_the_bytes_and_content_type(store: &dyn BlobStore) {
    let t = tenant("b1");
    let info = store
        .upload(
            &t,
            &name("notes/hello.txt"),
            "text/plain",
            bytes_stream(&b"hello"[..]),
        )
        .await
        .expect("upload");
    assert_eq!(info.size, 5);
    assert_eq!(info.name, "notes/hello.txt");
    let (content_type, size, body) = download(store, &t, "notes/hello.txt").await;
    assert_eq!(content_type, "text/plain");
    assert_eq!(size, 5);
    assert_eq!(body, b"hello");
}

pub async fn an_empty_blob_round_trips(store: &dyn BlobStore) {
    let t = tenant("b0");
    store
        .upload(
            &t,
            &name("empty"),
            "application/octet-stream",
            bytes_stream(Vec::new()),
        )
        .await
        .expect("upload");
    let (_, size, body) = download(store, &t, "empty").await;
    assert_eq!(size, 0);
    assert!(body.is_empty());
}

pub async fn a_body_larger_than_a_block_streams_and_comes_back_whole(store: &dyn BlobStore) {
    let t = tenant("b2");
    let len = 2 * BLOCK_SIZE + 12_345;
    let (data, body) = chunked(len, 64 * 1024 + 7);
    let info = store
        .upload(&t, &name("big.bin"), "application/octet-stream", body)
        .await
        .expect("upload");
    assert_eq!(info.size, len as u64);
    let (content_type, size, back) = download(store, &t, "big.bin").await;
    assert_eq!(content_type, "application/octet-stream");
    assert_eq!(size, len as u64);
    assert!(back == data, "the content differs");
}

pub async fn upload_replaces_an_existing_blob(store: &dyn BlobStore) {
    let t = tenant("b3");
    store
        .upload(
            &t,
            &name("doc"),
            "text/plain",
            bytes_stream(&b"first version"[..]),
        )
        .await
        .expect("upload");
    store
        .upload(
            &t,
            &name("doc"),
            "application/json",
            bytes_stream(&b"{}"[..]),
        )
        .await
        .expect("replace");
    let (content_type, _, body) = download(store, &t, "doc").await;
    assert_eq!(content_type, "application/json");
    assert_eq!(body, b"{}");
}

pub async fn a_missing_blob_is_not_found(store: &dyn BlobStore) {
    let t = tenant("b4");
    assert!(matches!(
        store.download(&t, &name("nope")).await.err(),
        Some(Error::NotFound)
    ));
    assert!(matches!(
        store.delete(&t, &name("nope")).await,
        Err(Error::NotFound)
    ));
}

pub async fn delete_removes_the_blob(store: &dyn BlobStore) {
    let t = tenant("b5");
    store
        .upload(&t, &name("gone"), "text/plain", bytes_stream(&b"x"[..]))
        .await
        .expect("upload");
    store.delete(&t, &name("gone")).await.expect("delete");
    assert!(matches!(
        store.download(&t, &name("gone")).await.err(),
        Some(Error::NotFound)
    ));
    assert!(matches!(
        store.delete(&t, &name("gone")).await,
        Err(Error::NotFound)
    ));
    let page = store.list(&t, "", 10, None).await.expect("list");
    assert!(page.items.is_empty());
}

pub async fn another_tenants_blob_is_not_found_anywhere(store: &dyn BlobStore) {
    let (a, b) = (tenant("ba"), tenant("bb"));
    store
        .upload(
            &a,
            &name("secret.txt"),
            "text/plain",
            bytes_stream(&b"mine"[..]),
        )
        .await
        .expect("upload");
    assert!(matches!(
        store.download(&b, &name("secret.txt")).await.err(),
        Some(Error::NotFound)
    ));
    assert!(matches!(
        store.delete(&b, &name("secret.txt")).await,
        Err(Error::NotFound)
    ));
    assert!(
        store
            .list(&b, "", 10, None)
            .await
            .expect("list")
            .items
            .is_empty()
    );
    // A tenant whose id is a prefix of another's sees nothing of the other's either.
    let (short, long) = (tenant("bc"), tenant("bc-x"));
    store
        .upload(&long, &name("x"), "text/plain", bytes_stream(&b"x"[..]))
        .await
        .expect("upload");
    assert!(
        store
            .list(&short, "", 10, None)
            .await
            .expect("list")
            .items
            .is_empty()
    );
    let (_, _, body) = download(store, &a, "secret.txt").await;
    assert_eq!(body, b"mine", "the owner still has it");
}

pub async fn list_is_in_name_order_filters_by_prefix_and_pages(store: &dyn BlobStore) {
    let t = tenant("b6");
    for n in ["r/c", "r/a", "other", "r/b", "r/e", "r/d"] {
        store
            .upload(
                &t,
                &name(n),
                "text/plain",
                bytes_stream(n.as_bytes().to_vec()),
            )
            .await
            .expect("upload");
    }
    let mut seen = Vec::new();
    let mut token = None;
    let mut pages = 0;
    loop {
        let page = store
            .list(&t, "r/", 2, token.as_deref())
            .await
            .expect("list");
        pages += 1;
        assert!(page.items.len() <= 2);
        for item in &page.items {
            assert_eq!(item.size, item.name.len() as u64);
            assert_eq!(item.content_type, "text/plain");
        }
        seen.extend(page.items.into_iter().map(|i| i.name));
        match page.continuation_token {
            Some(next) => token = Some(next),
            None => break,
        }
        assert!(pages < 10, "paging does not end");
    }
    assert_eq!(seen, ["r/a", "r/b", "r/c", "r/d", "r/e"]);
    let all = store.list(&t, "", 50, None).await.expect("list");
    assert_eq!(all.items.len(), 6);
    assert!(all.continuation_token.is_none());
}

pub async fn names_that_look_like_paths_do_not_collide(store: &dyn BlobStore) {
    let t = tenant("b7");
    store
        .upload(&t, &name("a"), "text/plain", bytes_stream(&b"file"[..]))
        .await
        .expect("upload a");
    store
        .upload(&t, &name("a/b"), "text/plain", bytes_stream(&b"nested"[..]))
        .await
        .expect("upload a/b");
    assert_eq!(download(store, &t, "a").await.2, b"file");
    assert_eq!(download(store, &t, "a/b").await.2, b"nested");
}

pub async fn a_forged_continuation_token_is_a_bad_request(store: &dyn BlobStore) {
    let t = tenant("b8");
    assert!(matches!(
        store.list(&t, "", 5, Some("not a token!")).await,
        Err(Error::BadRequest(_))
    ));
}

pub async fn a_bad_content_type_is_a_bad_request(store: &dyn BlobStore) {
    let t = tenant("b9");
    assert!(matches!(
        store
            .upload(&t, &name("x"), "not a media type", bytes_stream(&b"x"[..]))
            .await,
        Err(Error::BadRequest(_))
    ));
}
