//! The connectivity truth table (as cyclonus prints it): for each port, which pod may open a
//! connection to which, as text and as an SVG image.

use std::fmt::Write as _;

use crate::engine::{Cluster, Endpoint};
use crate::model::{PodKey, PortProtocol};

/// Verdicts for every (port, from, to).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Matrix {
    pub pods: Vec<PodKey>,
    pub ports: Vec<PortProtocol>,
    /// `allowed[port][from][to]`, indexes into `ports` and `pods`.
    pub allowed: Vec<Vec<Vec<bool>>>,
}

impl Matrix {
    /// The table for the pods of `namespaces` (all when empty) that have an IP, and `ports`.
    pub fn compute(cluster: &Cluster, namespaces: &[String], ports: &[PortProtocol]) -> Matrix {
        let pods: Vec<PodKey> =
            cluster.pods().filter(|p| p.ip.is_some() && (namespaces.is_empty() || namespaces.contains(&p.key.namespace))).map(|p| p.key.clone()).collect();
        let allowed = ports
            .iter()
            .map(|port| {
                pods.iter()
                    .map(|from| pods.iter().map(|to| cluster.evaluate(&Endpoint::Pod(from.clone()), &Endpoint::Pod(to.clone()), *port).allowed()).collect())
                    .collect()
            })
            .collect();
        Matrix { pods, ports: ports.to_vec(), allowed }
    }

    /// A table of the same shape filled with `value`.
    pub fn filled(pods: Vec<PodKey>, ports: Vec<PortProtocol>, value: bool) -> Matrix {
        let allowed = vec![vec![vec![value; pods.len()]; pods.len()]; ports.len()];
        Matrix { pods, ports, allowed }
    }

    /// The cell for `from` -> `to` on `port`.
    pub fn get(&self, port: PortProtocol, from: &PodKey, to: &PodKey) -> Option<bool> {
        let p = self.ports.iter().position(|x| *x == port)?;
        let f = self.pods.iter().position(|x| x == from)?;
        let t = self.pods.iter().position(|x| x == to)?;
        Some(self.allowed[p][f][t])
    }

    pub fn set(&mut self, port: PortProtocol, from: &PodKey, to: &PodKey, value: bool) {
        if let (Some(p), Some(f), Some(t)) =
            (self.ports.iter().position(|x| *x == port), self.pods.iter().position(|x| x == from), self.pods.iter().position(|x| x == to))
        {
            self.allowed[p][f][t] = value;
        }
    }

    /// The cells where `self` and `other` (same shape) differ: (port, from, to, self's value).
    pub fn differences(&self, other: &Matrix) -> Vec<(PortProtocol, PodKey, PodKey, bool)> {
        let mut out = Vec::new();
        for (p, port) in self.ports.iter().enumerate() {
            for (f, from) in self.pods.iter().enumerate() {
                for (t, to) in self.pods.iter().enumerate() {
                    let mine = self.allowed[p][f][t];
                    if other.get(*port, from, to) != Some(mine) {
                        out.push((*port, from.clone(), to.clone(), mine));
                    }
                }
            }
        }
        out
    }

    /// The text table: one block per port, rows are sources, columns destinations, `.` allowed,
    /// `X` denied.
    pub fn to_text(&self) -> String {
        let names: Vec<String> = self.pods.iter().map(ToString::to_string).collect();
        let w = names.iter().map(String::len).max().unwrap_or(1).max(4);
        let mut s = String::new();
        for (p, port) in self.ports.iter().enumerate() {
            let _ = writeln!(s, "{port}  (rows: from, columns: to; . allowed, X denied)");
            let _ = write!(s, "{:w$}", "");
            for n in &names {
                let _ = write!(s, " {n:>w$}");
            }
            s.push('\n');
            for (f, n) in names.iter().enumerate() {
                let _ = write!(s, "{n:w$}");
                for t in 0..names.len() {
                    let _ = write!(s, " {:>w$}", if self.allowed[p][f][t] { "." } else { "X" });
                }
                s.push('\n');
            }
            s.push('\n');
        }
        s
    }

    /// The table as an SVG image: one grid per port, green allowed, red denied, with the legend.
    pub fn to_svg(&self, title: &str) -> String {
        const CELL: usize = 26;
        const GAP: usize = 40;
        let label_w = self.pods.iter().map(|k| k.to_string().len()).max().unwrap_or(4) * 8 + 16;
        let n = self.pods.len();
        let grid = n * CELL;
        let block_w = label_w + grid + GAP;
        let cols = self.ports.len().clamp(1, 3);
        let rows = self.ports.len().div_ceil(cols).max(1);
        let head = 60;
        let block_h = label_w + grid + 40;
        let width = (cols * block_w + 20).max(title.chars().count() * 11 + 20).max(420);
        let height = head + rows * block_h;
        let mut s = String::new();
        let _ = writeln!(
            s,
            r#"<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" viewBox="0 0 {width} {height}" font-family="DejaVu Sans Mono, monospace" font-size="13">"#
        );
        let _ = writeln!(s, r#"<rect width="100%" height="100%" fill="white"/>"#);
        let _ = writeln!(s, r#"<text x="10" y="24" font-size="18" font-weight="bold">{}</text>"#, escape(title));
        let _ = writeln!(
            s,
            r##"<rect x="10" y="36" width="14" height="14" fill="#3a9d23"/><text x="30" y="48">allowed</text><rect x="110" y="36" width="14" height="14" fill="#d43a2f"/><text x="130" y="48">denied</text><text x="210" y="48">rows: from, columns: to</text>"##
        );
        for (p, port) in self.ports.iter().enumerate() {
            let ox = 10 + (p % cols) * block_w;
            let oy = head + (p / cols) * block_h;
            let gx = ox + label_w;
            let gy = oy + label_w;
            let _ = writeln!(s, r#"<text x="{}" y="{}" font-size="15" font-weight="bold">{port}</text>"#, ox, oy + 16);
            let _ = writeln!(s, r##"<text x="{}" y="{}" text-anchor="end" fill="#555">from \ to</text>"##, gx - 6, gy - 6);
            for (i, k) in self.pods.iter().enumerate() {
                let name = escape(&k.to_string());
                let cy = gy + i * CELL + CELL / 2 + 5;
                let _ = writeln!(s, r#"<text x="{}" y="{cy}" text-anchor="end">{name}</text>"#, gx - 6);
                let cx = gx + i * CELL + CELL / 2 + 5;
                let _ = writeln!(s, r#"<text x="{cx}" y="{}" text-anchor="start" transform="rotate(-90 {cx} {})">{name}</text>"#, gy - 6, gy - 6);
            }
            for f in 0..n {
                for t in 0..n {
                    let ok = self.allowed[p][f][t];
                    let (fill, mark) = if ok { ("#3a9d23", "✓") } else { ("#d43a2f", "✗") };
                    let (x, y) = (gx + t * CELL, gy + f * CELL);
                    let _ = writeln!(
                        s,
                        r#"<rect x="{x}" y="{y}" width="{CELL}" height="{CELL}" fill="{fill}" stroke="white" stroke-width="2"><title>{}</title></rect><text x="{}" y="{}" text-anchor="middle" fill="white" font-size="14">{mark}</text>"#,
                        escape(&format!("{} -> {} {port}: {}", self.pods[f], self.pods[t], if ok { "allowed" } else { "denied" })),
                        x + CELL / 2,
                        y + CELL / 2 + 5
                    );
                }
            }
        }
        s.push_str("</svg>\n");
        s
    }
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}
