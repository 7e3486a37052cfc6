//! The probabilistic call-graph generator the paper compares with (§5.2):
//! Alibaba's handcrafted model (Erms, `graphGenerator/`), driven by the
//! parameters fitted to the 2022 Alibaba traces (a directory given to
//! `gent llm eval --probabilistic`):
//!
//! - `depthDistribution.csv`: per depth, the cumulative distribution of the
//!   number of calls a node makes (`depth, num, percentage, cumsum`);
//! - `communicationParadigm.csv`: per depth and fan-out, the share of each
//!   communication type (`depth, num, rpc_type, percentage`; http takes the rest);
//! - `leafDistribution.csv`, `nodeDistribution.csv`: per depth, the probability
//!   that a node is a leaf, and otherwise that it calls further ("medium").
//!
//! The graph grows breadth first from the root call as Erms does: a node at
//! depth d (its id has d parts) that is "medium" makes `num` calls drawn from
//! depth d's distribution (one more at depth 1, as in Erms), each call's type
//! from the paradigm table, and rpc, mq and http calls are themselves medium
//! with the leaf and node probabilities of depth d. The model has no
//! microservice names and no times: names are drawn uniformly from the
//! microservices of the training graphs (the paper's "random selection"), and
//! every call starts and finishes at 0 ms.

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::io::Read;
use std::path::{Path, PathBuf};

use rand::Rng;

use super::graph::{CallGraph, Edge};

#[derive(Debug, thiserror::Error)]
pub enum BaselineError {
    #[error("{path}: {reason}")]
    File { path: PathBuf, reason: String },
    #[error("{path} line {line}: {reason}")]
    Row { path: PathBuf, line: usize, reason: String },
    #[error("no microservice names to draw from: the training graphs have no calls")]
    NoNames,
}

/// Erms' fitted parameters and the names to give the nodes.
#[derive(Debug, Clone)]
pub struct Probabilistic {
    /// Per depth: (num, cumsum), ascending.
    fan_out: HashMap<u32, Vec<(u32, f64)>>,
    /// Per (depth, num): (type, share).
    paradigm: HashMap<(u32, u32), Vec<(String, f64)>>,
    leaf: HashMap<u32, f64>,
    medium: HashMap<u32, f64>,
    names: Vec<String>,
    /// Most calls in one graph: the fitted fan-outs reach the hundreds, and a
    /// run of medium nodes would otherwise grow without a useful bound.
    pub max_edges: usize,
}

/// The rows of `dir/name` (gzip or plain CSV with a header), as string records.
fn rows(dir: &Path, name: &str) -> Result<(PathBuf, Vec<csv::StringRecord>, csv::StringRecord), BaselineError> {
    let plain = dir.join(name);
    let gz = dir.join(format!("{name}.gz"));
    let (path, mut raw) = (if gz.exists() { gz } else { plain }, Vec::new());
    let fail = |path: &Path, e: &dyn std::fmt::Display| BaselineError::File { path: path.into(), reason: e.to_string() };
    let file = std::fs::File::open(&path).map_err(|e| fail(&path, &e))?;
    if path.extension().is_some_and(|e| e == "gz") {
        flate2::read::GzDecoder::new(file).read_to_end(&mut raw).map_err(|e| fail(&path, &e))?;
    } else {
        std::io::BufReader::new(file).read_to_end(&mut raw).map_err(|e| fail(&path, &e))?;
    }
    let mut reader = csv::Reader::from_reader(raw.as_slice());
    let header = reader.headers().map_err(|e| fail(&path, &e))?.clone();
    let records = reader.records().collect::<Result<Vec<_>, _>>().map_err(|e| fail(&path, &e))?;
    Ok((path, records, header))
}

/// Reads column `key` of every row through `parse`.
struct Columns {
    path: PathBuf,
    header: csv::StringRecord,
}

impl Columns {
    fn get<T: std::str::FromStr>(&self, row: &csv::StringRecord, line: usize, key: &str) -> Result<T, BaselineError> {
        let at = self
            .header
            .iter()
            .position(|h| h == key)
            .ok_or_else(|| BaselineError::File { path: self.path.clone(), reason: format!("no {key:?} column") })?;
        let raw = row.get(at).unwrap_or("");
        // Depths and counts are written as floats by pandas in some files.
        let trimmed = raw.strip_suffix(".0").unwrap_or(raw);
        trimmed.parse().map_err(|_| BaselineError::Row {
            path: self.path.clone(),
            line,
            reason: format!("{key} {raw:?} is not a number of the expected kind"),
        })
    }
}

