#!/usr/bin/env python3
"""svcnet driven by the official Python `kubernetes` client.

Usage: test_client.py <kubeconfig>

Exits 0 when every check passes; each check prints one line. Run by tests/python_client.rs.
"""

import json
import os
import sys
import uuid

from kubernetes import client, config, watch
from kubernetes.client.rest import ApiException


def check(name):
    print(f"ok: {name}", flush=True)


def status_body(e):
    """The Status object the server sent with an error."""
    assert e.body, f"error {e.status} has no body"
    body = json.loads(e.body)
    assert body.get("kind") == "Status", f"error body is not a Status: {body}"
    assert body.get("apiVersion") == "v1", f"Status apiVersion: {body}"
    assert body.get("status") == "Failure", f"Status status: {body}"
    assert body.get("code") == e.status, f"Status code {body.get('code')} != HTTP {e.status}: {body}"
    return body


def expect_error(what, fn, code, reason):
    try:
        got = fn()
    except ApiException as e:
        assert e.status == code, f"{what}: expected HTTP {code}, got {e.status}: {e.body}"
        assert e.reason == reason_phrase(code), f"{what}: HTTP reason {e.reason!r}"
        body = status_body(e)
        assert body.get("reason") == reason, f"{what}: expected reason {reason}, got {body}"
        return body
    raise AssertionError(f"{what}: expected HTTP {code} {reason}, got success: {got}")


def reason_phrase(code):
    return {404: "Not Found", 409: "Conflict", 422: "Unprocessable Entity"}[code]


def service(name, port=80, labels=None):
    return client.V1Service(
        api_version="v1",
        kind="Service",
        metadata=client.V1ObjectMeta(name=name, labels=labels or {}),
        spec=client.V1ServiceSpec(
            selector={"app": name},
            ports=[client.V1ServicePort(port=port, target_port=8080, protocol="TCP")],
        ),
    )


def config_map(name, labels=None, data=None):
    return client.V1ConfigMap(
        api_version="v1",
        kind="ConfigMap",
        metadata=client.V1ObjectMeta(name=name, labels=labels or {}),
        data=data or {"k": "v"},
    )


