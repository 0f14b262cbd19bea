//! The seed's Service manifests (`../shared/seed/services-and-networking.md`, section 7d.2),
//! shared by the end-to-end tests. The NodePort one is renamed `backend-np` where it must
//! coexist with `backend`.
#![allow(dead_code)]

pub const SEED_BACKEND: &str = "
apiVersion: v1
kind: Service
metadata:
  name: backend
spec:
  type: ClusterIP        # Default
  selector:
    app: backend         # Finds pods with this label
  ports:
  - port: 8000           # Service port
    targetPort: 8000     # Pod port
";

/// The seed's NodePort Service, under another name because it shares `backend`'s.
pub const SEED_NODEPORT: &str = "
apiVersion: v1
kind: Service
metadata:
  name: backend-nodeport
spec:
  type: NodePort
  selector:
    app: backend
  ports:
  - port: 8000
    targetPort: 8000
    nodePort: 30001      # Optional, auto-assigned if omitted
";

pub const SEED_FRONTEND: &str = "
apiVersion: v1
kind: Service
metadata:
  name: frontend
spec:
  type: LoadBalancer
  selector:
    app: frontend
  ports:
  - port: 80
    targetPort: 80
";

pub const SEED_EXTERNAL: &str = "
apiVersion: v1
kind: Service
metadata:
  name: external-database
spec:
  type: ExternalName
  externalName: my-db.rds.amazonaws.com
";

pub const SEED_HEADLESS: &str = "
apiVersion: v1
kind: Service
metadata:
  name: postgres
spec:
  clusterIP: None          # Headless!
  selector:
    app: postgres
  ports:
  - port: 5432
";
