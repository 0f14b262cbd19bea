//! Acknowledged writes survive `kill -9`: writers stream creates and updates over HTTPS, the server
//! is SIGKILLed in the middle, and after a restart on the same data dir every write that got a
//! success response is there, with the value it was acknowledged with, and watches resume.

mod common;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use common::Svcnet;
use futures::StreamExt;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, ListParams, PostParams, WatchEvent, WatchParams};

async fn client(s: &Svcnet) -> kube::Client {
    let kubeconfig = kube::config::Kubeconfig::read_from(&s.kubeconfig).expect("kubeconfig");
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default()).await.expect("config");
    kube::Client::try_from(config).expect("client")
}

fn config_map(name: &str, value: u64) -> ConfigMap {
    serde_json::from_value(serde_json::json!({
        "metadata": {"name": name},
        "data": {"value": value.to_string()}
    }))
    .unwrap()
}

/// What the server acknowledged: name → (value, resourceVersion).
type Acked = Arc<Mutex<BTreeMap<String, (u64, u64)>>>;

/// Creates objects and then updates them, recording each acknowledged write, until a request
/// fails (the server is gone).
async fn writer(api: Api<ConfigMap>, id: usize, acked: Acked) {
    for i in 0u64.. {
        let name = format!("w{id}-{i}");
        let Ok(created) = api.create(&PostParams::default(), &config_map(&name, 0)).await else { return };
        let rv: u64 = created.metadata.resource_version.as_deref().unwrap().parse().unwrap();
        acked.lock().unwrap().insert(name.clone(), (0, rv));
        // Every other object also gets an update, so that modifications are covered too.
        if i % 2 == 0 {
            let mut obj = created;
            obj.data = Some([("value".to_string(), "1".to_string())].into());
            let Ok(updated) = api.replace(&name, &PostParams::default(), &obj).await else { return };
            let rv: u64 = updated.metadata.resource_version.as_deref().unwrap().parse().unwrap();
            acked.lock().unwrap().insert(name, (1, rv));
        }
    }
}

#[test]
fn acknowledged_writes_survive_sigkill_mid_stream() {
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let s = Svcnet::start();
    s.namespace("durable");
    let acked: Acked = Arc::default();

    let writers = rt.block_on(async {
        let api: Api<ConfigMap> = Api::namespaced(client(&s).await, "durable");
        (0..8).map(|id| tokio::spawn(writer(api.clone(), id, acked.clone()))).collect::<Vec<_>>()
    });
    // Kill once a good number of writes are acknowledged, while the writers are still going.
    common::wait_for("300 acknowledged writes", std::time::Duration::from_secs(120), || (acked.lock().unwrap().len() >= 300).then_some(()));
    let dir = s.kill9();
    rt.block_on(async {
        for w in writers {
            w.await.unwrap();
        }
    });
    let acked = acked.lock().unwrap().clone();
    let max_rv = acked.values().map(|(_, rv)| *rv).max().unwrap();

    let s = Svcnet::start_in(dir);
    rt.block_on(async {
        let api: Api<ConfigMap> = Api::namespaced(client(&s).await, "durable");
        let list = api.list(&ListParams::default()).await.unwrap();
        let stored: BTreeMap<String, (u64, u64)> = list
            .items
            .iter()
            .map(|cm| {
                let value = cm.data.as_ref().unwrap()["value"].parse().unwrap();
                let rv = cm.metadata.resource_version.as_deref().unwrap().parse().unwrap();
                (cm.metadata.name.clone().unwrap(), (value, rv))
            })
            .collect();
        for (name, (value, rv)) in &acked {
            let Some((got_value, got_rv)) = stored.get(name) else { panic!("acknowledged create of {name} (rv {rv}) was lost") };
            // A write in flight at the kill may have committed without its ack arriving, so the
            // stored version can be newer than the acknowledged one, never older.
            assert!(got_rv >= rv, "{name}: acknowledged rv {rv}, stored {got_rv}");
            assert!(got_value >= value, "{name}: acknowledged value {value}, stored {got_value}");
        }
        let list_rv: u64 = list.metadata.resource_version.as_deref().unwrap().parse().unwrap();
        assert!(list_rv >= max_rv, "the store's revision went back: {list_rv} < {max_rv}");

        // Watches resume from a version acknowledged before the crash.
        let mut events = api.watch(&WatchParams::default(), &max_rv.to_string()).await.unwrap().boxed();
        let after = api.create(&PostParams::default(), &config_map("after-restart", 7)).await.unwrap();
        let after_rv: u64 = after.metadata.resource_version.as_deref().unwrap().parse().unwrap();
        assert!(after_rv > list_rv, "new writes continue the revision sequence");
        loop {
            let ev = tokio::time::timeout(std::time::Duration::from_secs(30), events.next()).await.expect("watch event").unwrap().unwrap();
            match ev {
                WatchEvent::Added(cm) | WatchEvent::Modified(cm) if cm.metadata.name.as_deref() == Some("after-restart") => break,
                WatchEvent::Added(cm) | WatchEvent::Modified(cm) => {
                    let rv: u64 = cm.metadata.resource_version.as_deref().unwrap().parse().unwrap();
                    assert!(rv > max_rv, "replayed an event at or before the resume point");
                }
                WatchEvent::Error(e) => panic!("watch from {max_rv} after restart failed: {e:?}"),
                _ => {}
            }
        }
    });
    eprintln!("{} acknowledged writes (max rv {max_rv}) all survived SIGKILL", acked.len());
}
