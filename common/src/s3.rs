//! The artifact store on S3-compatible object storage (aws-sdk-s3): path-style addressing
//! and a custom endpoint (MinIO and friends), streamed uploads and downloads, multipart for
//! large files, and the bucket created at start-up if missing.

use std::path::Path;

use async_trait::async_trait;
use aws_credential_types::Credentials;
use aws_sdk_s3::Client;
use aws_sdk_s3::config::{
    BehaviorVersion, Region, RequestChecksumCalculation, ResponseChecksumValidation,
};
use aws_sdk_s3::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_s3::primitives::{ByteStream, Length};
use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart};
use secrecy::ExposeSecret;

use crate::error::{ErrorKind, PortError, PortResult};
use crate::ports::{Artifact, ArtifactStore};
use crate::settings::S3Settings;

/// [`ArtifactStore`] on one S3 bucket.
#[derive(Debug, Clone)]
pub struct S3ArtifactStore {
    client: Client,
    bucket: String,
    multipart_threshold: u64,
    part_size: u64,
}

fn s3_error<E, R>(what: &str, e: SdkError<E, R>) -> PortError
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    R: std::fmt::Debug + Send + Sync + 'static,
    SdkError<E, R>: std::error::Error + Send + Sync + 'static,
{
    let kind = match &e {
        SdkError::ServiceError(se) => match se.err().code() {
            Some("NoSuchKey" | "NoSuchBucket" | "NotFound") => ErrorKind::NotFound,
            Some("AccessDenied" | "InvalidAccessKeyId" | "SignatureDoesNotMatch") => {
                ErrorKind::Unauthorized
            }
            _ => ErrorKind::Unavailable,
        },
        _ => ErrorKind::Unavailable,
    };
    let detail = match &e {
        SdkError::ServiceError(se) => se
            .err()
            .message()
            .or(se.err().code())
            .unwrap_or("service error")
            .to_string(),
        other => format!("{other}"),
    };
    PortError::new(kind, format!("{what}: {detail}"))
}

impl S3ArtifactStore {
    /// Builds the client and makes sure the bucket exists.
    pub async fn connect(settings: &S3Settings) -> PortResult<Self> {
        let store = Self::new(settings);
        store.ensure_bucket().await?;
        Ok(store)
    }

    /// Builds the client without touching the server.
    pub fn new(settings: &S3Settings) -> Self {
        let credentials = Credentials::new(
            settings.access_key.expose_secret(),
            settings.secret_key.expose_secret(),
            None,
            None,
            "jobq-settings",
        );
        let config = aws_sdk_s3::Config::builder()
            .behavior_version(BehaviorVersion::latest())
            .endpoint_url(&settings.endpoint)
            .region(Region::new(settings.region.clone()))
            .credentials_provider(credentials)
            .force_path_style(true)
            // S3-compatible servers differ in checksum support; ask for them only when the
            // operation requires it (also much faster for streamed uploads).
            .request_checksum_calculation(RequestChecksumCalculation::WhenRequired)
            .response_checksum_validation(ResponseChecksumValidation::WhenRequired)
            .build();
        Self {
            client: Client::from_conf(config),
            bucket: settings.bucket.clone(),
            multipart_threshold: settings.multipart_threshold_bytes,
            part_size: settings.part_size_bytes,
        }
    }

    pub fn bucket(&self) -> &str {
        &self.bucket
    }

    /// Creates the bucket unless it exists.
    pub async fn ensure_bucket(&self) -> PortResult<()> {
        match self.client.head_bucket().bucket(&self.bucket).send().await {
            Ok(_) => return Ok(()),
            Err(SdkError::ServiceError(e)) if e.raw().status().as_u16() == 404 => {}
            Err(e) => return Err(s3_error("cannot reach bucket", e)),
        }
        match self
            .client
            .create_bucket()
            .bucket(&self.bucket)
            .send()
            .await
        {
            Ok(_) => Ok(()),
            Err(SdkError::ServiceError(e))
                if matches!(
                    e.err().code(),
                    Some("BucketAlreadyOwnedByYou" | "BucketAlreadyExists")
                ) =>
            {
                Ok(())
            }
            Err(e) => Err(s3_error("cannot create bucket", e)),
        }
    }

    /// Deletes every object and then the bucket (tests clean up with it).
    pub async fn delete_bucket(&self) -> PortResult<()> {
        for key in self.list("").await? {
            self.delete(&key).await?;
        }
        self.client
            .delete_bucket()
            .bucket(&self.bucket)
            .send()
            .await
            .map_err(|e| s3_error("delete bucket", e))?;
        Ok(())
    }

