//! The S3 artifact store against a real S3-compatible server: each test on its own bucket.

use jobq_common::ErrorKind;
use jobq_common::ports::ArtifactStore;
use jobq_common::s3::S3ArtifactStore;
use jobq_tests::{infra_settings, unique_name};
use tokio::io::AsyncReadExt;

async fn store() -> Option<S3ArtifactStore> {
    let mut settings = infra_settings("s3 adapter");
    settings.s3.bucket = unique_name("jobq-test");
    Some(
        S3ArtifactStore::connect(&settings.s3)
            .await
            .expect("connect to s3"),
    )
}

async fn read_all(store: &S3ArtifactStore, key: &str) -> Vec<u8> {
    let mut artifact = store.get(key).await.unwrap();
    let mut buf = Vec::new();
    artifact.body.read_to_end(&mut buf).await.unwrap();
    assert_eq!(artifact.len, buf.len() as u64);
    buf
}

#[tokio::test]
#[ignore = "needs the real servers: scripts/infra.sh up"]
async fn objects_are_put_got_listed_by_prefix_and_deleted() {
    let Some(store) = store().await else { return };
    store
        .ensure_bucket()
        .await
        .expect("a second ensure is harmless");
    store
        .put_bytes("jobs/1/logs/stdout", b"hello".to_vec())
        .await
        .unwrap();
    store
        .put_bytes("jobs/1/output/a/b/c.txt", b"deep".to_vec())
        .await
        .unwrap();
    store
        .put_bytes("jobs/1/output/é ü.txt", "ünïcode".as_bytes().to_vec())
        .await
        .unwrap();
    store
        .put_bytes("jobs/2/output/x", b"other".to_vec())
        .await
        .unwrap();
    assert_eq!(read_all(&store, "jobs/1/output/a/b/c.txt").await, b"deep");
    assert_eq!(
        read_all(&store, "jobs/1/output/é ü.txt").await,
        "ünïcode".as_bytes()
    );
    assert_eq!(
        store.list("jobs/1/").await.unwrap(),
        [
            "jobs/1/logs/stdout",
            "jobs/1/output/a/b/c.txt",
            "jobs/1/output/é ü.txt"
        ]
    );
    store.delete("jobs/1/logs/stdout").await.unwrap();
    let err = store.get("jobs/1/logs/stdout").await.unwrap_err();
    assert_eq!(err.kind, ErrorKind::NotFound, "{err}");
    store.delete_bucket().await.unwrap();
}

#[tokio::test]
#[ignore = "needs the real servers: scripts/infra.sh up"]
async fn a_50_mb_file_round_trips_intact() {
    let Some(store) = store().await else { return };
    let dir = std::env::temp_dir().join(unique_name("jobq-s3"));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("big.bin");
    // Not a repeating pattern: a part put in the wrong place would be caught.
    let mut state = 0x9E37_79B9_7F4A_7C15u64;
    let data: Vec<u8> = (0..50 * 1024 * 1024)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state as u8
        })
        .collect();
    std::fs::write(&path, &data).unwrap();
    let size = store
        .put_file("jobs/big/output/big.bin", &path)
        .await
        .unwrap();
    assert_eq!(size, data.len() as u64);
    let back = read_all(&store, "jobs/big/output/big.bin").await;
    assert!(back == data, "50 MB object changed on the way");
    std::fs::remove_dir_all(dir).unwrap();
    store.delete_bucket().await.unwrap();
}

#[tokio::test]
#[ignore = "needs the real servers: scripts/infra.sh up"]
async fn a_missing_file_is_an_invalid_upload() {
    let Some(store) = store().await else { return };
    let err = store
        .put_file("k", std::path::Path::new("/nonexistent/file"))
        .await
        .unwrap_err();
    assert_eq!(err.kind, ErrorKind::Invalid, "{err}");
    store.delete_bucket().await.unwrap();
}
