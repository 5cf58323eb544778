//! podip's one cloud backend for the daemon: EC2 through the AWS SDK ([`AwsEc2`], an
//! implementation of [`cloud::Ec2`]) and the node's identity from the instance metadata
//! service ([`metadata`]). The same code reaches AWS and `podip sim-vpc`: the endpoints come
//! from the SDK's own settings (`AWS_ENDPOINT_URL_EC2`, `AWS_EC2_METADATA_SERVICE_ENDPOINT`),
//! credentials from its default chain (environment, IRSA web identity, EKS Pod Identity, the
//! instance profile).
//!
//! The SDK's retries are off: every failure reaches the engine, whose back-off decides when to
//! call again (a retry inside the SDK would hide throttling from it and multiply calls).

mod convert;
mod ec2;
mod error;
pub mod metadata;

pub use ec2::{AwsEc2, CALL_TIMEOUT};
pub use error::call_error;

/// Installs the process's one TLS crypto provider (aws-lc-rs, the one the SDK and the
/// Kubernetes client are both built with). Two providers in one process make rustls refuse to
/// pick; installing it explicitly at start settles it. Calling it again does nothing.
pub fn install_crypto_provider() {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
}

/// The SDK configuration the daemon uses, to be loaded: the default chains (endpoint and
/// credentials from the environment, the profile, the web identity or the instance profile;
/// region from the environment or the instance metadata), no SDK retries, and
/// [`CALL_TIMEOUT`] per call.
pub fn config_loader() -> aws_config::ConfigLoader {
    aws_config::defaults(aws_config::BehaviorVersion::latest())
        .retry_config(aws_config::retry::RetryConfig::disabled())
        .timeout_config(
            aws_config::timeout::TimeoutConfig::builder()
                .operation_timeout(CALL_TIMEOUT)
                .connect_timeout(std::time::Duration::from_secs(3))
                .build(),
        )
}

/// [`config_loader`], loaded.
pub async fn sdk_config() -> aws_config::SdkConfig {
    config_loader().load().await
}

/// [`config_loader`] for a node of `region` (from its metadata, `metadata` the service it came
/// from): a region the environment or the profile names wins; credentials from the SDK's default
/// chain, its instance-profile step asking the same service (with connections of its own: the
/// credentials are fetched on the EC2 client's runtime).
pub async fn node_config(region: &str, metadata: &metadata::Metadata) -> aws_config::SdkConfig {
    let region = aws_config::meta::region::RegionProviderChain::default_provider()
        .or_else(aws_config::Region::new(region.to_string()))
        .region()
        .await;
    let mut creds = aws_config::default_provider::credentials::DefaultCredentialsChain::builder()
        .imds_client(metadata.fresh().client().clone());
    if let Some(r) = region.clone() {
        creds = creds.region(r);
    }
    let creds = creds.build().await;
    config_loader().region(region).credentials_provider(creds).load().await
}
