//! What the backend's tests share: an SDK client of a given endpoint with test credentials.

use aws::AwsEc2;
use aws_sdk_ec2::config::{Credentials, Region};
use std::time::Duration;

/// A client of the EC2 endpoint at `url`, in us-east-1, with test credentials, `timeout` per call.
pub fn client(url: &str, vpc_id: Option<&str>, timeout: Duration) -> AwsEc2 {
    aws::install_crypto_provider();
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let conf = rt.block_on(
        aws::config_loader()
            .endpoint_url(url)
            .region(Region::new("us-east-1"))
            .credentials_provider(Credentials::new("testing", "testing", None, None, "tests"))
            .timeout_config(aws_config::timeout::TimeoutConfig::builder().operation_timeout(timeout).build())
            .load(),
    );
    AwsEc2::with_config(rt, &conf, vpc_id.map(str::to_string), None)
}