    async fn put_multipart(&self, key: &str, path: &Path, size: u64) -> PortResult<()> {
        let created = self
            .client
            .create_multipart_upload()
            .bucket(&self.bucket)
            .key(key)
            .send()
            .await
            .map_err(|e| s3_error("start multipart upload", e))?;
        let upload_id = created
            .upload_id()
            .ok_or_else(|| PortError::internal("multipart upload without an id"))?
            .to_string();
        match self.upload_parts(key, path, size, &upload_id).await {
            Ok(parts) => {
                self.client
                    .complete_multipart_upload()
                    .bucket(&self.bucket)
                    .key(key)
                    .upload_id(&upload_id)
                    .multipart_upload(
                        CompletedMultipartUpload::builder()
                            .set_parts(Some(parts))
                            .build(),
                    )
                    .send()
                    .await
                    .map_err(|e| s3_error("complete multipart upload", e))?;
                Ok(())
            }
            Err(e) => {
                // Leave no orphaned parts behind; the original error is what matters.
                let _ = self
                    .client
                    .abort_multipart_upload()
                    .bucket(&self.bucket)
                    .key(key)
                    .upload_id(&upload_id)
                    .send()
                    .await;
                Err(e)
            }
        }
    }

    async fn upload_parts(
        &self,
        key: &str,
        path: &Path,
        size: u64,
        upload_id: &str,
    ) -> PortResult<Vec<CompletedPart>> {
        let mut parts = Vec::new();
        let mut offset = 0u64;
        let mut number = 1i32;
        while offset < size {
            let len = self.part_size.min(size - offset);
            let body = ByteStream::read_from()
                .path(path)
                .offset(offset)
                .length(Length::Exact(len))
                .build()
                .await
                .map_err(|e| PortError::with_source(ErrorKind::Internal, "read file part", e))?;
            let uploaded = self
                .client
                .upload_part()
                .bucket(&self.bucket)
                .key(key)
                .upload_id(upload_id)
                .part_number(number)
                .content_length(len as i64)
                .body(body)
                .send()
                .await
                .map_err(|e| s3_error("upload part", e))?;
            parts.push(
                CompletedPart::builder()
                    .part_number(number)
                    .set_e_tag(uploaded.e_tag().map(str::to_string))
                    .build(),
            );
            offset += len;
            number += 1;
        }
        Ok(parts)
    }
}

#[async_trait]
impl ArtifactStore for S3ArtifactStore {
    async fn put_file(&self, key: &str, path: &Path) -> PortResult<u64> {
        let size = tokio::fs::metadata(path)
            .await
            .map_err(|e| {
                PortError::with_source(
                    ErrorKind::Invalid,
                    format!("cannot read {}", path.display()),
                    e,
                )
            })?
            .len();
        if size > self.multipart_threshold {
            self.put_multipart(key, path, size).await?;
            return Ok(size);
        }
        let body = ByteStream::from_path(path).await.map_err(|e| {
            PortError::with_source(
                ErrorKind::Invalid,
                format!("cannot read {}", path.display()),
                e,
            )
        })?;
        self.client
            .put_object()
            .bucket(&self.bucket)
            .key(key)
            .content_length(size as i64)
            .body(body)
            .send()
            .await
            .map_err(|e| s3_error("upload", e))?;
        Ok(size)
    }

    async fn put_bytes(&self, key: &str, bytes: Vec<u8>) -> PortResult<()> {
        self.client
            .put_object()
            .bucket(&self.bucket)
            .key(key)
            .body(ByteStream::from(bytes))
            .send()
            .await
            .map_err(|e| s3_error("upload", e))?;
        Ok(())
    }

    async fn get(&self, key: &str) -> PortResult<Artifact> {
        let out = match self
            .client
            .get_object()
            .bucket(&self.bucket)
            .key(key)
            .send()
            .await
        {
            Ok(out) => out,
            Err(SdkError::ServiceError(e)) if e.raw().status().as_u16() == 404 => {
                return Err(PortError::not_found(format!("no object {key}")));
            }
            Err(e) => return Err(s3_error("download", e)),
        };
        let len = out.content_length().unwrap_or(0).max(0) as u64;
        Ok(Artifact {
            len,
            body: Box::pin(out.body.into_async_read()),
        })
    }

    async fn list(&self, prefix: &str) -> PortResult<Vec<String>> {
        let mut keys = Vec::new();
        let mut pages = self
            .client
            .list_objects_v2()
            .bucket(&self.bucket)
            .prefix(prefix)
            .into_paginator()
            .send();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|e| s3_error("list", e))?;
            keys.extend(
                page.contents()
                    .iter()
                    .filter_map(|o| o.key().map(str::to_string)),
            );
        }
        keys.sort();
        Ok(keys)
    }

    async fn delete(&self, key: &str) -> PortResult<()> {
        self.client
            .delete_object()
            .bucket(&self.bucket)
            .key(key)
            .send()
            .await
            .map_err(|e| s3_error("delete", e))?;
        Ok(())
    }
}
