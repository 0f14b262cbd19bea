//! The workload controllers (ReplicaSet, Deployment, StatefulSet) and the scheduler.

/// Runs the workload controllers until a fatal error.
pub async fn run(client: kube::Client) -> crate::Result<()> {
    let _ = client;
    futures::future::pending::<()>().await;
    Ok(())
}
