//! placeholder
pub struct NetpolConfig;
pub async fn run() {}