def main():
    kubeconfig = sys.argv[1]
    config.load_kube_config(config_file=kubeconfig)
    v1 = client.CoreV1Api()
    apps = client.AppsV1Api()
    suffix = uuid.uuid4().hex[:8]
    ns = f"py-{suffix}"

    # Namespace.
    created = v1.create_namespace(client.V1Namespace(api_version="v1", kind="Namespace", metadata=client.V1ObjectMeta(name=ns)))
    assert created.metadata.name == ns, created
    assert created.metadata.uid, "namespace has no uid"
    assert created.metadata.resource_version, "namespace has no resourceVersion"
    got = v1.read_namespace(ns)
    assert got.metadata.uid == created.metadata.uid, (got, created)
    assert ns in [n.metadata.name for n in v1.list_namespace().items], "namespace not listed"
    check(f"create/read/list namespace {ns}")

    # Services: create, read, list, selectors.
    tiers = {"svc-a": "web", "svc-b": "web", "svc-c": "db"}
    for name, tier in tiers.items():
        s = v1.create_namespaced_service(ns, service(name, labels={"tier": tier, "suite": suffix}))
        assert s.metadata.name == name and s.metadata.namespace == ns, s
        assert s.spec.type == "ClusterIP", f"default type: {s.spec.type}"
        assert s.spec.ports[0].port == 80 and s.spec.ports[0].target_port == 8080, s.spec.ports
    check("create services")
    s = v1.read_namespaced_service("svc-a", ns)
    assert s.metadata.labels == {"tier": "web", "suite": suffix}, s.metadata.labels
    assert s.kind == "Service" and s.api_version == "v1", (s.kind, s.api_version)
    check("read service")
    lst = v1.list_namespaced_service(ns)
    assert sorted(i.metadata.name for i in lst.items) == sorted(tiers), lst.items
    assert lst.metadata.resource_version, "service list has no resourceVersion"
    check("list services")
    lst = v1.list_namespaced_service(ns, label_selector="tier=web")
    assert sorted(i.metadata.name for i in lst.items) == ["svc-a", "svc-b"], [i.metadata.name for i in lst.items]
    lst = v1.list_namespaced_service(ns, label_selector="tier!=web")
    assert [i.metadata.name for i in lst.items] == ["svc-c"], [i.metadata.name for i in lst.items]
    lst = v1.list_namespaced_service(ns, label_selector="tier in (db,cache)")
    assert [i.metadata.name for i in lst.items] == ["svc-c"], [i.metadata.name for i in lst.items]
    check("list services with label_selector")
    lst = v1.list_namespaced_service(ns, field_selector="metadata.name=svc-b")
    assert [i.metadata.name for i in lst.items] == ["svc-b"], [i.metadata.name for i in lst.items]
    lst = v1.list_service_for_all_namespaces(field_selector=f"metadata.namespace={ns}", label_selector="tier=db")
    assert [(i.metadata.namespace, i.metadata.name) for i in lst.items] == [(ns, "svc-c")], lst.items
    check("list services with field_selector")

    # ConfigMaps: create, list with selectors and paging.
    names = [f"cm-{i:02d}" for i in range(7)]
    for i, name in enumerate(names):
        cm = v1.create_namespaced_config_map(
            ns, config_map(name, labels={"parity": "even" if i % 2 == 0 else "odd"}, data={"i": str(i)})
        )
        assert cm.data == {"i": str(i)}, cm.data
    cm = v1.read_namespaced_config_map("cm-03", ns)
    assert cm.data == {"i": "3"} and cm.metadata.labels == {"parity": "odd"}, cm
    check("create/read configmaps")
    lst = v1.list_namespaced_config_map(ns, label_selector="parity=even")
    assert [i.metadata.name for i in lst.items] == ["cm-00", "cm-02", "cm-04", "cm-06"], [i.metadata.name for i in lst.items]
    lst = v1.list_namespaced_config_map(ns, field_selector="metadata.name!=cm-00", label_selector="parity=even")
    assert [i.metadata.name for i in lst.items] == ["cm-02", "cm-04", "cm-06"], [i.metadata.name for i in lst.items]
    check("list configmaps with label_selector and field_selector")
    seen, pages, cont = [], 0, None
    while True:
        page = v1.list_namespaced_config_map(ns, limit=3, _continue=cont)
        pages += 1
        assert len(page.items) <= 3, f"page of {len(page.items)} items with limit=3"
        seen += [i.metadata.name for i in page.items]
        cont = page.metadata._continue
        if not cont:
            assert page.metadata.remaining_item_count in (None, 0), page.metadata
            break
        assert page.metadata.remaining_item_count in (None, len(names) - len(seen)), page.metadata
        assert pages < 10, "paging does not terminate"
    assert seen == names, f"paged list {seen} != {names}"
    assert pages == 3, f"7 items with limit=3 took {pages} pages"
    check(f"list configmaps with limit/_continue ({pages} pages)")
    lst = v1.list_namespaced_config_map(ns, limit=2, label_selector="parity=odd")
    assert [i.metadata.name for i in lst.items] == ["cm-01", "cm-03"], lst.items
    assert lst.metadata._continue, "limit=2 of 3 odd configmaps has no continue token"
    rest = v1.list_namespaced_config_map(ns, limit=2, label_selector="parity=odd", _continue=lst.metadata._continue)
    assert [i.metadata.name for i in rest.items] == ["cm-05"], rest.items
    assert not rest.metadata._continue, rest.metadata
    check("paging with a label_selector")

    # Update, and replace with a stale resourceVersion.
    cm = v1.read_namespaced_config_map("cm-00", ns)
    stale_rv = cm.metadata.resource_version
    cm.data = {"i": "0", "updated": "yes"}
    updated = v1.replace_namespaced_config_map("cm-00", ns, cm)
    assert updated.data == {"i": "0", "updated": "yes"}, updated.data
    assert updated.metadata.resource_version != stale_rv, "resourceVersion did not change on update"
    assert updated.metadata.uid == cm.metadata.uid, "uid changed on update"
    check("replace configmap")
    cm.metadata.resource_version = stale_rv
    cm.data = {"i": "0", "lost": "update"}
    body = expect_error("replace with stale resourceVersion", lambda: v1.replace_namespaced_config_map("cm-00", ns, cm), 409, "Conflict")
    assert "the object has been modified" in body.get("message", ""), body
    assert v1.read_namespaced_config_map("cm-00", ns).data == {"i": "0", "updated": "yes"}, "stale replace changed the object"
    svc = v1.read_namespaced_service("svc-a", ns)
    svc_rv = svc.metadata.resource_version
    svc.metadata.labels["touched"] = "1"
    v1.replace_namespaced_service("svc-a", ns, svc)
    svc.metadata.resource_version = svc_rv
    expect_error("replace service with stale resourceVersion", lambda: v1.replace_namespaced_service("svc-a", ns, svc), 409, "Conflict")
    check("replace with stale resourceVersion -> 409 Conflict")

    # Missing, duplicate, invalid.
    body = expect_error("read missing service", lambda: v1.read_namespaced_service("nope", ns), 404, "NotFound")
    assert body.get("message") == 'services "nope" not found', body
    assert body.get("details", {}).get("name") == "nope" and body["details"].get("kind") == "services", body
    expect_error("read missing configmap", lambda: v1.read_namespaced_config_map("nope", ns), 404, "NotFound")
    expect_error("read service in missing namespace", lambda: v1.read_namespaced_service("svc-a", f"{ns}-missing"), 404, "NotFound")
    check("read missing -> 404 NotFound Status")
    body = expect_error("create duplicate service", lambda: v1.create_namespaced_service(ns, service("svc-a")), 409, "AlreadyExists")
    assert body.get("message") == 'services "svc-a" already exists', body
    expect_error("create duplicate configmap", lambda: v1.create_namespaced_config_map(ns, config_map("cm-01")), 409, "AlreadyExists")
    check("create duplicate -> 409 AlreadyExists")
    body = expect_error("create service with port 0", lambda: v1.create_namespaced_service(ns, service("bad-port", port=0)), 422, "Invalid")
    causes = body.get("details", {}).get("causes") or []
    assert any(c.get("field") == "spec.ports[0].port" for c in causes), f"causes do not name spec.ports[0].port: {body}"
    assert all(c.get("reason") == "FieldValueInvalid" for c in causes if c.get("field") == "spec.ports[0].port"), body
    assert body["details"].get("name") == "bad-port" and body["details"].get("kind") == "Service", body
    assert body.get("message", "").startswith('Service "bad-port" is invalid'), body
    body = expect_error("create service with a bad name", lambda: v1.create_namespaced_service(ns, service("Bad_Name")), 422, "Invalid")
    causes = body.get("details", {}).get("causes") or []
    assert any(c.get("field") == "metadata.name" for c in causes), f"causes do not name metadata.name: {body}"
    body = expect_error("create configmap with a bad name", lambda: v1.create_namespaced_config_map(ns, config_map("no/slash")), 422, "Invalid")
    expect_error("read bad-port after failed create", lambda: v1.read_namespaced_service("bad-port", ns), 404, "NotFound")
    check("create invalid -> 422 Invalid with details.causes")

    # Watch from the list's resourceVersion sees later changes, in order.
    lst = v1.list_namespaced_config_map(ns)
    rv = lst.metadata.resource_version
    assert rv, "configmap list has no resourceVersion"
    v1.create_namespaced_config_map(ns, config_map("watched", data={"step": "1"}))
    v1.patch_namespaced_config_map("watched", ns, {"data": {"step": "2"}})
    v1.delete_namespaced_config_map("watched", ns)
    w = watch.Watch()
    events = []
    for ev in w.stream(v1.list_namespaced_config_map, ns, resource_version=rv, timeout_seconds=20):
        obj = ev["object"]
        events.append((ev["type"], obj.metadata.name, (obj.data or {}).get("step")))
        if ev["type"] == "DELETED" and obj.metadata.name == "watched":
            w.stop()
    assert events == [("ADDED", "watched", "1"), ("MODIFIED", "watched", "2"), ("DELETED", "watched", "2")], events
    check("watch from list resourceVersion: ADDED, MODIFIED, DELETED in order")

    # A watch started before the changes, with a label selector, sees only matching objects.
    lst = v1.list_namespaced_config_map(ns, label_selector="watch=me")
    assert lst.items == [], lst.items
    rv = lst.metadata.resource_version
    v1.create_namespaced_config_map(ns, config_map("ignored", labels={"watch": "not-me"}))
    v1.create_namespaced_config_map(ns, config_map("seen", labels={"watch": "me"}))
    w = watch.Watch()
    events = []
    for ev in w.stream(v1.list_namespaced_config_map, ns, label_selector="watch=me", resource_version=rv, timeout_seconds=20):
        events.append((ev["type"], ev["object"].metadata.name))
        w.stop()
    assert events == [("ADDED", "seen")], events
    check("watch with label_selector")

    # apps/v1 through AppsV1Api.
    dep = client.V1Deployment(
        api_version="apps/v1",
        kind="Deployment",
        metadata=client.V1ObjectMeta(name="web", labels={"app": "web"}),
        spec=client.V1DeploymentSpec(
            replicas=0,
            selector=client.V1LabelSelector(match_labels={"app": "web"}),
            template=client.V1PodTemplateSpec(
                metadata=client.V1ObjectMeta(labels={"app": "web"}),
                spec=client.V1PodSpec(containers=[client.V1Container(name="web", image="nginx")]),
            ),
        ),
    )
    d = apps.create_namespaced_deployment(ns, dep)
    assert d.metadata.name == "web" and d.spec.selector.match_labels == {"app": "web"}, d
    d = apps.read_namespaced_deployment("web", ns)
    assert d.spec.template.spec.containers[0].image == "nginx", d.spec
    assert [i.metadata.name for i in apps.list_namespaced_deployment(ns, label_selector="app=web").items] == ["web"]
    expect_error("read missing deployment", lambda: apps.read_namespaced_deployment("nope", ns), 404, "NotFound")
    apps.delete_namespaced_deployment("web", ns)
    check("apps/v1 deployment create/read/list/delete")

    # A watch without resourceVersion starts with ADDED events for the objects that exist.
    w = watch.Watch()
    added = []
    for ev in w.stream(v1.list_namespaced_config_map, ns, label_selector="parity=odd", timeout_seconds=20):
        assert ev["type"] == "ADDED", ev["type"]
        added.append(ev["object"].metadata.name)
        if len(added) == 3:
            w.stop()
    assert sorted(added) == ["cm-01", "cm-03", "cm-05"], added
    check("watch without resourceVersion starts with ADDED for existing objects")

    # Most Python code builds models without apiVersion/kind; kube-apiserver fills them in from the
    # URL (the JSON decoder's default GVK), so such a create succeeds.
    bare = client.V1ConfigMap(metadata=client.V1ObjectMeta(name="no-kind"), data={"a": "b"})
    made = v1.create_namespaced_config_map(ns, bare)
    assert made.metadata.name == "no-kind" and made.data == {"a": "b"}, made
    assert made.kind == "ConfigMap" and made.api_version == "v1", (made.kind, made.api_version)
    check("create without apiVersion/kind in the body")

    # Delete a Service: the call returns, then the Service is gone.
    deleted = v1.delete_namespaced_service("svc-b", ns)
    assert deleted is not None, "delete_namespaced_service returned nothing"
    expect_error("read deleted service", lambda: v1.read_namespaced_service("svc-b", ns), 404, "NotFound")
    assert sorted(i.metadata.name for i in v1.list_namespaced_service(ns).items) == ["svc-a", "svc-c"]
    expect_error("delete deleted service", lambda: v1.delete_namespaced_service("svc-b", ns), 404, "NotFound")
    check("delete service -> then 404")

    print("all checks passed", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