impl Probabilistic {
    /// Loads the four parameter files from `dir`; nodes are named after the
    /// microservices of `training` (sorted, so a seed reproduces a run).
    pub fn load(dir: &Path, training: &[CallGraph]) -> Result<Self, BaselineError> {
        let names: BTreeSet<&str> =
            training.iter().flat_map(|g| g.edges.iter().flat_map(|e| [e.source.as_str(), e.destination.as_str()])).collect();
        let names: Vec<String> = names.into_iter().filter(|n| *n != "USER").map(str::to_string).collect();
        if names.is_empty() {
            return Err(BaselineError::NoNames);
        }
        let mut fan_out: HashMap<u32, Vec<(u32, f64)>> = HashMap::new();
        let (path, records, header) = rows(dir, "depthDistribution.csv")?;
        let c = Columns { path, header };
        for (i, r) in records.iter().enumerate() {
            let line = i + 2;
            fan_out.entry(c.get(r, line, "depth")?).or_default().push((c.get(r, line, "num")?, c.get(r, line, "cumsum")?));
        }
        for v in fan_out.values_mut() {
            v.sort_by(|a, b| a.0.cmp(&b.0));
        }
        let mut paradigm: HashMap<(u32, u32), Vec<(String, f64)>> = HashMap::new();
        let (path, records, header) = rows(dir, "communicationParadigm.csv")?;
        let c = Columns { path, header };
        for (i, r) in records.iter().enumerate() {
            let line = i + 2;
            let kind: String = c.get(r, line, "rpc_type")?;
            // Erms writes memcached; the Alibaba text (and so the models) says mc.
            let kind = if kind == "memcached" { "mc".to_string() } else { kind };
            paradigm
                .entry((c.get(r, line, "depth")?, c.get(r, line, "num")?))
                .or_default()
                .push((kind, c.get(r, line, "percentage")?));
        }
        for v in paradigm.values_mut() {
            // Erms tries rpc, mq, db, memcached in that order, http takes the rest.
            let rank = |k: &str| ["rpc", "mq", "db", "mc"].iter().position(|x| *x == k).unwrap_or(4);
            v.sort_by_key(|(k, _)| rank(k));
        }
        let per_depth = |name: &str| -> Result<HashMap<u32, f64>, BaselineError> {
            let (path, records, header) = rows(dir, name)?;
            let c = Columns { path, header };
            records.iter().enumerate().map(|(i, r)| Ok((c.get(r, i + 2, "depth")?, c.get(r, i + 2, "percentage")?))).collect()
        };
        Ok(Probabilistic {
            fan_out,
            paradigm,
            leaf: per_depth("leafDistribution.csv")?,
            medium: per_depth("nodeDistribution.csv")?,
            names,
            max_edges: 2000,
        })
    }

    /// Erms' `leafMedium`: whether a node at `depth` makes calls. Depths the
    /// tables do not cover make none.
    fn medium(&self, depth: u32, rng: &mut impl Rng) -> bool {
        match (self.leaf.get(&depth), self.medium.get(&depth)) {
            (Some(&leaf), Some(&medium)) => rng.random::<f64>() > leaf && rng.random::<f64>() < medium,
            _ => false,
        }
    }

    /// Erms' `serviceNum`: calls made by a node at `depth`.
    fn fan_out(&self, depth: u32, rng: &mut impl Rng) -> u32 {
        let Some(cdf) = self.fan_out.get(&depth) else { return 0 };
        let u: f64 = rng.random();
        let n = cdf.iter().find(|(_, c)| *c > u).or(cdf.last()).map_or(0, |(n, _)| *n);
        if depth == 1 { n + 1 } else { n }
    }

    /// Erms' `rpcType` for one of `num` calls made at `depth`.
    fn kind(&self, depth: u32, num: u32, rng: &mut impl Rng) -> &str {
        let u: f64 = rng.random();
        let mut acc = 0.0;
        for (kind, share) in self.paradigm.get(&(depth, num)).map_or(&[][..], |v| &v[..]) {
            acc += share;
            if u < acc {
                return kind;
            }
        }
        "http"
    }

    fn name(&self, rng: &mut impl Rng) -> String {
        self.names[rng.random_range(0..self.names.len())].clone()
    }

    /// One call graph for `service`.
    pub fn graph(&self, service: &str, rng: &mut impl Rng) -> CallGraph {
        let root =
            Edge { id: vec![0], source: "USER".into(), destination: self.name(rng), kind: "http".into(), start: 0, finish: 0 };
        let mut edges = vec![root];
        let mut queue = VecDeque::new();
        if self.medium(0, rng) {
            queue.push_back(0usize);
        }
        while let Some(at) = queue.pop_front() {
            let (id, caller) = (edges[at].id.clone(), edges[at].destination.clone());
            let depth = id.len() as u32;
            let n = self.fan_out(depth, rng);
            for k in 0..n {
                if edges.len() >= self.max_edges {
                    break;
                }
                let kind = self.kind(depth, n, rng).to_string();
                let calls_on = matches!(kind.as_str(), "rpc" | "mq" | "http") && self.medium(depth, rng);
                let mut child = id.clone();
                // Alibaba numbers a node's calls from 1 (Erms from 0).
                child.push(k + 1);
                edges.push(Edge { id: child, source: caller.clone(), destination: self.name(rng), kind, start: 0, finish: 0 });
                if calls_on {
                    queue.push_back(edges.len() - 1);
                }
            }
        }
        edges.sort_by(|a, b| a.id.cmp(&b.id));
        CallGraph { service: service.into(), edges }
    }
}
