//! What every controller's driver shares: a reflector-backed watch that keeps a cache current and
//! yields its events, retrying failed watches with backoff instead of ending.

use std::fmt;

use futures::{Stream, StreamExt};
use kube::Resource;
use kube::api::Api;
use kube::runtime::reflector;
use kube::runtime::{WatchStreamExt, watcher};

/// A watch that keeps `writer` up to date and yields its events, retrying with backoff.
pub(crate) fn watch<K>(api: Api<K>, writer: reflector::store::Writer<K>, config: watcher::Config) -> impl Stream<Item = watcher::Event<K>>
where
    K: Resource<DynamicType = ()> + Clone + serde::de::DeserializeOwned + fmt::Debug + Send + Sync + 'static,
{
    let kind = K::kind(&());
    reflector::reflector(writer, watcher(api, config).default_backoff()).filter_map(move |event| {
        let kind = kind.clone();
        async move {
            match event {
                Ok(event) => Some(event),
                Err(error) => {
                    tracing::warn!(%kind, %error, "watch failed, retrying");
                    None
                }
            }
        }
    })
}
